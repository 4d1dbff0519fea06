"""How long ``scclip report`` takes to build its page, and the page to show its first cards.

    python benchmarks/report_speed.py                    # 2,000 images of 640x480 (a few minutes)
    python benchmarks/report_speed.py --images 200       # quicker
    python benchmarks/report_speed.py --images 10000 --size 160x120 --loads 3

A run is generated directly, without a model: per image a JPEG photo, a label PNG of a few
rectangles, its ``<stem>.json`` (with the library's own writers), then ``legend.json`` and a
``summary.json`` (``tests/support/fake_run.py``). Then

* **build, cold**: :func:`scclip_cli.runs.report.write_report` with no thumbnail yet (reads every
  record, draws every thumbnail in parallel, writes the page);
* **build, warm**: the same again, every thumbnail reused (what a rerun costs);
* **page**: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, selenium) opens the
  page from the file system ``--loads`` times, each in a fresh tab state; from the navigation
  start the page's own marks give when the first page of cards is built (``report-cards``) and
  when every section is (``report-ready``); the benchmark then waits until the thumbnails of the
  cards in the window have loaded. Also timed in the page: sorting by confidence and filtering to
  a class (each rebuilds the first page of cards).

Medians are reported (with every load in ``--json``). Timing numbers belong in docs/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the generator and the browser helper of the tests

WAIT_VISIBLE_THUMBNAILS = """
const done = arguments[arguments.length - 1];
function visible() {
  return [...document.querySelectorAll('#gallery .card img')].filter((img) => {
    const r = img.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight;
  });
}
function poll() {
  const imgs = visible();
  if (imgs.length && imgs.every((i) => i.complete && i.naturalWidth > 0)) {
    done({loaded: performance.now(), count: imgs.length});
  } else requestAnimationFrame(poll);
}
poll();
"""

TIME_INTERACTION = """
const [selectId, value] = arguments;
const select = document.getElementById(selectId);
const start = performance.now();
select.value = value;
select.dispatchEvent(new Event('change'));
const cards = document.querySelectorAll('#gallery .card').length;
return {ms: performance.now() - start, cards: cards};
"""


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def generate(root: Path, images: int, size: tuple[int, int]) -> Path:
    from support.fake_run import write_fake_run

    width, height = size
    names = [f"set{i % 10}/photo_{i:05}" for i in range(images)]
    return write_fake_run(root, images, size=(height, width), names=names).out


def time_builds(out: Path, workers: int | None) -> dict[str, Any]:
    from scclip_cli.runs.report import write_report

    start = time.perf_counter()
    cold = write_report(out, workers=workers)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = write_report(out, workers=workers)
    warm_s = time.perf_counter() - start
    assert warm.thumbnails_reused == warm.images, "the second build must reuse every thumbnail"
    return {
        "build_cold_s": cold_s,
        "build_warm_s": warm_s,
        "thumbnails_drawn": cold.thumbnails_drawn,
        "page_bytes": cold.path.stat().st_size,
    }


def time_page(page: Path, loads: int, profile: Path) -> dict[str, Any]:
    from support.browser import browser_missing, chromium, console_errors, open_page

    missing = browser_missing()
    if missing is not None:
        return {"skipped": missing}
    rows = []
    with chromium(profile) as driver:
        driver.set_script_timeout(120)
        for _ in range(loads):
            driver.get("about:blank")
            open_page(driver, page, timeout=120)
            marks = driver.execute_script(
                "return Object.fromEntries(performance.getEntriesByType('mark')"
                ".map(m => [m.name, m.startTime]))"
            )
            thumbs = driver.execute_async_script(WAIT_VISIBLE_THUMBNAILS)
            rows.append(
                {
                    "cards_ms": marks["report-cards"],
                    "ready_ms": marks["report-ready"],
                    "visible_thumbnails_ms": thumbs["loaded"],
                    "visible_thumbnails": thumbs["count"],
                    "cards": driver.execute_script(
                        "return document.querySelectorAll('#gallery .card').length"
                    ),
                }
            )
        first_class = driver.execute_script(
            "return document.querySelector('#filter option[value]:not([value=\"\"])').value"
        )
        sort = driver.execute_script(TIME_INTERACTION, "sort", "confidence")
        filtered = driver.execute_script(TIME_INTERACTION, "filter", first_class)
        errors = console_errors(driver)
    summary = {
        key: statistics.median(row[key] for row in rows)
        for key in ("cards_ms", "ready_ms", "visible_thumbnails_ms")
    }
    return {
        **summary,
        "cards": rows[0]["cards"],
        "visible_thumbnails": rows[0]["visible_thumbnails"],
        "sort_by_confidence_ms": sort["ms"],
        "filter_to_class_ms": filtered["ms"],
        "console_errors": errors,
        "loads": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="WxH of each image")
    parser.add_argument("--workers", type=int, default=None, help="thumbnail threads")
    parser.add_argument("--loads", type=int, default=5, help="page loads in Chromium")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--workdir", type=Path, help="keep the generated run here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="scclip-report-bench-") as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        out = generate(root, args.images, args.size)
        generate_s = time.perf_counter() - start
        result: dict[str, Any] = {
            "images": args.images,
            "size": list(args.size),
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "generate_s": generate_s,
        }
        result.update(time_builds(out, args.workers))
        result["page"] = time_page(out / "report.html", args.loads, Path(tmp) / "profile")
    page = result["page"]
    print(f"{args.images} images of {args.size[0]}x{args.size[1]} ({os.cpu_count()} CPUs)")
    print(f"  generated in            {generate_s:8.1f} s")
    print(f"  build, cold             {result['build_cold_s']:8.2f} s  (all thumbnails drawn)")
    print(f"  build, warm             {result['build_warm_s']:8.2f} s  (all reused)")
    print(f"  page size               {result['page_bytes'] / 1e6:8.2f} MB")
    if "skipped" in page:
        print(f"  browser: skipped ({page['skipped']})")
    else:
        print(f"  first cards built       {page['cards_ms']:8.0f} ms after navigation start")
        print(f"  whole page built        {page['ready_ms']:8.0f} ms")
        print(
            f"  visible thumbnails      {page['visible_thumbnails_ms']:8.0f} ms "
            f"({page['visible_thumbnails']} of {page['cards']} cards on the first page)"
        )
        print(f"  sort by confidence      {page['sort_by_confidence_ms']:8.1f} ms")
        print(f"  filter to a class       {page['filter_to_class_ms']:8.1f} ms")
        if page["console_errors"]:
            print(f"  console errors: {page['console_errors']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
