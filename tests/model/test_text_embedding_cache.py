"""Query embeddings cached in the user's cache folder."""

import numpy as np
import pytest

from scclip_cli.model import text_embeddings
from scclip_cli.model.loading import DeferredClip
from scclip_cli.model.text_embeddings import EmbeddingCache, load_vocabulary_embeddings

TEMPLATES = ("a photo of a {}.", "a {} in a scene.")
LINES = ["background", "cat, kitten", "dog"]


@pytest.fixture
def counted(monkeypatch):
    """Counts the text-tower runs."""
    calls = []
    real = text_embeddings.encode_texts

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(text_embeddings, "encode_texts", counting)
    return calls


def test_second_embedding_reads_the_cache(tiny_clip, counted, user_cache_dir):
    first = load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=EmbeddingCache())
    second = load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=EmbeddingCache())
    assert len(counted) == 1
    assert second.features.tobytes() == first.features.tobytes()
    assert second.class_names == first.class_names and second.queries == first.queries
    assert np.array_equal(second.query_class, first.query_class)
    assert list((user_cache_dir / "text").rglob("*.bin"))  # under $XDG_CACHE_HOME/scclip


def test_vocabulary_or_templates_change_misses(tiny_clip, counted, tmp_path):
    cache = EmbeddingCache(tmp_path)
    load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=cache)
    load_vocabulary_embeddings([*LINES, "bird"], tiny_clip, TEMPLATES, cache=cache)
    load_vocabulary_embeddings(["background", "cat", "dog"], tiny_clip, TEMPLATES, cache=cache)
    load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES[:1], cache=cache)
    assert len(counted) == 4
    load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=cache)
    assert len(counted) == 4


def test_another_model_misses(tiny_clip, counted, tmp_path):
    from scclip_cli.model.loading import load_clip

    cache = EmbeddingCache(tmp_path)
    load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=cache)
    other = load_clip("scclip-tiny", "random:8", device="cpu")
    emb = load_vocabulary_embeddings(LINES, other, TEMPLATES, cache=cache)
    assert len(counted) == 2
    assert emb.identity["pretrained"] == "random:8"


def test_damaged_entry_is_recomputed(tiny_clip, counted, tmp_path):
    cache = EmbeddingCache(tmp_path)
    first = load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=cache)
    (entry,) = (tmp_path / "text").rglob("*.bin")
    entry.write_bytes(entry.read_bytes()[:-10])
    again = load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES, cache=EmbeddingCache(tmp_path))
    assert len(counted) == 2
    assert again.features.tobytes() == first.features.tobytes()


def test_no_cache_writes_nothing(tiny_clip, user_cache_dir):
    load_vocabulary_embeddings(LINES, tiny_clip, TEMPLATES)
    assert not user_cache_dir.exists()


def test_deferred_clip_knows_the_model_without_loading_it(tiny_clip):
    deferred = DeferredClip("scclip-tiny", "random:7", "cpu")
    assert deferred.identity == tiny_clip.identity
    assert (deferred.depth, deferred.output_dim, deferred.dtype, deferred.device) == (
        tiny_clip.depth,
        tiny_clip.output_dim,
        tiny_clip.dtype,
        tiny_clip.device,
    )
    assert not deferred.is_loaded
    assert deferred.visual is deferred.load().visual and deferred.is_loaded
    assert not deferred.load().has_text_tower


def test_native_bfloat16_flags_and_precision_reason(tmp_path, monkeypatch):
    from scclip_cli.model import loading

    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert loading.cpu_bfloat16_support(info) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert loading.cpu_bfloat16_support(info) == ()
    assert loading.cpu_bfloat16_support(tmp_path / "missing") == ()
    assert loading.precision_reason("bfloat16", "cpu") == "asked for: --precision bfloat16"
    monkeypatch.setattr(loading, "cpu_bfloat16_support", lambda: ())
    assert "no native bfloat16" in loading.precision_reason("auto", "cpu")
    monkeypatch.setattr(loading, "cpu_bfloat16_support", lambda: ("amx_bf16",))
    assert "amx_bf16" in loading.precision_reason("auto", "cpu")
