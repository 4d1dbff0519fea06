"""A seeded, stratified random sample of mutmut's mutants: the same share of every module.

    env -u PYTHONPATH mutmut run        # stop it (Ctrl-C) once it checks mutants: all exist then
    mutmut results --all true | python benchmarks/mutation_sample.py > sample.txt
    env -u PYTHONPATH mutmut run $(cat sample.txt)
    mutmut results --all true | python benchmarks/mutation_sample.py --score sample.txt

The full run of the configured modules (about 2,700 mutants) takes hours on a 2-core machine,
because a surviving mutant runs every selected test that calls its function. A sample of a fixed
share of each module's mutants, drawn with a fixed seed, gives the same names on every machine
for the same sources, so a score "before" and "after" new tests compares like with like.

``--score`` reads the statuses from stdin and prints, per module and in all, killed / survived /
timeout / no tests for the names in the sample file and the score killed / (all of them), so
"no tests" and timeouts count against it.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

DEFAULT_SHARE = 0.26
DEFAULT_SEED = 20261207


def parse_statuses(lines: Iterable[str]) -> dict[str, str]:
    """``mutmut results --all true`` lines (``NAME: status``) as ``{name: status}``."""
    found = {}
    for line in lines:
        name, sep, status = line.strip().partition(": ")
        if sep and name:
            found[name] = status.strip()
    return found


def module_of(name: str) -> str:
    """``scclip_cli.maps.metrics.x_f__mutmut_3`` → ``scclip_cli.maps.metrics``."""
    return name.split(".x", 1)[0]


def sample(names: Iterable[str], share: float, seed: int) -> list[str]:
    """``share`` of each module's names (at least one), drawn with ``seed``, sorted."""
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_module[module_of(name)].append(name)
    rng = random.Random(seed)
    chosen: list[str] = []
    for module in sorted(by_module):
        members = sorted(by_module[module])
        chosen += rng.sample(members, max(1, round(len(members) * share)))
    return sorted(chosen)


def score(statuses: dict[str, str], names: Sequence[str]) -> str:
    """A Markdown table of the statuses of ``names`` per module and in all."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name in names:
        status = statuses.get(name, "missing")
        counts[module_of(name)][status] += 1
        counts["all"][status] += 1
    kinds = ("killed", "survived", "timeout", "no tests", "not checked", "missing")
    lines = ["| module | " + " | ".join(kinds) + " | score |", "|---" * (len(kinds) + 2) + "|"]
    for module in [*sorted(m for m in counts if m != "all"), "all"]:
        c = counts[module]
        total = sum(c.values())
        value = f"{100 * c['killed'] / total:.1f} %" if total else "-"
        lines.append(f"| {module} | " + " | ".join(str(c[k]) for k in kinds) + f" | {value} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--score", metavar="SAMPLE_FILE", help="score this sample from stdin")
    args = parser.parse_args(argv)
    statuses = parse_statuses(sys.stdin)
    if args.score:
        with open(args.score, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        print(score(statuses, names))
        return
    print("\n".join(sample(statuses, args.share, args.seed)))


if __name__ == "__main__":
    main()
