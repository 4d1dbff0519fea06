"""``write_report`` on generated run folders (no model): what the page data holds, the thumbnail
cache, run files of shards, evaluation input, and the safety of the inline data."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from scclip_cli.errors import InputError
from scclip_cli.runs.report import write_report
from scclip_cli.runs.report_data import image_mean_confidence
from support.fake_run import write_fake_run, write_fake_summary

DATA_RE = re.compile(
    r'<script type="application/json" id="report-data">(?P<data>.*?)</script>', re.DOTALL
)


def page_data(page: Path) -> dict:
    match = DATA_RE.search(page.read_text(encoding="utf-8"))
    assert match is not None
    return json.loads(match["data"])


def test_every_image_is_listed_with_its_files(tmp_path: Path) -> None:
    keys = ["b/two", "a/one", "a/sub/three", ".dot/four"]
    run = write_fake_run(tmp_path, 4, names=keys, confidence_png=True)
    (run.out / "notes.json").write_text('{"not": "a record"}')  # other JSON is left alone
    (run.out / "lonely.json").write_text(json.dumps(run.records["a/one"]))  # no mask beside it
    (run.out / "a" / ".two.json").write_text("{")  # hidden: a temporary, not a record
    (run.out / "a" / ".two.png").write_bytes(b"")
    report = write_report(run.out)
    assert report.path == run.out / "report.html" and report.images == 4
    assert report.problems == ()
    data = page_data(report.path)
    assert [im["key"] for im in data["images"]] == [".dot/four", "a/one", "a/sub/three", "b/two"]
    for entry in data["images"]:
        key = entry["key"]
        assert entry["mask"] == f"{key}.png"
        assert entry["conf"] == f"{key}_conf.png"
        # relative URLs that lead to the files from the page's folder
        assert (run.out / unquote(entry["image"])).resolve() == (run.root / "images" / f"{key}.jpg")
        assert (run.out / unquote(entry["thumb"])).is_file()
        record = run.records[key]
        assert entry["width"] == record["width"] and entry["height"] == record["height"]
        assert [c[0] for c in entry["classes"]] == [c["index"] for c in record["classes"]]
        assert [c[1] for c in entry["classes"]] == [c["pixels"] for c in record["classes"]]


def test_mean_confidence_is_the_records_or_the_pixel_weighted_mean_of_its_classes() -> None:
    classes = [
        {"index": 0, "pixels": 30, "mean_confidence": 0.5},
        {"index": 3, "pixels": 10, "mean_confidence": 0.9},
    ]
    assert math.isclose(image_mean_confidence({"classes": classes}), (15 + 9) / 40)
    assert image_mean_confidence({"classes": classes, "mean_confidence": 0.25}) == 0.25
    assert image_mean_confidence({"classes": [{"index": 0, "pixels": 4}]}) is None


def test_page_carries_each_images_mean_confidence(tmp_path: Path) -> None:
    plain = write_fake_run(tmp_path / "plain", 4)
    given = write_fake_run(tmp_path / "given", 4, image_level_confidence=True)
    for run in (plain, given):
        data = page_data(write_report(run.out).path)
        for entry in data["images"]:
            expected = image_mean_confidence(run.records[entry["key"]])
            assert entry["meanConf"] == pytest.approx(expected, abs=1e-6)
    assert all("mean_confidence" in r for r in given.records.values())


def test_class_summary_counts_images_pixel_share_and_weighted_confidence(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 6)
    data = page_data(write_report(run.out).path)
    area = sum(r["width"] * r["height"] for r in run.records.values())
    rows = {row["index"]: row for row in data["classSummary"]}
    present = {c["index"] for r in run.records.values() for c in r["classes"]}
    assert set(rows) == present
    for index, row in rows.items():
        entries = [c for r in run.records.values() for c in r["classes"] if c["index"] == index]
        pixels = sum(c["pixels"] for c in entries)
        assert row["name"] == run.class_names[index]
        assert row["images"] == len(entries) and row["pixels"] == pixels
        assert row["fraction"] == pytest.approx(pixels / area, abs=1e-6)
        weighted = sum(c["mean_confidence"] * c["pixels"] for c in entries) / pixels
        assert row["mean_confidence"] == pytest.approx(weighted, abs=1e-6)
    assert [c["name"] for c in data["classes"]] == list(run.class_names)


def test_thumbnails_are_drawn_once_and_redrawn_when_their_mask_changes(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 5)
    first = write_report(run.out, workers=3)
    assert (first.thumbnails_drawn, first.thumbnails_reused) == (5, 0)
    thumbs = sorted((run.out / "report_files" / "overlays").glob("*.jpg"))
    assert len(thumbs) == 5
    stamps = {p: p.stat().st_mtime_ns for p in thumbs}
    second = write_report(run.out)
    assert (second.thumbnails_drawn, second.thumbnails_reused) == (0, 5)
    assert {p: p.stat().st_mtime_ns for p in thumbs} == stamps  # not rewritten
    mask = run.out / f"{run.keys[2]}.png"
    newer = max(stamps.values()) + 10**9
    os.utime(mask, ns=(newer, newer))
    third = write_report(run.out)
    assert (third.thumbnails_drawn, third.thumbnails_reused) == (1, 4)


def test_an_image_that_is_not_found_gets_a_colours_only_thumbnail(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 2)
    hidden = run.images[0].rename(run.images[0].with_suffix(".away"))
    data = page_data(write_report(run.out).path)
    first, second = data["images"]
    assert first["image"] is None and first["thumb"] == f"report_files/masks/{run.keys[0]}.jpg"
    assert second["thumb"] == f"report_files/overlays/{run.keys[1]}.jpg"
    hidden.rename(run.images[0])  # found again: the overlay is drawn, not the old picture reused
    again = write_report(run.out)
    assert again.thumbnails_drawn == 1
    assert page_data(again.path)["images"][0]["thumb"].startswith("report_files/overlays/")


def test_image_paths_are_found_from_the_folder_segment_ran_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run given relative paths (``segment photos/ --out runs/out``) records them relative to
    where it ran; the report finds them from elsewhere too."""
    run = write_fake_run(tmp_path / "project" / "runs", 2)
    for record_path in (run.out / f"{k}.json" for k in run.keys):
        record = json.loads(record_path.read_text())
        record["path"] = os.path.relpath(record["path"], tmp_path / "project")
        record_path.write_text(json.dumps(record))
    write_fake_summary(run.out / "summary.json", run, 2, out_dir="runs/out")
    monkeypatch.chdir(tmp_path)
    data = page_data(write_report(run.out).path)
    assert [im["image"] for im in data["images"]] == [f"../images/{k}.jpg" for k in run.keys]


def test_shard_summaries_and_failures_are_all_read(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 4, summary=False)
    for i in (2, 1, 10):
        write_fake_summary(
            run.out / f"summary.shard-{i}-of-10.json",
            run,
            1,
            config={"model": "fake", "run": {"shard": f"{i}/10"}},
            status="finished" if i != 2 else "interrupted",
        )
    (run.out / "failures.shard-1-of-10.jsonl").write_text(
        json.dumps({"path": "x/a.jpg", "reason": "OSError: bad", "stage": "read"}) + "\n"
    )
    (run.out / "failures.shard-2-of-10.jsonl").write_text(
        json.dumps({"path": "x/b.jpg", "reason": "broken", "stage": "write"}) + "\nnot json\n"
    )
    report = write_report(run.out)
    data = page_data(report.path)
    assert [r["file"] for r in data["runs"]] == [
        "summary.shard-1-of-10.json",
        "summary.shard-2-of-10.json",
        "summary.shard-10-of-10.json",
    ]
    assert [r["status"] for r in data["runs"]] == ["finished", "interrupted", "finished"]
    assert data["config"]["differs"] == [["run.shard", ["1/10", "2/10", "10/10"]]]
    assert ["model", "fake"] in data["config"]["rows"]
    assert [(f["path"], f["stage"], f["file"]) for f in data["failures"]] == [
        ("x/a.jpg", "read", "failures.shard-1-of-10.jsonl"),
        ("x/b.jpg", "write", "failures.shard-2-of-10.jsonl"),
    ]
    assert data["problems"] == ["failures.shard-2-of-10.jsonl line 2: not a failure record"]
    assert report.problems == tuple(data["problems"])


def test_eval_json_is_attached(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 2)
    evaluation = {
        "mIoU": 50.0,
        "mAcc": 60.0,
        "aAcc": 70.0,
        "per_class": [{"name": "background", "iou": 40.0, "acc": 50.0}],
        "num_images": 2,
        "config": {},
        "per_image": [{"key": run.keys[0], "mIoU": None, "aAcc": None, "classes": []}],
    }
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(evaluation))
    data = page_data(write_report(run.out, eval_json=path).path)
    assert data["eval"]["mIoU"] == 50.0 and data["eval"]["perClass"][0]["iou"] == 40.0
    assert data["eval"]["perImage"] == [
        {"key": run.keys[0], "mIoU": None, "aAcc": None, "classes": []}
    ]
    del evaluation["per_image"]  # from an older scclip eval
    path.write_text(json.dumps(evaluation))
    assert page_data(write_report(run.out, eval_json=path).path)["eval"]["perImage"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("{oops", "cannot read"), ('{"mIoU": 1}', "not the JSON")],
)
def test_a_bad_eval_json_is_an_input_error(tmp_path: Path, content, message) -> None:
    run = write_fake_run(tmp_path, 1)
    path = tmp_path / "eval.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        write_report(run.out, eval_json=path)
    assert not (run.out / "report.html").exists()


def test_a_folder_without_results_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no scclip segment results"):
        write_report(tmp_path / "empty")


def test_broken_files_are_listed_and_the_page_is_still_written(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 3)
    (run.out / f"{run.keys[0]}.json").write_text("{truncated")
    (run.out / f"{run.keys[1]}.png").write_bytes(b"not a png")
    report = write_report(run.out)
    data = page_data(report.path)
    assert [im["key"] for im in data["images"]] == run.keys[1:]
    assert data["images"][0]["thumb"] is None and data["images"][1]["thumb"] is not None
    assert len(data["problems"]) == 2
    assert "cannot read" in data["problems"][0] and "no thumbnail" in data["problems"][1]


HOSTILE = ("</script><script>window.pwned=1</script>", "<img src=x onerror=alert(1)>", "a & b")


def test_inline_data_cannot_end_its_script_or_start_markup(tmp_path: Path) -> None:
    run = write_fake_run(
        tmp_path, 2, class_names=HOSTILE, names=["</script><b>x</b>", 'c\'est "ça" & 写真']
    )
    page = write_report(run.out).path
    text = page.read_text(encoding="utf-8")
    block = DATA_RE.search(text)["data"]
    assert not set("<>&") & set(block)
    assert text.count("</script>") == 2  # the data block's and the page script's own
    data = json.loads(block)
    assert [c["name"] for c in data["classes"]] == list(HOSTILE)
    assert {im["key"] for im in data["images"]} == set(run.keys)


def test_the_csp_allows_exactly_the_page_script(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 1)
    text = write_report(run.out).path.read_text(encoding="utf-8")
    script = re.search(r"<script>(.*?)</script>", text, re.DOTALL)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)[1]
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp  # no fetch, no frames, no fonts from anywhere
    assert "fetch(" not in script and "XMLHttpRequest" not in script
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
