"""The review page in headless Chromium, from real ``scclip segment`` runs with the tiny model:
it opens without console errors, lists one card per image, filters, sorts, opens the full-size
view and the evaluation, and shows hostile names as text without running any script.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium (CI installs them: ``.ci/run``);
skipped with the reason when they are missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from scclip_cli.files.mask_io import read_label_png, write_label_png
from scclip_cli.runs.report_data import image_mean_confidence
from support.browser import browser_missing, chromium, console_errors, open_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
VOCAB = ROOT / "src" / "scclip_cli" / "vocab" / "everyday.txt"
TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32"]
SEVERAL_CLASSES = ["--logit-scale", "1000"]
"""A sharp softmax: the random tiny model then gives several classes over the sample images."""


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def segment(images: Path, vocab: Path, out: Path) -> None:
    args = [str(images), "--vocab", str(vocab), "--out", str(out), "-q"]
    code = main(["segment", *args, *TINY, *FAST, *SEVERAL_CLASSES])
    assert code in (0, 1)


def records(out: Path) -> dict[str, dict[str, Any]]:
    """Per-image JSON by key (the run's own files are not records)."""
    found = {}
    for path in sorted(out.rglob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and "classes" in record and "width" in record:
            found[path.relative_to(out).with_suffix("").as_posix()] = record
    return found


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    """The sample images segmented, scored against altered masks (``scclip eval --json``), a
    confidence map beside one image, and the report with the evaluation."""
    root = tmp_path_factory.mktemp("sample-run")
    out = root / "out"
    segment(SAMPLES, VOCAB, out)
    gt = root / "gt"
    for i, key in enumerate(sorted(records(out))):
        labels = read_label_png(out / f"{key}.png")
        labels[: labels.shape[0] * i // 5] = 0  # more and more wrong rows: mIoU differ
        write_label_png(gt / f"{key}.png", labels, 16)
    eval_json = root / "eval.json"
    scoring = ["--pred", str(out), "--gt", str(gt), "--vocab", str(VOCAB)]
    assert main(["eval", *scoring, "--json", str(eval_json)]) == 0
    labels = read_label_png(out / "chelsea.png")
    confidence = np.linspace(0, 255, labels.size).reshape(labels.shape).astype(np.uint8)
    Image.fromarray(confidence).save(out / "chelsea_conf.png")
    assert main(["report", str(out), "--eval", str(eval_json), "-q"]) == 0
    return out


def card_keys(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#gallery .card')].map(c => c.dataset.image)"
    )


def card_of(driver: Any, key: str) -> Any:
    """The card whose ``data-image`` is ``key`` (found by the DOM, not a CSS selector, so any
    character in the key is fine)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.card')].find(c => c.dataset.image === arguments[0])",
        key,
    )


def choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_one_card_per_image_and_no_console_errors(
    sample_run: Path, browser: Any, tmp_path: Path
) -> None:
    open_page(browser, sample_run / "report.html")
    assert card_keys(browser) == sorted(records(sample_run))
    assert len(card_keys(browser)) == len(list(SAMPLES.glob("*.jpg")))
    # every thumbnail loaded from its relative path
    assert browser.execute_script(
        "return [...document.querySelectorAll('#gallery .card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000 and Image.open(shot).size[0] > 0
    assert console_errors(browser) == []


def test_the_class_filter_keeps_exactly_the_images_with_the_class(
    sample_run: Path, browser: Any
) -> None:
    open_page(browser, sample_run / "report.html")
    by_key = records(sample_run)
    present = sorted({c["index"] for r in by_key.values() for c in r["classes"]})
    assert len(present) >= 3  # the vocabulary and logit scale give several classes
    for index in present:
        choose(browser, "filter", str(index))
        expected = [
            k for k, r in sorted(by_key.items()) if index in {c["index"] for c in r["classes"]}
        ]
        assert card_keys(browser) == expected, index
    choose(browser, "filter", "")
    assert card_keys(browser) == sorted(by_key)
    assert console_errors(browser) == []


def test_sorting_orders_the_cards_by_the_per_image_json(sample_run: Path, browser: Any) -> None:
    open_page(browser, sample_run / "report.html")
    by_key = records(sample_run)
    names = sorted(by_key)
    choose(browser, "sort", "confidence")
    least_confident_first = sorted(
        names, key=lambda k: (round(image_mean_confidence(by_key[k]), 6), names.index(k))
    )
    assert card_keys(browser) == least_confident_first
    assert len({image_mean_confidence(r) for r in by_key.values()}) > 1  # a real ordering
    share_class = max(
        {c["index"] for r in by_key.values() for c in r["classes"]},
        key=lambda i: sum(1 for r in by_key.values() for c in r["classes"] if c["index"] == i),
    )
    choose(browser, "sort", "share")
    choose(browser, "share-class", str(share_class))

    def share(key: str) -> float:
        return next((c["fraction"] for c in by_key[key]["classes"] if c["index"] == share_class), 0)

    assert card_keys(browser) == sorted(names, key=lambda k: (-share(k), names.index(k)))
    choose(browser, "sort", "name")
    assert card_keys(browser) == names
    assert console_errors(browser) == []


def test_the_detail_view_shows_mask_overlay_confidence_and_classes(
    sample_run: Path, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, sample_run / "report.html")
    browser.find_element("css selector", '.card[data-image="chelsea"]').click()
    detail = browser.find_element("id", "detail")
    assert detail.is_displayed()
    assert browser.find_element("id", "detail-title").text == "chelsea"
    record = records(sample_run)["chelsea"]
    rows = browser.find_elements("css selector", "#detail-classes tbody tr")
    assert len(rows) == len(record["classes"])
    largest = max(record["classes"], key=lambda c: c["pixels"])
    assert rows[0].find_elements("tag name", "td")[0].text.strip() == largest["name"]
    assert rows[0].find_elements("tag name", "td")[1].text == f"{largest['pixels']:,}"

    def shown(view: str) -> dict[str, Any]:
        browser.find_element("css selector", f'input[name="view"][value="{view}"]').click()
        WebDriverWait(browser, 10).until(
            lambda d: d.execute_script(
                "const b = document.getElementById('stage-base'); "
                "return b.complete && b.naturalWidth > 0"
            )
        )
        return browser.execute_script(
            "const b = document.getElementById('stage-base'), "
            "l = document.getElementById('stage-layer'); "
            "const shown = getComputedStyle(l).display !== 'none'; "
            "return {base: b.getAttribute('src'), layer: shown ? l.getAttribute('src') : null,"
            " width: b.naturalWidth, height: b.naturalHeight}"
        )

    overlay = shown("overlay")
    assert overlay["base"].endswith("sample_images/chelsea.jpg")
    assert overlay["layer"] == "chelsea.png"
    assert (overlay["width"], overlay["height"]) == (record["width"], record["height"])
    assert shown("mask") == {
        "base": "chelsea.png",
        "layer": None,
        "width": record["width"],
        "height": record["height"],
    }
    assert shown("confidence")["base"] == "chelsea_conf.png"
    assert shown("image")["layer"] is None
    browser.save_screenshot(str(tmp_path / "detail.png"))
    browser.find_element("id", "detail-next").click()  # the next card, astronaut has no conf map
    assert browser.find_element("id", "detail-title").text == "coffee"
    confidence = browser.find_element("css selector", 'input[name="view"][value="confidence"]')
    assert not confidence.is_enabled()
    browser.find_element("id", "detail-close").click()
    assert not detail.is_displayed()
    assert console_errors(browser) == []


def test_the_evaluation_lists_images_worst_first(sample_run: Path, browser: Any) -> None:
    open_page(browser, sample_run / "report.html")
    browser.find_element("css selector", '[data-tab="evaluation"]').click()
    scores = json.loads((sample_run.parent / "eval.json").read_text())["per_image"]
    worst_first = [row["key"] for row in sorted(scores, key=lambda r: (r["mIoU"], r["key"]))]
    cells = browser.find_elements("css selector", "#evaluation table tbody tr td:nth-child(2)")
    assert [cell.text for cell in cells] == worst_first
    assert len(set(row["mIoU"] for row in scores)) > 1
    cells[0].find_element("tag name", "button").click()  # opens that image
    assert browser.find_element("id", "detail-title").text == worst_first[0]
    bars = browser.find_elements("css selector", "#evaluation svg g.row")
    assert len(bars) == 16  # one per class of the vocabulary
    assert console_errors(browser) == []


# --- hostile names ----------------------------------------------------------------------------

HOSTILE_CLASSES = [
    "background",
    "<img src=x onerror=window.pwned=1>",
    "\"quoted\" & 'single'",
    "café crème ünïcödé 写真",
    "</script><script>window.pwned=2</script>",
    "<b>bold</b> &amp; &lt;",
]
HOSTILE_FILES = ["my photo 1", "café ünï 写真", '<img src=x onerror=window.pwned=3> & "q"']
BROKEN_FILE = "<svg onload=window.pwned=4>.jpg"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    images = root / "images"
    images.mkdir()
    for name, sample in zip(HOSTILE_FILES, sorted(SAMPLES.glob("*.jpg")), strict=False):
        shutil.copy(sample, images / f"{name}.jpg")
    (images / BROKEN_FILE).write_bytes(b"<script>window.pwned=5</script>")
    vocab = root / "classes.txt"
    vocab.write_text("\n".join(HOSTILE_CLASSES) + "\n", encoding="utf-8")
    out = root / "out <i>x & 'q'"
    segment(images, vocab, out)
    assert main(["report", str(out), "-q"]) == 0
    return out


def no_script_ran(driver: Any) -> None:
    assert driver.execute_script("return window.pwned") is None
    assert driver.execute_script("return document.scripts.length") == 2
    assert driver.find_elements("css selector", "main b, main svg[onload], img[src='x']") == []


def test_hostile_names_render_as_text_and_run_nothing(hostile_run: Path, browser: Any) -> None:
    open_page(browser, hostile_run / "report.html")
    by_key = records(hostile_run)
    assert sorted(by_key) == sorted(HOSTILE_FILES)
    assert card_keys(browser) == sorted(by_key)
    names = browser.execute_script(
        "return [...document.querySelectorAll('#gallery .card .name')].map(n => n.textContent)"
    )
    assert names == sorted(by_key)
    assert browser.find_element("id", "title").text == hostile_run.name
    present = {c["index"] for r in by_key.values() for c in r["classes"]}
    options = browser.execute_script(
        "return [...document.querySelectorAll('#filter option')].map(o => o.textContent)"
    )
    for index in present:
        count = sum(1 for r in by_key.values() if index in {c["index"] for c in r["classes"]})
        assert f"images with {HOSTILE_CLASSES[index]} ({count})" in options
    assert any(HOSTILE_CLASSES[i].startswith("<") for i in present)  # markup among them

    browser.find_element("css selector", '[data-tab="classes"]').click()
    chart_names = browser.execute_script(
        "return [...document.querySelectorAll('#class-charts text.name')].map(t => t.textContent)"
    )
    for index in present:  # names longer than the chart's column are cut, with an ellipsis
        name = HOSTILE_CLASSES[index]
        assert (name if len(name) <= 26 else name[:25] + "…") in chart_names

    browser.find_element("css selector", '[data-tab="failures"]').click()
    failures = browser.find_element("id", "failures").text
    assert BROKEN_FILE in failures

    browser.find_element("css selector", '[data-tab="gallery"]').click()
    for key in sorted(by_key):
        card_of(browser, key).click()
        assert browser.find_element("id", "detail-title").text == key
        table = browser.find_element("id", "detail-classes").text
        for entry in by_key[key]["classes"]:
            assert HOSTILE_CLASSES[entry["index"]] in table
        browser.find_element("id", "detail-close").click()
    no_script_ran(browser)
    assert console_errors(browser) == []
