"""The bookkeeping of a segment run, engine aside: the plan, what is already complete, the counts,
``summary.json``, ``failures.jsonl`` and the ``--jsonl`` lines, as any engine reports images."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from scclip_cli.errors import InputError, UsageError
from scclip_cli.files.image_record import ImageRecord
from scclip_cli.runs import bookkeeping
from scclip_cli.runs.bookkeeping import (
    Reporter,
    RunPlan,
    SegmentRun,
    plan_run,
    read_legend_classes,
    rerun_without_model,
)
from scclip_cli.runs.inputs import Job
from scclip_cli.runs.summary import Failure

CLASSES = ("background", "cat", "dog")


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"im{i}.png"
        Image.new("RGB", (4 + i, 3), (10 * i, 0, 0)).save(path)
        paths.append(path)
    return paths


def plan(inputs: list[Any], out: Path, **options: Any) -> RunPlan:
    defaults: dict[str, Any] = {
        "overlay": False,
        "overwrite": False,
        "shard": None,
        "preset": None,
        "read_workers": None,
        "stdin": None,
    }
    return plan_run(inputs, out, **(defaults | options))


def record_for(job: Job) -> ImageRecord:
    width = 4 + job.order
    cat = {"index": 1, "name": "cat", "pixels": width * 3, "fraction": 1.0}
    classes = ({**cat, "mean_confidence": 0.5},)
    return ImageRecord(str(job.image.path), width, 3, classes)


def complete(job: Job) -> None:
    """What an engine leaves for a finished image: its mask, then its JSON."""
    job.outputs.mask.parent.mkdir(parents=True, exist_ok=True)
    job.outputs.mask.write_bytes(b"mask")
    record_for(job).write(job.outputs.json)


def open_run(p: RunPlan, **options: Any) -> SegmentRun:
    legend = read_legend_classes(p.out)
    return SegmentRun.open(p, CLASSES, legend, reporter=Reporter(True), **options)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_plan_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 5)
    with pytest.raises(UsageError, match="read_workers"):
        plan([tmp_path / "imgs"], tmp_path / "out", read_workers=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        plan([tmp_path / "imgs"], tmp_path / "file")
    p = plan([tmp_path / "imgs"], tmp_path / "out", shard="2/2", overlay=True)
    assert [i.path.name for i in p.images] == ["im1.png", "im3.png"]
    config = p.run_config({"model": "m"}, engine={"name": "ray"})
    assert config["model"] == "m"
    assert config["run"]["shard"] == "2/2" and config["run"]["overlay"] is True
    assert config["run"]["engine"] == {"name": "ray"}
    assert not (tmp_path / "out").exists()


def test_a_run_counts_skips_reports_and_writes_its_files(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 4)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    first = open_run(p)
    complete(first.jobs[1])  # a previous run finished one image
    lines = io.StringIO()
    run = open_run(p, jsonl_stream=lines)
    assert [job.order for job in run.todo] == [0, 2, 3]
    skipped = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert skipped == [run.jobs[1].jsonl_line(record_for(run.jobs[1]), "skipped")]
    assert (p.out / "legend.json").is_file()

    run.start({"model": "fake"}, load_seconds=1.5, show_progress=False)
    assert read_json(p.out / "summary.json")["status"] == "running"
    with run.segmenting():
        for job in (run.jobs[3], run.jobs[0]):  # engines report in any order
            complete(job)
            run.image_done(job, record_for(job))
        run.image_failed(Failure(str(run.jobs[2].image.path), "broken", "read", 2))
        run.waited(read=0.25, write=0.5)
        # failures are on disk as they happen
        assert read_json(p.out / "failures.jsonl")["reason"] == "broken"

    summary = read_json(p.out / "summary.json")
    assert summary["status"] == "finished"
    assert summary["counts"] == {"images": 4, "done": 2, "skipped": 1, "failed": 1}
    assert summary["config"]["model"] == "fake"
    assert summary["timing"]["load_seconds"] == 1.5
    assert summary["timing"]["read_wait_seconds"] == 0.25
    # totals cover done and skipped images: widths 4, 5 and 7, three rows each
    assert summary["classes"][0]["pixels"] == (4 + 5 + 7) * 3
    assert run.summary.exit_code == 1
    done = [json.loads(line) for line in lines.getvalue().splitlines()[1:]]
    assert [(d["status"], Path(d["path"]).name) for d in done] == [
        ("done", "im3.png"),
        ("done", "im0.png"),
    ]
    failures = (p.out / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(f)["stage"] for f in failures] == ["read"]


def test_an_interrupted_or_failing_run_records_it_and_the_error_goes_on(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 2)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    run = open_run(p)
    run.start({}, load_seconds=0.0, show_progress=False)
    with pytest.raises(KeyboardInterrupt), run.segmenting():
        run.image_done(run.jobs[0], record_for(run.jobs[0]))
        raise KeyboardInterrupt
    summary = read_json(p.out / "summary.json")
    assert (summary["status"], summary["counts"]["done"]) == ("interrupted", 1)

    run = open_run(p)
    run.start({}, load_seconds=0.0, show_progress=False)
    with pytest.raises(RuntimeError), run.segmenting():
        raise RuntimeError("a bug in the engine")
    summary = read_json(p.out / "summary.json")
    assert summary["status"] == "error"
    assert summary["error"] == "RuntimeError: a bug in the engine"


def test_a_folder_of_another_vocabulary_needs_overwrite(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    open_run(p)
    assert read_legend_classes(p.out) == CLASSES
    other = ("sky", "sea")
    with pytest.raises(UsageError, match="another vocabulary"):
        SegmentRun.open(p, other, CLASSES, reporter=Reporter(True))
    redo = plan([tmp_path / "imgs"], tmp_path / "out", overwrite=True)
    SegmentRun.open(redo, other, CLASSES, reporter=Reporter(True))
    assert read_legend_classes(p.out) == other


def test_a_rerun_with_everything_complete_needs_no_model(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    run = open_run(p)
    for job in run.jobs[:2]:
        complete(job)

    def rerun() -> Any:
        legend = read_legend_classes(p.out)
        reporter = Reporter(True)
        return rerun_without_model(p, CLASSES, legend, model="m", pretrained="w", reporter=reporter)

    assert rerun() is None  # one image left: the model is needed
    complete(run.jobs[2])
    summary = rerun()
    assert (summary.done, summary.skipped, summary.failed) == (0, 3, 0)
    config = read_json(p.out / "summary.json")["config"]
    assert (config["loaded"], config["model"], config["class_names"]) == (False, "m", list(CLASSES))
    with pytest.raises(UsageError, match="another vocabulary"):
        rerun_without_model(
            p, ("sky",), CLASSES, model="m", pretrained="w", reporter=Reporter(True)
        )


def test_the_run_options_are_recorded_in_the_config(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan(
        [tmp_path / "imgs"],
        tmp_path / "out",
        overlay=True,
        overwrite=True,
        shard="1/2",
        preset="voc21",
        read_workers=1,  # the smallest pool is fine
        save_confidence=True,
    )
    description = {"model": "m", "num_classes": 3}
    config = p.run_config(description, engine={"name": "ray"})
    assert config == {
        "model": "m",
        "num_classes": 3,
        "run": {
            "inputs": [str(tmp_path / "imgs")],
            "out": str(tmp_path / "out"),
            "preset": "voc21",
            "overlay": True,
            "save_confidence": True,
            "overwrite": True,
            "shard": "1/2",
            "engine": {"name": "ray"},
        },
    }
    assert description == {"model": "m", "num_classes": 3}  # the segmenter's own is not touched
    plain = plan([tmp_path / "imgs"], tmp_path / "out").run_config({})
    assert plain["run"]["shard"] is None and plain["run"]["preset"] is None
    assert (plain["run"]["overlay"], plain["run"]["save_confidence"]) == (False, False)
    with pytest.raises(UsageError) as err:
        plan([tmp_path / "imgs"], tmp_path / "out", read_workers=0)
    assert str(err.value) == "read_workers must be at least 1, got 0"


def test_an_output_folder_inside_the_inputs_is_not_segmented_again(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 2)
    out = tmp_path / "imgs" / "masks"
    run = open_run(plan([tmp_path / "imgs"], out))
    complete(run.jobs[0])
    assert (out / "im0.png").is_file() and (out / "legend.json").is_file()
    again = plan([tmp_path / "imgs"], out)
    assert [i.path for i in again.images] == [
        tmp_path / "imgs" / "im0.png",
        tmp_path / "imgs" / "im1.png",
    ]


def test_a_failed_image_is_reported_and_counts_on_the_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    run = SegmentRun.open(p, CLASSES, None, reporter=Reporter(False))
    run.start({}, load_seconds=0.0, show_progress=True)
    first = str(run.jobs[0].image.path)
    with run.segmenting():
        run.image_failed(Failure(first, "broken", "read", 0))  # the first input fails
        for job in run.jobs[1:]:
            run.image_done(job, record_for(job))
        # a failure outside the inputs (a folder that cannot be listed) is no image of the bar
        run.image_failed(
            Failure(str(tmp_path / "imgs" / "locked"), "Permission denied", "discover")
        )
    err = capsys.readouterr().err
    assert f"scclip: failed: {first}: broken\n" in err
    assert f"scclip: failed: {tmp_path / 'imgs' / 'locked'}: Permission denied\n" in err
    final_bar = err[err.rindex("segment:") :]  # the bar as the run left it
    assert "3/3" in final_bar
    assert (run.summary.done, run.summary.failed) == (2, 2)
    assert read_json(p.out / "summary.json")["out_dir"] == str(p.out)


def test_outputs_that_would_take_an_input_or_another_output_are_refused_by_the_plan(
    tmp_path: Path,
) -> None:
    def image(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3)).save(path)
        return path

    # x.jpg's overlay would be written over the input x_overlay.jpg (only with --overlay)
    pair = [image(tmp_path / "a" / "x.jpg"), image(tmp_path / "a" / "x_overlay.jpg")]
    assert len(plan(pair, tmp_path / "a").images) == 2
    with pytest.raises(InputError) as err:
        plan(pair, tmp_path / "a", overlay=True)
    assert str(err.value) == (
        f"the output {tmp_path / 'a' / 'x_overlay.jpg'} of {pair[0]} would overwrite the input "
        f"{pair[1]}; choose an --out folder that is not an input folder"
    )

    # p.png's confidence map is p_conf.png's mask (only with --save-confidence); the colour
    # image of 16-bit masks (p_color.png) does not count for a vocabulary that fits a palette
    folder = tmp_path / "b"
    for name in ("p.png", "p_conf.png", "p_color.png"):
        image(folder / name)
    assert len(plan([folder], tmp_path / "out").images) == 3
    with pytest.raises(InputError) as err:
        plan([folder], tmp_path / "out", save_confidence=True)
    assert str(err.value) == (
        f"output collision: {folder / 'p.png'} and {folder / 'p_conf.png'} would both write "
        f"{tmp_path / 'out' / 'p_conf.png'}. Rename the inputs or segment them into separate "
        "--out folders"
    )

    # an image's record would replace the run's own summary.json
    image(tmp_path / "c" / "summary.png")
    with pytest.raises(InputError) as err:
        plan([tmp_path / "c"], tmp_path / "out")
    assert str(err.value).startswith(
        f"output collision: the run's own summary.json and {tmp_path / 'c' / 'summary.png'} "
        f"would both write {tmp_path / 'out' / 'summary.json'}."
    )
    assert not (tmp_path / "out").exists()


def test_a_vocabulary_too_big_for_a_palette_adds_colour_images(tmp_path: Path) -> None:
    palette = tuple(f"class {i}" for i in range(256))
    wide = (*palette, "one more")
    make_images(tmp_path / "imgs", 1)
    run = SegmentRun.open(
        plan([tmp_path / "imgs"], tmp_path / "a"), palette, None, reporter=Reporter(True)
    )
    assert run.jobs[0].outputs.color is None  # 256 classes fit a palette PNG
    run = SegmentRun.open(
        plan([tmp_path / "imgs"], tmp_path / "b"), wide, None, reporter=Reporter(True)
    )
    assert run.jobs[0].outputs.color == tmp_path / "b" / "im0_color.png"
    assert run.jobs[0].outputs.files() == (
        tmp_path / "b" / "im0.png",
        tmp_path / "b" / "im0_color.png",
        tmp_path / "b" / "im0.json",
    )

    # p.png's colour image would be p_color.png's mask: found once the vocabulary is known
    folder = tmp_path / "clash"
    for name in ("p.png", "p_color.png"):
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (4, 3)).save(folder / name)
    clash = plan([folder], tmp_path / "c")
    SegmentRun.open(clash, palette, None, reporter=Reporter(True))
    with pytest.raises(InputError) as err:
        SegmentRun.open(clash, wide, None, reporter=Reporter(True), jsonl_stream=None)
    assert str(err.value) == (
        f"output collision: {folder / 'p.png'} and {folder / 'p_color.png'} would both write "
        f"{tmp_path / 'c' / 'p_color.png'}. Rename the inputs or segment them into separate "
        "--out folders"
    )


def test_a_folder_that_cannot_be_listed_is_a_failure_of_the_first_shard_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    make_images(tmp_path / "imgs", 3)
    locked = tmp_path / "imgs" / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    messages = {}
    for shard in (None, "1/2", "2/2"):
        out = tmp_path / f"out-{shard}".replace("/", "-")
        run = SegmentRun.open(
            plan([tmp_path / "imgs"], out, shard=shard), CLASSES, None, reporter=Reporter(False)
        )
        run.start({}, load_seconds=0.0, show_progress=False)
        with run.segmenting():
            for job in run.todo:
                run.image_done(job, record_for(job))
        failures = [json.loads(line) for line in run.summary.failures_path.read_text().splitlines()]
        messages[shard] = capsys.readouterr().err
        if shard == "2/2":
            assert failures == []
            assert run.summary.failed == 0
        else:
            assert failures == [
                {
                    "path": str(locked),
                    "reason": "cannot list folder: Permission denied",
                    "stage": "discover",
                }
            ]
            assert run.summary.failed == 1
            assert (
                f"scclip: failed: {locked}: cannot list folder: Permission denied\n"
                in messages[shard]
            )
    assert "scclip: 3 images: 0 already complete, 3 to segment\n" in messages[None]
    assert "scclip: 2 images (shard 1/2): 0 already complete, 2 to segment\n" in messages["1/2"]
    assert "scclip: 1 images (shard 2/2): 0 already complete, 1 to segment\n" in messages["2/2"]


def test_the_start_message_counts_complete_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    complete(open_run(p).jobs[2])
    run = SegmentRun.open(p, CLASSES, CLASSES, reporter=Reporter(False))
    run.start({}, load_seconds=0.0, show_progress=False)
    assert capsys.readouterr().err == "scclip: 3 images: 1 already complete, 2 to segment\n"


@pytest.mark.parametrize(
    ("quiet", "terminal", "shown"),
    [(False, True, True), (False, False, False), (True, True, False)],
)
def test_the_progress_bar_shows_by_default_on_a_terminal_unless_quiet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quiet: bool,
    terminal: bool,
    shown: bool,
) -> None:
    make_images(tmp_path / "imgs", 2)
    monkeypatch.setattr(bookkeeping, "stderr_is_terminal", lambda: terminal)
    run = SegmentRun.open(
        plan([tmp_path / "imgs"], tmp_path / "out"), CLASSES, None, reporter=Reporter(quiet)
    )
    run.start({}, load_seconds=0.0, show_progress=None)
    with run.segmenting():
        for job in run.todo:
            run.image_done(job, record_for(job))
    assert ("segment: 100%" in capsys.readouterr().err) is shown


def test_no_progress_bar_when_every_image_is_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "imgs", 2)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    for job in open_run(p).jobs:
        complete(job)
    run = open_run(p)
    run.start({}, load_seconds=0.0, show_progress=True)
    with run.segmenting():
        pass
    assert run.summary.skipped == 2
    assert "segment:" not in capsys.readouterr().err


def test_stderr_is_a_terminal_only_when_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert bookkeeping.stderr_is_terminal() is False
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    monkeypatch.setattr(sys, "stderr", closed)
    assert bookkeeping.stderr_is_terminal() is False
    monkeypatch.setattr(sys, "stderr", object())  # no isatty at all
    assert bookkeeping.stderr_is_terminal() is False


def test_waits_for_reading_and_writing_add_up_separately(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    run = open_run(plan([tmp_path / "imgs"], tmp_path / "out"))
    run.start({}, load_seconds=0.0, show_progress=False)
    with run.segmenting():
        run.waited(read=0.25)
        run.waited(write=0.5)
        run.waited(read=0.5, write=0.125)
    timing = read_json(run.summary.summary_path)["timing"]
    assert (timing["read_wait_seconds"], timing["write_wait_seconds"]) == (0.75, 0.625)


def test_the_output_folder_is_created_with_its_parents_or_the_reason_is_given(
    tmp_path: Path,
) -> None:
    make_images(tmp_path / "imgs", 1)
    deep = tmp_path / "runs" / "2026" / "out"
    open_run(plan([tmp_path / "imgs"], deep))
    assert read_legend_classes(deep) == CLASSES

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError) as err:
        open_run(plan([tmp_path / "imgs"], tmp_path / "file" / "out"))
    assert str(err.value) == (
        f"cannot create the output folder {tmp_path / 'file' / 'out'}: Not a directory"
    )

    blocked = tmp_path / "blocked"
    (blocked / "legend.json").mkdir(parents=True)  # legend.json cannot be written
    with pytest.raises(InputError) as err:
        open_run(plan([tmp_path / "imgs"], blocked))
    assert str(err.value) == f"cannot write to the output folder {blocked}: Is a directory"


def test_another_vocabulary_is_refused_with_both_class_counts(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    open_run(p)
    with pytest.raises(UsageError) as err:
        SegmentRun.open(p, ("sky", "sea"), CLASSES, reporter=Reporter(True))
    assert str(err.value) == (
        f"{p.out} holds results for another vocabulary (3 classes in legend.json, now 2); "
        "pass --overwrite to redo them or choose another --out folder"
    )


def test_the_final_failures_file_is_in_input_order_and_the_run_has_an_end_time(
    tmp_path: Path,
) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    run = open_run(p)
    run.start({}, load_seconds=0.0, show_progress=False)
    paths = [str(job.image.path) for job in run.jobs]
    with run.segmenting():
        run.image_failed(Failure(paths[2], "broken", "write", 2))  # engines report in any order
        run.image_done(run.jobs[1], record_for(run.jobs[1]))
        run.image_failed(Failure(paths[0], "truncated", "read", 0))
        live = (p.out / "failures.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["path"] for line in live] == [paths[2], paths[0]]
    final = (p.out / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in final] == [
        {"path": paths[0], "reason": "truncated", "stage": "read"},
        {"path": paths[2], "reason": "broken", "stage": "write"},
    ]
    summary = read_json(p.out / "summary.json")
    assert summary["finished_at"] is not None
    assert summary["finished_at"] >= summary["started_at"]  # ISO times of one zone sort as text


@pytest.mark.parametrize(
    ("content", "classes"),
    [
        ('[{"index": 0, "name": "chat"}, {"index": 1, "name": "Hund"}]', ("chat", "Hund")),
        ('{"classes": [{"name": "sky"}, {"name": "sea"}]}', ("sky", "sea")),  # wrapped
        ('["sky", "sea"]', ("sky", "sea")),  # plain names
        ('[{"name": "sky"}, {"index": 1}]', None),  # a class without a name
        ('[{"name": "sky"}, 3]', None),
        ('{"names": ["sky"]}', None),
        ('"sky"', None),
        ("not json", None),
    ],
)
def test_the_classes_of_an_existing_legend(tmp_path: Path, content: str, classes: Any) -> None:
    (tmp_path / "legend.json").write_text(content, encoding="utf-8")
    assert read_legend_classes(tmp_path) == classes


def test_a_legend_with_non_ascii_names_is_read_back(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    names = ("fond", "chat tigré", "熊猫")
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    SegmentRun.open(p, names, None, reporter=Reporter(True))
    assert read_legend_classes(p.out) == names


def test_only_a_complete_folder_of_the_same_vocabulary_needs_no_model(tmp_path: Path) -> None:
    from scclip_cli.runs.bookkeeping import nothing_to_segment

    make_images(tmp_path / "imgs", 2)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    for job in open_run(p).jobs:
        complete(job)
    assert nothing_to_segment(p, CLASSES, CLASSES)
    assert not nothing_to_segment(p, CLASSES, None)  # no legend.json: not known to be ours
    redo = plan([tmp_path / "imgs"], tmp_path / "out", overwrite=True)
    assert not nothing_to_segment(redo, CLASSES, CLASSES)
    assert (
        rerun_without_model(
            redo, CLASSES, CLASSES, model="m", pretrained="w", reporter=Reporter(True)
        )
        is None
    )

    # 256 classes fit a palette: mask and JSON make an image complete
    palette = tuple(f"class {i}" for i in range(256))
    p = plan([tmp_path / "imgs"], tmp_path / "palette")
    for job in SegmentRun.open(p, palette, None, reporter=Reporter(True)).jobs:
        complete(job)
    assert nothing_to_segment(p, palette, palette)
    # one more: the colour image is part of each image too
    wide = (*palette, "one more")
    p = plan([tmp_path / "imgs"], tmp_path / "wide")
    jobs = SegmentRun.open(p, wide, None, reporter=Reporter(True)).jobs
    for job in jobs:
        complete(job)
    assert not nothing_to_segment(p, wide, wide)
    for job in jobs:
        assert job.outputs.color is not None
        job.outputs.color.write_bytes(b"colour")
    assert nothing_to_segment(p, wide, wide)


def test_a_rerun_without_model_records_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "imgs", 2)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    for job in open_run(p).jobs:
        complete(job)
    capsys.readouterr()
    summary = rerun_without_model(
        p, CLASSES, CLASSES, model="m", pretrained="w", reporter=Reporter(False), progress=True
    )
    assert summary is not None and summary.skipped == 2
    err = capsys.readouterr().err
    assert "scclip: every image is already complete: no model was loaded\n" in err
    assert "segment:" not in err  # nothing to segment: no bar even when asked for
    data = read_json(p.out / "summary.json")
    run_options = data["config"].pop("run")
    assert data["config"] == {
        "model": "m",
        "pretrained": "w",
        "loaded": False,
        "num_classes": 3,
        "class_names": list(CLASSES),
    }
    assert run_options["out"] == str(p.out)
    assert data["timing"]["load_seconds"] == 0.0

    # another vocabulary: refused with the folder's name, unless overwriting (then the model runs)
    with pytest.raises(UsageError) as err_info:
        rerun_without_model(
            p, ("sky",), CLASSES, model="m", pretrained="w", reporter=Reporter(True)
        )
    assert str(err_info.value).startswith(f"{p.out} holds results for another vocabulary")
    redo = plan([tmp_path / "imgs"], tmp_path / "out", overwrite=True)
    assert (
        rerun_without_model(
            redo, ("sky",), CLASSES, model="m", pretrained="w", reporter=Reporter(True)
        )
        is None
    )


def test_the_confidence_map_is_part_of_an_image_when_asked_for(tmp_path: Path) -> None:
    from scclip_cli.runs.bookkeeping import nothing_to_segment

    make_images(tmp_path / "imgs", 1)
    p = plan([tmp_path / "imgs"], tmp_path / "out", save_confidence=True)
    job = open_run(p).jobs[0]
    assert job.outputs.confidence == p.out / "im0_conf.png"
    complete(job)  # mask and JSON, no confidence map yet
    assert not nothing_to_segment(p, CLASSES, CLASSES)
    assert [j.order for j in open_run(p).todo] == [0]
    job.outputs.confidence.write_bytes(b"conf")
    assert nothing_to_segment(p, CLASSES, CLASSES)
    assert open_run(p).todo == []


def test_summary_json_is_indented_for_people(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    run = open_run(plan([tmp_path / "imgs"], tmp_path / "out"))
    run.start({"model": "m"}, load_seconds=0.0, show_progress=False)
    text = run.summary.summary_path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2) + "\n"


class _ClosedPipe(io.StringIO):
    """A ``--jsonl`` reader that went away (``| head -1``): every write is a broken pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_jsonl_pipe_stops_the_lines_and_the_run_goes_on(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 3)
    p = plan([tmp_path / "imgs"], tmp_path / "out")
    run = open_run(p, jsonl_stream=_ClosedPipe())
    run.start({}, load_seconds=0.0, show_progress=False)
    with run.segmenting():
        for job in run.jobs:
            run.image_done(job, record_for(job))
    assert read_json(p.out / "summary.json")["counts"]["done"] == 3
