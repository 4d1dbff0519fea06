"""Scratch buffers reused across images: same results as fresh ones, never shared by threads."""

import threading

import torch

from scclip_cli.config import ProtocolConfig
from scclip_cli.maps.postprocess import labels_from_scores
from scclip_cli.maps.sliding_window import WindowCanvas, windows
from scclip_cli.maps.workspace import Workspace


def test_a_buffer_is_reused_until_its_shape_changes():
    work = Workspace()
    first = work.empty("canvas", (4, 5, 3))
    assert work.empty("canvas", (4, 5, 3)).data_ptr() == first.data_ptr()
    other = work.empty("canvas", (4, 6, 3))
    assert other.shape == (4, 6, 3)
    assert work.empty("tile", (4, 6, 3)).data_ptr() != other.data_ptr()  # names never share
    assert work.empty("canvas", (4, 6, 3), channels_last=False).is_contiguous()


def test_threads_get_their_own_buffers():
    work = Workspace()
    mine = work.empty("canvas", (8,))
    theirs: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: theirs.append(work.empty("canvas", (8,))))
    thread.start()
    thread.join()
    assert theirs[0].data_ptr() != mine.data_ptr()


def test_a_shared_workspace_hands_every_thread_the_same_buffers():
    work = Workspace(per_thread=False)  # the Segmenter's: its threads take turns
    mine = work.empty("canvas", (8,))
    theirs: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: theirs.append(work.empty("canvas", (8,))))
    thread.start()
    thread.join()
    assert theirs[0].data_ptr() == mine.data_ptr()
    assert len(work.held()) == 1


def _segment(patches, query_class, protocol, workspace):
    ws = windows(150, 200, 112, 56)
    canvas = WindowCanvas(patches.shape[-1], 150, 200, torch.device("cpu"), workspace)
    for window, scores in zip(ws, patches, strict=True):
        canvas.add_patches(window, scores)
    return labels_from_scores(canvas, 301, 397, query_class, 3, protocol, 7 * 3000, workspace)


def test_reused_buffers_change_no_output():
    """Image after image through one workspace (stale canvases, tiles and chunks from the image
    before) gives what fresh buffers give, bit for bit."""
    g = torch.Generator().manual_seed(3)
    query_class = torch.tensor([0, 1, 1, 2, 0, 2, 1])
    protocol = ProtocolConfig(logit_scale=40, prob_threshold=0.2, area_threshold=0.05)
    work = Workspace()
    for _ in range(3):
        patches = torch.randn(len(windows(150, 200, 112, 56)), 7, 7, 7, generator=g) * 0.1
        shared = _segment(patches, query_class, protocol, work)
        fresh = _segment(patches, query_class, protocol, None)
        assert shared.labels.dtype == torch.int32
        assert torch.equal(shared.labels, fresh.labels)
        assert torch.equal(shared.confidence, fresh.confidence)


def test_a_large_vocabulary_reuses_every_buffer():
    """Every buffer survives from one image to the next with 1000 queries (eight query groups
    share one upsampling buffer), so no image pays for fresh allocations."""
    work = Workspace()
    ws = windows(40, 40, 32, 16)
    patches = torch.zeros(len(ws), 2, 2, 1000)

    def build() -> list[int]:
        canvas = WindowCanvas(1000, 40, 40, torch.device("cpu"), work)
        for window, scores in zip(ws, patches, strict=True):
            canvas.add_patches(window, scores)
        canvas.rows(0, 1)
        return sorted(t.data_ptr() for t in work.held())

    first = build()
    # the canvas and the upsampling buffer at least: a canvas that stops asking the workspace for
    # its buffers holds none, and "the same empty set twice" must not pass
    assert len(first) >= 2
    assert build() == first
