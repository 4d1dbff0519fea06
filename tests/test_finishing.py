"""Post-processing on a thread of its own beside the model: same results, in order, no leftovers."""

import threading

import numpy as np
import pytest
import torch

from scclip_cli.config import ProtocolConfig
from scclip_cli.segmenter import Segmenter
from scclip_cli.text_embeddings import QueryEmbeddings


@pytest.fixture
def segmenter(tiny_clip, golden_dir):
    golden = np.load(golden_dir / "proto_mosaic_336.npz")
    query_class = golden["query_class"].astype(np.int64)
    embeddings = QueryEmbeddings(
        class_names=tuple(f"class{i}" for i in range(int(query_class.max()) + 1)),
        query_class=query_class,
        features=golden["query_features"].astype(np.float32),
        identity={},
    )
    return Segmenter(tiny_clip, embeddings, ProtocolConfig(logit_scale=40), batch_size=2)


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(count)]


def test_post_processing_takes_one_thread_while_the_model_works(segmenter, monkeypatch):
    callers_threads = torch.get_num_threads()
    seen: list[tuple[int, int]] = []
    first_finished = threading.Event()
    finish = segmenter._finish

    def recording(job):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        first_finished.set()
        return finish(job)

    monkeypatch.setattr(segmenter, "_finish", recording)
    images = _images(5)

    def feed():
        yield from images[:2]  # the second image's first crop completes the first image
        assert first_finished.wait(timeout=60)  # the model is busy here, reading the input
        yield from images[2:]

    results = list(segmenter.segment_many(feed()))
    assert [r.labels.shape for r in results] == [im.shape[:2] for im in images]
    assert seen[0][0] != threading.get_ident() and seen[0][1] == 1  # beside the busy model
    assert seen[-1] == (threading.get_ident(), callers_threads)  # the model is done: the caller's
    finishers = {ident for ident, _ in seen} - {threading.get_ident()}
    assert len(finishers) == 1
    # the caller, and threads that start using torch later, keep their thread count
    assert torch.get_num_threads() == callers_threads
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [callers_threads]
    # the next call post-processes on the same thread (and so reuses its buffers)
    list(segmenter.segment_many(feed()))
    assert {ident for ident, _ in seen} - {threading.get_ident()} == finishers


def test_threaded_results_equal_finishing_on_the_calling_thread(segmenter):
    images = _images(4)
    callers_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the finisher's count, so that even the last bits agree
    try:
        threaded = list(segmenter.segment_many(images))
        inline = [segmenter._finish(job) for job in segmenter._scored_jobs(images)]
    finally:
        torch.set_num_threads(callers_threads)
    for a, b in zip(threaded, inline, strict=True):
        assert np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.confidence, b.confidence)


def test_a_failure_in_post_processing_reaches_the_caller(segmenter, monkeypatch):
    finish = segmenter._finish
    calls: list[int] = []

    def failing(job):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no room for the canvas")
        return finish(job)

    monkeypatch.setattr(segmenter, "_finish", failing)
    results = segmenter.segment_many(_images(4))
    assert next(results).labels.shape == (40, 50)
    with pytest.raises(MemoryError, match="no room"):
        next(results)
    assert len(list(segmenter.segment_many(_images(2)))) == 2  # the thread still works


def test_closing_early_leaves_no_work_running(segmenter, monkeypatch):
    from scclip_cli.segmenter import MAX_FINISHING

    finish = segmenter._finish
    started: list[int] = []

    def counting(job):
        started.append(1)
        return finish(job)

    monkeypatch.setattr(segmenter, "_finish", counting)
    results = segmenter.segment_many(_images(8))
    next(results)
    results.close()
    count = len(started)
    assert count <= 2 + MAX_FINISHING
    threading.Event().wait(0.3)
    assert len(started) == count  # cancelled, not finished in the background
