"""Post-processing split into parts that run at once: the same results, one intra-op thread each."""

import contextlib
import os
import signal
import threading
import time
from itertools import pairwise

import numpy as np
import pytest
import torch

from scclip_cli.config import ProtocolConfig
from scclip_cli.maps.parts import IN_ORDER, PartThreads, split_range
from scclip_cli.maps.postprocess import labels_from_scores
from scclip_cli.maps.sliding_window import WindowCanvas, channel_groups, channel_parts, windows
from scclip_cli.maps.workspace import Workspace
from scclip_cli.model.text_embeddings import QueryEmbeddings
from scclip_cli.predict.segmenter import Segmenter
from support.torch_threads import torch_threads


@pytest.fixture(scope="module")
def threads():
    runner = PartThreads(3)
    yield runner
    runner.close()


@pytest.mark.parametrize(
    ("start", "stop", "parts"), [(0, 10, 3), (5, 6, 4), (0, 512, 8), (3, 3, 2)]
)
def test_split_range_cuts_into_contiguous_near_equal_ranges(start, stop, parts):
    ranges = split_range(start, stop, parts)
    assert [r for pair in ranges for r in range(*pair)] == list(range(start, stop))
    sizes = [b - a for a, b in ranges]
    assert len(ranges) <= parts and all(size > 0 for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("channels", [1, 20, 64, 150, 300, 1000])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_channel_parts_keep_the_aligned_groups(channels, parts):
    plan = channel_parts(channels, parts)
    groups = [g for part in plan for g in part]
    assert groups[0][0] == 0 and groups[-1][1] == channels
    assert all(a == prev_b for (_, prev_b), (a, _) in pairwise(groups))
    # every group starts where an aligned block does, so each channel gets the same arithmetic
    starts = {a for a, _ in channel_groups(channels, 64)}
    assert all(a in starts for a, _ in groups)
    assert all(b - a < 128 + 64 for a, b in groups)  # a short remainder joins a group
    assert len(plan) == min(parts, len(channel_groups(channels, 64)))
    if parts == 1:
        assert plan == [channel_groups(channels)]


def test_part_threads_have_one_intra_op_thread_and_leave_the_callers_alone(threads):
    callers = torch.get_num_threads()
    seen = threads.run([lambda: (threading.get_ident(), torch.get_num_threads())] * 6)
    assert {count for _, count in seen} == {1}
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert torch.get_num_threads() == callers
    later: list[int] = []  # set_num_threads on any thread sets the default of later threads
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [callers]


def test_results_come_back_in_order_and_run_in_inference_mode(threads):
    assert threads.run([lambda i=i: (i, torch.is_inference_mode_enabled()) for i in range(7)]) == [
        (i, True) for i in range(7)
    ]


def test_a_failed_part_is_raised_only_when_no_part_runs(threads):
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    def failing() -> None:
        raise MemoryError("no room for the tile")

    with pytest.raises(MemoryError, match="no room"):
        threads.run([failing, slow])
    assert finished.is_set()  # nothing still writes into buffers the next image reuses
    assert threads.run([lambda: 1, lambda: 2]) == [1, 2]  # the threads still work


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_threads_of_its_own(threads):
    threads.run([lambda: 1, lambda: 2])  # the parent's threads are up
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: none of the parent's threads exist here
        signal.alarm(30)  # a hang kills the child, which fails the test
        try:
            os.write(write, bytes(threads.run([lambda: 3, lambda: 4])))
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 2) == bytes([3, 4]) and status == 0


def _canvas(patches, workspace):
    canvas = WindowCanvas(patches.shape[-1], 150, 200, torch.device("cpu"), workspace)
    for window, scores in zip(windows(150, 200, 112, 56), patches, strict=True):
        canvas.add_patches(window, scores)
    return canvas


@pytest.mark.parametrize("queries", [7, 150])
@pytest.mark.parametrize("tile_pixels", [2 * 397, 100])  # whole rows; parts of rows
def test_parts_change_no_output_bit(threads, queries, tile_pixels):
    """Rows, bands and query groups in parts (canvas build, best source query, tiles, the area
    rule's second pass) give what one part gives, bit for bit."""
    g = torch.Generator().manual_seed(5)
    query_class = torch.randint(0, 3, (queries,), generator=g)
    query_class[:3] = torch.arange(3)
    protocol = ProtocolConfig(logit_scale=40, prob_threshold=0.2, area_threshold=0.2)
    patches = torch.randn(len(windows(150, 200, 112, 56)), 7, 7, queries, generator=g) * 0.1
    results = []
    for runner in (IN_ORDER, PartThreads(2), threads):
        work = Workspace(per_thread=False)
        with torch_threads(1) if runner is IN_ORDER else contextlib.nullcontext():
            canvas = _canvas(patches, work)
            canvas.build(runner)
            average = canvas.rows(0, 150).clone()
            out = labels_from_scores(
                canvas, 301, 397, query_class, 3, protocol, queries * tile_pixels, work, runner
            )
        results.append((average, out))
    (average, first), rest = results[0], results[1:]
    for other_average, other in rest:
        assert torch.equal(other_average, average)
        assert torch.equal(other.labels, first.labels)
        assert torch.equal(other.confidence, first.confidence)
    assert len(set(first.labels.unique().tolist())) > 1  # a real test: several classes


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


def test_a_segmenter_post_processes_in_parts_with_the_same_results(segmenter, monkeypatch):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    callers = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert isinstance(Segmenter(segmenter.clip, segmenter.embeddings).parts, PartThreads)
    finally:
        torch.set_num_threads(callers)
    # The model runs on one intra-op thread in both runs, as each part does: matrix products on
    # one and on two threads may differ in their last bits on some CPUs, which is not under test.
    with torch_threads(1):
        segmenter.parts = PartThreads(2)
        in_parts = list(segmenter.segment_many(images))
        segmenter.parts = IN_ORDER
        in_order = list(segmenter.segment_many(images))
    for a, b in zip(in_parts, in_order, strict=True):
        assert np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.confidence, b.confidence)
