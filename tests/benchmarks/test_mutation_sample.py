"""benchmarks/mutation_sample.py: the same share of every module, the same names for the same seed."""

from __future__ import annotations

from support.benchmark_scripts import load_benchmark


def names(module: str, count: int) -> list[str]:
    return [f"scclip_cli.{module}.x_f__mutmut_{i}" for i in range(1, count + 1)]


def test_each_module_gets_its_share_and_the_seed_fixes_the_names() -> None:
    ms = load_benchmark("mutation_sample")
    everything = names("maps.metrics", 100) + names("config", 10) + names("cli.app", 1)
    chosen = ms.sample(reversed(everything), 0.2, seed=7)
    assert chosen == ms.sample(everything, 0.2, seed=7)  # input order does not matter
    assert chosen != ms.sample(everything, 0.2, seed=8)
    per_module = [ms.module_of(n) for n in chosen]
    assert per_module.count("scclip_cli.maps.metrics") == 20
    assert per_module.count("scclip_cli.config") == 2
    assert per_module.count("scclip_cli.cli.app") == 1  # at least one of every module
    assert chosen == sorted(chosen)


def test_the_score_counts_every_status_against_the_kill_rate() -> None:
    ms = load_benchmark("mutation_sample")
    statuses = ms.parse_statuses(
        [
            "    scclip_cli.config.x_f__mutmut_1: killed\n",
            "    scclip_cli.config.x_f__mutmut_2: survived\n",
            "    scclip_cli.config.x_f__mutmut_3: no tests\n",
            "    scclip_cli.maps.metrics.x_g__mutmut_1: killed\n",
            "not a result line\n",
        ]
    )
    assert statuses["scclip_cli.config.x_f__mutmut_3"] == "no tests"
    table = ms.score(statuses, [*statuses, "scclip_cli.config.x_f__mutmut_9"])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert rows["scclip_cli.config"].endswith("| 1 | 1 | 0 | 1 | 0 | 1 | 25.0 % |")
    assert rows["scclip_cli.maps.metrics"].endswith("| 100.0 % |")
    assert rows["all"].endswith("| 2 | 1 | 0 | 1 | 0 | 1 | 40.0 % |")
