"""``scclip vocab`` end to end: the cache it writes, its messages, and its exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scclip_cli.cli.app import main
from scclip_cli.errors import EXIT_USAGE

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
CLASSES = "background\ncat, kitten\ndog\n"


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text(CLASSES, encoding="utf-8")
    return path


def vocab_cli(*args: object) -> int:
    return main(["vocab", *(str(a) for a in args)])


def test_vocab_writes_a_cache_and_summarises_it(classes, tmp_path, capsys):
    out = tmp_path / "classes.npz"
    assert vocab_cli(classes, "--out", out, *TINY) == 0
    err = capsys.readouterr().err
    assert "3 classes, 4 queries, dim 64" in err
    assert "model scclip-tiny, weights random:7" in err
    with np.load(out, allow_pickle=False) as cache:
        assert list(cache["class_names"]) == ["background", "cat", "dog"]
        assert list(cache["queries"]) == ["background", "cat", "kitten", "dog"]
        assert cache["features"].shape == (4, 64)
        assert str(cache["pretrained"]) == "random:7"


def test_golden_vocabulary_through_the_cli(golden_dir, tmp_path, capsys):
    out = tmp_path / "voc21.npz"
    assert vocab_cli(golden_dir / "voc21.txt", "-o", out, *TINY) == 0
    golden = np.load(golden_dir / "text_voc21.npz")
    with np.load(out) as cache:
        np.testing.assert_allclose(cache["features"], golden["query_features"], atol=2e-5, rtol=0)
    assert "21 classes, 56 queries" in capsys.readouterr().err


def test_duplicates_are_warned_and_templates_file_is_used(tmp_path, capsys):
    vocab = tmp_path / "dups.txt"
    vocab.write_text("background, bed\nbed\n", encoding="utf-8")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nthe {}\n", encoding="utf-8")
    out = tmp_path / "dups.npz"
    assert vocab_cli(vocab, "--out", out, "--templates", templates, *TINY) == 0
    err = capsys.readouterr().err
    assert "scclip: warning:" in err and "'bed' appears on line 1 and line 2" in err
    with np.load(out) as cache:
        assert str(cache["templates"]) == "custom-2"


def test_missing_weights_offline_exit_2_with_advice(classes, tmp_path, capsys, offline_hub):
    out = tmp_path / "x.npz"
    code = vocab_cli(
        classes, "--out", out, "--model", "ViT-B-16", "--pretrained", "openai", "--device", "cpu"
    )
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert "scclip: error:" in captured.err
    assert "ViT-B-16" in captured.err and "'openai'" in captured.err
    assert "--pretrained /path/to/weights.pt" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_bad_vocabulary_exit_2_naming_the_line(tmp_path, capsys):
    vocab = tmp_path / "bad.txt"
    vocab.write_bytes(b"background\ncat\n\ndog\n")
    assert vocab_cli(vocab, "--out", tmp_path / "x.npz", *TINY) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"scclip: error: {vocab} line 3 is empty" in err
    assert "Traceback" not in err


def test_cache_from_other_weights_is_refused_and_same_weights_reexported(classes, tmp_path, capsys):
    cache = tmp_path / "classes.npz"
    assert vocab_cli(classes, "--out", cache, *TINY) == 0
    other = ["--model", "scclip-tiny", "--pretrained", "random:8", "--device", "cpu"]
    assert vocab_cli(cache, "--out", tmp_path / "copy.npz", *other) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "was made with model scclip-tiny / weights random:7" in err
    assert "this run uses model scclip-tiny / weights random:8" in err
    assert not (tmp_path / "copy.npz").exists()

    assert vocab_cli(cache, "--out", tmp_path / "copy.npz", *TINY) == 0
    with np.load(cache) as a, np.load(tmp_path / "copy.npz") as b:
        np.testing.assert_array_equal(a["features"], b["features"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "ViT-Q-99"], "open_clip.list_models()"),
        (["--model", "RN50"], "ResNet vision tower"),
        (["--precision", "float16"], "float16 is not supported on the CPU"),
        (["--pretrained", "random:x"], "seed must be a non-negative integer"),
    ],
)
def test_model_option_errors_exit_2(classes, tmp_path, capsys, extra, message):
    args = [*TINY, *extra]
    assert vocab_cli(classes, "--out", tmp_path / "x.npz", *args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_exit_2(classes, tmp_path, capsys):
    args = ["--model", "scclip-tiny", "--pretrained", "random", "--device", "cuda"]
    assert vocab_cli(classes, "--out", tmp_path / "x.npz", *args) == EXIT_USAGE
    assert "CUDA is not available" in capsys.readouterr().err


def test_out_must_be_npz(classes, tmp_path, capsys):
    assert vocab_cli(classes, "--out", tmp_path / "x.txt", *TINY) == EXIT_USAGE
    assert "--out must be an .npz file" in capsys.readouterr().err


def test_the_summary_names_the_weights_as_resolved(classes, tmp_path, capsys):
    out = tmp_path / "classes.npz"
    args = ["--model", "scclip-tiny", "--pretrained", "random", "--device", "cpu"]
    assert vocab_cli(classes, "--out", out, *args) == 0
    assert capsys.readouterr().err == (
        f"scclip: wrote {out}: 3 classes, 4 queries, dim 64 (model scclip-tiny, weights random:7)\n"
    )


def test_the_library_warnings_and_note_come_before_the_summary(
    classes, tmp_path, capsys, monkeypatch
):
    """A model name that open_clip runs another way (``ViT-B-16`` with OpenAI weights) comes back
    with a note and the model actually used; the summary names that model."""
    from types import SimpleNamespace

    from scclip_cli.model import text_embeddings

    note = "ViT-B-16 with 'openai' weights uses ViT-B-16-quickgelu (QuickGELU, as trained)"
    identity = {"model": "ViT-B-16-quickgelu", "pretrained": "openai", "note": note}
    made = SimpleNamespace(
        warnings=["'bed' appears twice"], identity=identity, num_classes=3, num_queries=4, dim=512
    )
    monkeypatch.setattr(text_embeddings, "embed_vocabulary_file", lambda *a, **k: made)
    out = tmp_path / "classes.npz"
    assert vocab_cli(classes, "--out", out, "--model", "ViT-B-16", "--pretrained", "openai") == 0
    assert capsys.readouterr().err.splitlines() == [
        "scclip: warning: 'bed' appears twice",
        f"scclip: note: {note}",
        f"scclip: wrote {out}: 3 classes, 4 queries, dim 512 "
        "(model ViT-B-16-quickgelu, weights openai)",
    ]
    made.identity = {}  # an older cache: the names asked for
    assert vocab_cli(classes, "--out", out, "--model", "ViT-B-16", "--pretrained", "openai") == 0
    assert capsys.readouterr().err.splitlines() == [
        "scclip: warning: 'bed' appears twice",
        f"scclip: wrote {out}: 3 classes, 4 queries, dim 512 (model ViT-B-16, weights openai)",
    ]
