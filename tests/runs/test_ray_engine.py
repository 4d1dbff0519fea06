"""``segment`` and ``eval`` on Ray give the local results: same files, failures, summary and scores,
also when a worker process is killed in the middle of the run.

One small Ray instance (2 CPUs, no dashboard) is shared by the module; the tests that need it skip
when Ray is not installed. Workers run the tiny random-weight model on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from scclip_cli.cli.options import engine_from_options
from scclip_cli.errors import UsageError
from scclip_cli.predict.model_options import ModelOptions
from scclip_cli.runs.ray_engine import (
    CONTROL_GROUP,
    DEFAULT_IMAGES_PER_TASK,
    RayEngine,
    RayOptions,
    WorkerPool,
    WorkerResources,
    import_ray,
    plan_batches,
)
from support.ray_instance import private_ray_instance
from support.torch_threads import torch_threads

TINY_CLI: dict[str, Any] = {"model": "scclip-tiny", "pretrained": "random:7", "device": "cpu"}
TINY = ModelOptions("scclip-tiny", pretrained="random:7", device="cpu", batch_size=1)
"""The tiny model, one crop per forward pass. Byte-equal outputs need the same arithmetic on both
engines: the same batches (Ray groups images by task, so one crop per batch) and the same number of
torch threads (a worker has one per CPU reserved, one here; see ``torch_threads``), since both
change the order in which matrix products sum, hence their last float bits."""
WINDOWS: dict[str, Any] = {"short_side": 32, "crop": 32, "stride": 16}
"""Small windows: the tiny model takes milliseconds per image, so Ray's start-up dominates."""
CLASSES = "background\ncat, kitten\ndog\ngrass\n"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    yield from private_ray_instance()


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every kind of image (three unreadable) and the local engine's outputs for them."""
    from scclip_cli.runs.segment import segment
    from support.image_factory import make_image_zoo

    root = tmp_path_factory.mktemp("zoo")
    images = root / "images"
    zoo = make_image_zoo(images / "kinds")
    zoo.separate_formats(images)
    vocab = root / "classes.txt"
    vocab.write_text(CLASSES, encoding="utf-8")
    local = root / "local"
    with torch_threads(1):
        summary = segment(
            [images],
            vocab,
            local,
            quiet=True,
            overlay=True,
            save_confidence=True,
            model=TINY,
            **WINDOWS,
        )
    assert (summary.done, summary.failed) == (len(zoo.sizes), len(zoo.failing))
    return {"zoo": zoo, "images": images, "vocab": vocab, "local": local}


def cli_options(options: dict[str, Any]) -> list[str]:
    """``{"short_side": 32}`` → ``["--short-side", "32"]``."""
    return [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def per_image_outputs(out: Path) -> dict[str, bytes]:
    """Masks, overlays and per-image JSON by relative path (run-level files left out)."""
    run_files = ("summary", "failures", "legend")
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not (p.parent == out and p.name.startswith(run_files))
    }


def hidden_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def comparable_summary(path: Path) -> dict[str, Any]:
    """``summary.json`` without what differs between two engines: timing and output folder."""
    data = read_json(path)
    for key in ("timing", "started_at", "finished_at", "out_dir"):
        data.pop(key)
    data["config"]["run"].pop("out")
    data["config"]["run"].pop("engine", None)
    return data


def segment_on_ray(zoo_run: dict[str, Any], out: Path, **ray: Any) -> Any:
    from scclip_cli.runs.segment import segment

    return segment(
        [zoo_run["images"]],
        zoo_run["vocab"],
        out,
        engine=RayOptions(workers=2, images_per_task=2, **ray),
        quiet=True,
        overlay=True,
        save_confidence=True,
        model=TINY,
        **WINDOWS,
    )


# --- options and a missing Ray (no Ray instance needed) -----------------------------------------


def test_engine_options_are_checked() -> None:
    assert engine_from_options("local") == "local"
    options = engine_from_options("ray", workers=3, gpus_per_worker=0.5)
    assert options == RayOptions(workers=3, gpus_per_worker=0.5, cpus_per_worker=1.0)
    with pytest.raises(UsageError, match="--workers, --gpus-per-worker need --engine ray"):
        engine_from_options("local", workers=2, gpus_per_worker=1)
    with pytest.raises(UsageError, match="--engine must be one of local, ray"):
        engine_from_options("spark")
    for bad in ({"workers": 0}, {"gpus_per_worker": -1}, {"gpus_per_worker": 1.5}):
        with pytest.raises(UsageError):
            RayOptions(**bad)
    with pytest.raises(UsageError):
        RayOptions(cpus_per_worker=0)


def test_missing_ray_is_a_usage_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r'pip install "scclip-cli\[ray\]"'):
        import_ray()

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "classes.txt").write_text(CLASSES, encoding="utf-8")
    base = ["segment", str(tmp_path / "a.png"), "--vocab", str(tmp_path / "classes.txt")]
    base += ["--out", str(tmp_path / "out")]
    assert main([*base, "--engine", "ray"]) == 2
    assert 'pip install "scclip-cli[ray]"' in capsys.readouterr().err
    assert main([*base, "--workers", "2"]) == 2
    assert "--workers need --engine ray" in capsys.readouterr().err
    assert main(["eval", "--merge", str(tmp_path / "a.npz"), "--engine", "ray"]) == 2
    assert "drop --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_every_image_complete_starts_no_ray_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    from scclip_cli.runs.segment import segment

    for i in range(2):
        Image.new("RGB", (20 + i, 16), (40 * i, 90, 200)).save(tmp_path / f"im{i}.png")
    vocab = tmp_path / "classes.txt"
    vocab.write_text(CLASSES, encoding="utf-8")
    out = tmp_path / "out"
    segment([tmp_path], vocab, out, quiet=True, model=TINY, **WINDOWS)

    def no_session(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Ray session was started")

    monkeypatch.setattr(RayEngine, "session", no_session)
    summary = segment(
        [tmp_path], vocab, out, quiet=True, model=TINY, engine=RayOptions(), **WINDOWS
    )
    assert (summary.done, summary.skipped, summary.failed) == (0, 2, 0)
    assert read_json(out / "summary.json")["config"]["loaded"] is False


class FakeCluster:
    """What :func:`plan_batches` asks Ray: the cluster's resources."""

    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)


def test_workers_and_batches_follow_the_cluster() -> None:
    gpus = FakeCluster(CPU=64, GPU=8)
    resources, batches = plan_batches(gpus, RayOptions(), list(range(10_000)), 32, needs_model=True)
    assert (resources.workers, resources.gpus, resources.cpus) == (8, 1.0, 1.0)  # one per GPU
    assert [len(b) for b in batches[:2]] == [DEFAULT_IMAGES_PER_TASK] * 2
    assert [i for batch in batches for i in batch] == list(range(10_000))  # in order, once
    resources, _ = plan_batches(
        gpus, RayOptions(gpus_per_worker=0.5), list(range(10_000)), 32, needs_model=True
    )
    assert resources.workers == 16
    # few images: smaller batches, so that every worker gets some
    resources, batches = plan_batches(gpus, RayOptions(), list(range(40)), 32, needs_model=True)
    assert resources.workers == 8 and len(batches) == 14
    # no model (scoring saved masks): no GPU
    resources, _ = plan_batches(gpus, RayOptions(), list(range(40)), 8, needs_model=False)
    assert (resources.workers, resources.gpus) == (20, 0.0)

    cpus = FakeCluster(CPU=6)
    resources, _ = plan_batches(
        cpus, RayOptions(cpus_per_worker=2), list(range(99)), 32, needs_model=True
    )
    assert (resources.workers, resources.gpus) == (3, 0.0)
    with pytest.raises(UsageError, match="has 0 GPU"):
        plan_batches(cpus, RayOptions(gpus_per_worker=1), [1], 32, needs_model=True)
    resources, batches = plan_batches(cpus, RayOptions(workers=4), [], 32, needs_model=True)
    assert (resources.workers, batches) == (1, [])  # nothing to do: one worker describes the model


# --- segment --------------------------------------------------------------------------------------


def test_segment_on_ray_writes_what_the_local_engine_writes(
    ray_instance: Any,
    zoo_run: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local, out = zoo_run["local"], tmp_path / "ray"
    summary = segment_on_ray(zoo_run, out)

    zoo = zoo_run["zoo"]
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (
        len(zoo),
        len(zoo.sizes),
        0,
        len(zoo.failing),
    )
    assert summary.exit_code == 1
    assert per_image_outputs(out) == per_image_outputs(local)  # masks, overlays, JSON: bytes
    assert len(list(out.rglob("*_conf.png"))) == len(zoo.sizes)  # written by the shared writer
    assert (out / "failures.jsonl").read_bytes() == (local / "failures.jsonl").read_bytes()
    assert (out / "legend.json").read_bytes() == (local / "legend.json").read_bytes()
    assert comparable_summary(out / "summary.json") == comparable_summary(local / "summary.json")
    data = read_json(out / "summary.json")
    assert data["status"] == "finished"
    assert data["config"]["run"]["engine"] == {
        "name": "ray",
        "address": None,
        "workers": 2,
        "gpus_per_worker": 0.0,
        "cpus_per_worker": 1.0,
    }
    assert hidden_leftovers(out) == []

    # a rerun through the CLI finds everything done; stdout carries only the --jsonl lines
    capsys.readouterr()
    args = [zoo_run["images"], "--vocab", zoo_run["vocab"], "--out", out, "--overlay", "-q"]
    args += ["--engine", "ray", "--workers", "2", "--jsonl", *cli_options(TINY_CLI | WINDOWS)]
    args += ["--batch-size", "1"]
    assert main(["segment", *map(str, args)]) == 1  # the unreadable files fail again
    lines = []
    for text in capsys.readouterr().out.splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            pytest.fail(f"stdout must carry only --jsonl lines, got: {text!r}")
    assert sorted(line["status"] for line in lines) == ["skipped"] * len(zoo.sizes)
    assert read_json(out / "summary.json")["counts"] == {
        "images": len(zoo),
        "done": 0,
        "skipped": len(zoo.sizes),
        "failed": len(zoo.failing),
    }
    assert per_image_outputs(out) == per_image_outputs(local)


def test_a_killed_worker_is_replaced_and_the_run_ends_as_if_nothing_happened(
    ray_instance: Any, zoo_run: dict[str, Any], tmp_path: Path
) -> None:
    ray = ray_instance
    out = tmp_path / "ray"
    # A driver that died earlier left two images complete, one mask without its JSON (never
    # complete) and a temporary file of a dead process: the run finishes the rest.
    local_files = per_image_outputs(zoo_run["local"])
    for name in ("kinds/rgb", "kinds/gray"):
        for suffix in (".png", "_overlay.jpg", "_conf.png", ".json"):
            target = out / f"{name}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(local_files[f"{name}{suffix}"])
    (out / "kinds" / "tiny.png").write_bytes(local_files["kinds/tiny.png"])
    (out / "kinds" / ".tiny.json.tmp-999999999-abcd1234").write_text("{")

    killed: list[int] = []
    later_pids: list[int] = []

    def kill_the_workers(actors: Sequence[Any]) -> None:
        # The first batch is back and each busy worker has more queued: kill every worker in the
        # middle of its batches. pid() answers at once (a concurrency group of its own).
        pids = ray.get([a.pid.options(concurrency_group=CONTROL_GROUP).remote() for a in actors])
        if not killed:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)
        else:
            later_pids.extend(pids)

    summary = segment_on_ray(zoo_run, out, on_batch_done=kill_the_workers)

    zoo = zoo_run["zoo"]
    assert killed and later_pids and not set(killed) & set(later_pids)  # new processes
    assert (summary.done, summary.skipped, summary.failed) == (
        len(zoo.sizes) - 2,
        2,
        len(zoo.failing),
    )
    assert per_image_outputs(out) == local_files
    assert (out / "failures.jsonl").read_bytes() == (
        zoo_run["local"] / "failures.jsonl"
    ).read_bytes()
    local_summary = comparable_summary(zoo_run["local"] / "summary.json")
    ray_summary = comparable_summary(out / "summary.json")
    assert ray_summary["classes"] == local_summary["classes"]  # totals include skipped images
    assert ray_summary["failed"] == local_summary["failed"]
    assert hidden_leftovers(out) == []


def test_an_item_that_kills_its_worker_every_time_is_lost_alone(ray_instance: Any) -> None:
    """Batches whose worker died on every attempt are split; only the culprit is lost."""
    ray = ray_instance
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = WorkerPool(
        ray,
        SuicidalWorker,
        WorkerResources(workers=2, gpus=0.0, cpus=1.0),
        RayOptions(max_task_retries=1),
        init_args=(),
    )
    results: list[str] = []
    lost: list[str] = []
    try:
        pool.wait_first_ready(None)
        pool.dispatch(
            [["a", "b"], ["c", "poison", "d"], ["e"]],
            method="work",
            on_result=lambda batch, result: results.extend(result),
            on_lost=lambda batch, error: lost.extend(batch),
        )
    finally:
        pool.stop()
    assert sorted(results) == ["a", "b", "c", "d", "e"]  # each once
    assert lost == ["poison"]


class SuicidalWorker:
    """Echoes its batch; its process dies on a batch holding ``"poison"``."""

    def __init__(self, threads: float) -> None:
        pass

    def setup(self) -> dict[str, Any]:
        return {"missing": [], "cwd_ok": True, "node": "here"}

    def work(self, batch: list[str]) -> list[str]:
        if "poison" in batch:
            os._exit(1)
        return batch


# --- eval -------------------------------------------------------------------------------------------


def write_label(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def eval_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seven photos in two folders with random ground truth (some pixels ignored)."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(3)
    for i in range(7):
        height, width = 20 + 3 * i, 28 + 5 * (i % 3)
        key = f"set{i % 2}/p{i}"
        base = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
        photo = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
        (root / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        photo.save(root / "images" / f"{key}.png")
        gt = rng.integers(0, 4, size=(height, width))
        gt[rng.random((height, width)) < 0.1] = 255
        write_label(root / "gt" / f"{key}.png", gt)
    (root / "classes.txt").write_text(CLASSES, encoding="utf-8")
    return {
        "root": root,
        "images": root / "images",
        "gt": root / "gt",
        "vocab": root / "classes.txt",
    }


def assert_same_result(ray_result: Any, local_result: Any) -> None:
    ray_cm, local_cm = ray_result.confusion, local_result.confusion
    assert np.array_equal(ray_cm.matrix, local_cm.matrix)
    assert ray_cm.matrix.dtype == local_cm.matrix.dtype == np.int64
    assert ray_cm.num_images == local_cm.num_images
    assert ray_cm.class_names == local_cm.class_names
    assert ray_cm.config == local_cm.config
    assert ray_cm.shards == local_cm.shards
    ray_metrics, local_metrics = ray_result.metrics, local_result.metrics
    assert json.dumps(ray_metrics) == json.dumps(local_metrics)  # NaN-aware, to the last digit


def test_eval_on_ray_equals_local_eval_exactly(
    ray_instance: Any, eval_folders: dict[str, Path], tmp_path: Path
) -> None:
    from scclip_cli.runs.evaluate import evaluate

    common = {
        "images_dir": eval_folders["images"],
        "gt_dir": eval_folders["gt"],
        "vocab": eval_folders["vocab"],
        "protocol_overrides": dict(WINDOWS),
        "progress": False,
        "model": TINY,
    }
    with torch_threads(1):
        local = evaluate(save_pred=tmp_path / "local_pred", **common)
    on_ray = evaluate(
        engine=RayOptions(workers=2, images_per_task=2),
        save_pred=tmp_path / "ray_pred",
        quiet=True,
        **common,
    )
    assert_same_result(on_ray, local)
    assert local.confusion.matrix.sum() > 0
    assert on_ray.run_info["engine"]["workers"] == 2
    assert per_image_outputs(tmp_path / "ray_pred") == per_image_outputs(tmp_path / "local_pred")

    # Scoring saved masks needs no model: workers read them and sum their matrices (CLI).
    reports = {}
    for engine in ("local", "ray"):
        reports[engine] = tmp_path / f"{engine}.json"
        args = ["--pred", tmp_path / "local_pred", "--gt", eval_folders["gt"]]
        args += ["--num-classes", 4, "--engine", engine, "--json", reports[engine], "-q"]
        assert main(["eval", *map(str, args)]) == 0
    local_report, ray_report = (read_json(reports[e]) for e in ("local", "ray"))
    ray_config = ray_report.pop("config")
    assert ray_config.pop("engine")["name"] == "ray"
    assert ray_config == local_report.pop("config")
    assert ray_report == local_report


def test_a_batch_redone_after_a_lost_worker_keeps_what_the_lost_attempt_finished(
    ray_instance: Any, zoo_run: dict[str, Any], tmp_path: Path
) -> None:
    """A worker dies after finishing some images of its batch; the batch is redone elsewhere. The
    images it finished (their JSON written last, so complete) are reported done and not written
    again, as the README says. Here the lost attempt's work is laid down by hand while the last
    batches still wait in the workers' queues, then every worker is killed."""
    ray = ray_instance
    out = tmp_path / "ray"
    local_files = per_image_outputs(zoo_run["local"])
    last_two = sorted(name.removesuffix(".json") for name in local_files if name.endswith(".json"))
    finished: dict[Path, int] = {}

    def lose_the_workers(actors: Sequence[Any]) -> None:
        if finished:
            return
        for stem in last_two[-2:]:
            for suffix in (".png", "_overlay.jpg", "_conf.png", ".json"):  # JSON last, as written
                target = out / f"{stem}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(local_files[f"{stem}{suffix}"])
                finished[target] = target.stat().st_ino
        pids = ray.get([a.pid.options(concurrency_group=CONTROL_GROUP).remote() for a in actors])
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    summary = segment_on_ray(zoo_run, out, on_batch_done=lose_the_workers)

    zoo = zoo_run["zoo"]
    assert finished
    rewritten = [str(p) for p, inode in finished.items() if p.stat().st_ino != inode]
    assert rewritten == [], "a redone batch wrote over what the lost attempt had finished"
    assert (summary.done, summary.failed) == (len(zoo.sizes), len(zoo.failing))
    assert per_image_outputs(out) == local_files
    assert hidden_leftovers(out) == []


def test_eval_on_ray_with_label_conventions_and_suffixes_equals_local_eval(
    ray_instance: Any, eval_folders: dict[str, Path], tmp_path: Path
) -> None:
    """``--reduce-zero-label``, ``--ignore-index`` and the name suffixes reach the Ray workers: the
    report equals the local one, and differs from the report without ``--reduce-zero-label``
    (so the option is not lost on either engine). Through the CLI, images and saved masks."""
    rng = np.random.default_rng(5)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for path in sorted(eval_folders["gt"].rglob("*.png")):
        key = path.relative_to(eval_folders["gt"]).with_suffix("").as_posix()
        shape = np.asarray(Image.open(path)).shape
        gt = rng.integers(0, 4, size=shape)
        gt[rng.random(shape) < 0.1] = 200  # the ignore index given below
        write_label(gt_dir / f"{key}_gt.png", gt)
        write_label(pred_dir / f"{key}_mask.png", rng.integers(0, 3, size=shape))
    conventions = ["--gt", gt_dir, "--gt-suffix", "_gt", "--ignore-index", "200"]
    sources = {
        "images": [
            "--images",
            eval_folders["images"],
            "--vocab",
            eval_folders["vocab"],
            *cli_options(TINY_CLI | WINDOWS | {"batch_size": 1}),
        ],
        "pred": ["--pred", pred_dir, "--pred-suffix", "_mask", "--num-classes", "3"],
    }
    for source, args in sources.items():
        reports = {}
        for name, extra in (
            ("local", ["--reduce-zero-label"]),
            ("ray", ["--reduce-zero-label", "--engine", "ray", "--workers", "2"]),
            ("local-plain", ["--num-classes", "4"] if source == "pred" else []),
        ):
            reports[name] = tmp_path / f"{source}-{name}.json"
            argv = [*args, *conventions, *extra, "--json", reports[name], "-q"]
            with torch_threads(1):
                assert main(["eval", *map(str, argv)]) == 0, (source, name)
        local, on_ray, plain = (read_json(reports[n]) for n in ("local", "ray", "local-plain"))
        ray_config = on_ray.pop("config")
        assert ray_config.pop("engine")["name"] == "ray"
        assert ray_config == local.pop("config")
        assert ray_config["reduce_zero_label"] is True and ray_config["ignore_index"] == 200
        assert on_ray == local, source
        assert on_ray["num_images"] == 7
        assert (on_ray["mIoU"], on_ray["aAcc"]) != (plain["mIoU"], plain["aAcc"]), source
