"""Query embeddings against the reference (golden), the trimmed text path, and the .npz cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scclip_cli.errors import UsageError, VocabularyError
from scclip_cli.files.vocabulary import parse_vocabulary, read_vocabulary
from scclip_cli.model.text_embeddings import (
    QueryEmbeddings,
    check_cache_identity,
    embed_vocabulary,
    embed_vocabulary_file,
    encode_texts,
    load_embeddings,
    load_vocabulary_embeddings,
    save_embeddings,
)

GOLDEN_ATOL = 2e-5


@pytest.fixture(scope="module")
def voc21(tiny_clip, golden_dir) -> QueryEmbeddings:
    return embed_vocabulary(tiny_clip, read_vocabulary(golden_dir / "voc21.txt"))


def test_voc21_embeddings_match_the_reference(voc21, golden_dir):
    golden = np.load(golden_dir / "text_voc21.npz")
    assert voc21.features.shape == (56, 64) and voc21.features.dtype == np.float32
    np.testing.assert_allclose(voc21.features, golden["query_features"], atol=GOLDEN_ATOL, rtol=0)
    np.testing.assert_array_equal(voc21.query_class, golden["query_class"])
    assert voc21.query_class.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(voc21.features, axis=1), 1.0, atol=1e-6)
    assert voc21.num_classes == 21 and voc21.queries[0] == "sky"


def test_identity_records_model_weights_and_templates(voc21, tiny_clip):
    identity = voc21.identity
    assert identity["model"] == "scclip-tiny" and identity["pretrained"] == "random:7"
    assert identity["templates"] == "openai-imagenet-80"
    assert len(identity["templates_sha256"]) == 64
    assert identity.items() >= tiny_clip.identity.items()


def test_custom_templates_follow_the_reference_arithmetic(tiny_clip):
    """normalise(mean over templates of normalise(encode_text)), computed here the slow way."""
    templates = ["a photo of a {}.", "{}", "a {} in a very long sentence about many things"]
    vocab = parse_vocabulary(["background", "cat, kitten"])
    emb = embed_vocabulary(tiny_clip, vocab, templates, batch_size=2)
    with torch.inference_mode():
        for row, query in enumerate(vocab.queries):
            tokens = tiny_clip.tokenizer([t.format(query) for t in templates])
            each = tiny_clip.model.encode_text(tokens)
            each = each / each.norm(dim=-1, keepdim=True)
            mean = each.mean(dim=0)
            np.testing.assert_allclose(emb.features[row], (mean / mean.norm()).numpy(), atol=1e-6)
    assert emb.identity["templates"] == "custom-3"
    assert list(emb.query_class) == [0, 1, 1]


def test_trimmed_batches_equal_encode_text(tiny_clip):
    texts = ["a", "a photo of a cat.", "word " * 120, "the sky over the sea", "a dog"]
    tokens = tiny_clip.tokenizer(texts)
    with torch.inference_mode():
        full = tiny_clip.model.encode_text(tokens)
        full = full / full.norm(dim=-1, keepdim=True)
    for batch_size in (1, 2, 5):
        trimmed = encode_texts(tiny_clip, tokens, batch_size=batch_size)
        torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=0)


def test_cache_round_trip_is_atomic_and_pickle_free(voc21, tmp_path: Path):
    path = tmp_path / "cache" / "voc21.npz"
    save_embeddings(voc21, path)
    save_embeddings(voc21, path)  # overwriting an existing cache is fine
    assert sorted(p.name for p in path.parent.iterdir()) == ["voc21.npz"]  # no temp files left
    with np.load(path, allow_pickle=False) as raw:
        assert raw["features"].dtype == np.float32 and raw["query_class"].dtype == np.int64
        assert raw["class_names"].dtype.kind == "U" and str(raw["model"]) == "scclip-tiny"
    loaded = load_embeddings(path, expect_identity=voc21.identity)
    np.testing.assert_array_equal(loaded.features, voc21.features)
    np.testing.assert_array_equal(loaded.query_class, voc21.query_class)
    assert loaded.class_names == voc21.class_names
    assert loaded.queries == voc21.queries
    assert loaded.identity == voc21.identity


def test_cache_made_by_other_weights_or_model_is_refused(voc21, tmp_path: Path):
    path = tmp_path / "voc21.npz"
    save_embeddings(voc21, path)
    other_seed = {"model": "scclip-tiny", "pretrained": "random:8"}
    with pytest.raises(
        VocabularyError,
        match=r"voc21\.npz was made with model scclip-tiny / weights random:7, but this run uses "
        r"model scclip-tiny / weights random:8",
    ):
        load_embeddings(path, expect_identity=other_seed)
    with pytest.raises(VocabularyError, match=r"model scclip-tiny .* model ViT-B-16-quickgelu"):
        load_embeddings(
            path, expect_identity={"model": "ViT-B-16-quickgelu", "pretrained": "random:7"}
        )


def test_file_weights_are_compared_by_content():
    made = {"model": "m", "pretrained": "/a/w.pt", "weights_sha256": "1" * 64}
    check_cache_identity(made, {**made, "pretrained": "/elsewhere/copy.pt"}, "c.npz")
    with pytest.raises(VocabularyError, match="file contents differ"):
        check_cache_identity(made, {**made, "weights_sha256": "2" * 64}, "c.npz")
    with pytest.raises(VocabularyError, match=r"weights /a/w\.pt, but .* weights openai"):
        check_cache_identity(made, {"model": "m", "pretrained": "openai"}, "c.npz")
    with pytest.raises(VocabularyError, match="does not record which model"):
        check_cache_identity({}, made, "c.npz")
    check_cache_identity({}, {}, "c.npz")  # nothing expected, nothing checked


def test_load_vocabulary_embeddings_from_list_txt_and_npz(voc21, tiny_clip, golden_dir, tmp_path):
    from_list = load_vocabulary_embeddings(["background", "cat, kitten"], tiny_clip)
    assert from_list.class_names == ("background", "cat") and from_list.features.shape == (3, 64)

    path = tmp_path / "voc21.npz"
    save_embeddings(voc21, path)
    cached = load_vocabulary_embeddings(path, tiny_clip)
    np.testing.assert_array_equal(cached.features, voc21.features)

    narrow = QueryEmbeddings(
        class_names=("a",),
        query_class=np.zeros(1, np.int64),
        features=np.ones((1, 32), np.float32) / np.sqrt(32),
        identity=dict(tiny_clip.identity),
    )
    save_embeddings(narrow, tmp_path / "narrow.npz")
    with pytest.raises(VocabularyError, match="dimension 32 but model scclip-tiny outputs 64"):
        load_vocabulary_embeddings(tmp_path / "narrow.npz", tiny_clip)


def test_broken_caches_are_refused(tmp_path: Path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(VocabularyError, match="not a readable embedding cache"):
        load_embeddings(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", features=np.zeros((2, 4), np.float32))
    with pytest.raises(VocabularyError, match="missing class_names, query_class, queries"):
        load_embeddings(tmp_path / "partial.npz")
    np.savez(
        tmp_path / "pickled.npz",
        class_names=np.array(["a"], dtype=object),
        query_class=np.zeros(1, np.int64),
        features=np.ones((1, 4), np.float32),
        queries=np.array(["a"]),
    )
    with pytest.raises(VocabularyError, match="not a readable embedding cache"):
        load_embeddings(tmp_path / "pickled.npz")
    with pytest.raises(VocabularyError, match="not found"):
        load_embeddings(tmp_path / "absent.npz")


def test_query_embeddings_validate_their_shapes():
    with pytest.raises(VocabularyError, match=r"features \[Q, D\] and query_class \[Q\]"):
        QueryEmbeddings(("a",), np.zeros(3, np.int64), np.zeros((2, 4), np.float32), {})
    with pytest.raises(VocabularyError, match=r"query_class values must be in 0\.\.0"):
        QueryEmbeddings(("a",), np.array([0, 1]), np.zeros((2, 4), np.float32), {})


def test_embed_vocabulary_file_checks_inputs_before_loading_the_model(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_text("background\n\ncat\n", encoding="utf-8")
    good = tmp_path / "good.txt"
    good.write_text("background\ncat\n", encoding="utf-8")
    never = {"model": "no-such-model", "pretrained": "random"}  # would fail if it were loaded
    with pytest.raises(VocabularyError, match="line 2 is empty"):
        embed_vocabulary_file(bad, tmp_path / "out.npz", **never)
    with pytest.raises(UsageError, match=r"--out must be an \.npz file"):
        embed_vocabulary_file(good, tmp_path / "out.txt", **never)
    with pytest.raises(VocabularyError, match=r"template file .* not found"):
        embed_vocabulary_file(good, tmp_path / "out.npz", templates=tmp_path / "none.txt", **never)
    assert not (tmp_path / "out.npz").exists()


def test_embed_vocabulary_file_writes_the_cache(tiny_clip, tmp_path: Path):
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat, kitten\n", encoding="utf-8")
    out = tmp_path / "classes.npz"
    emb = embed_vocabulary_file(vocab, out, clip=tiny_clip, templates=["a photo of a {}."])
    loaded = load_embeddings(out, expect_identity=tiny_clip.identity)
    np.testing.assert_array_equal(loaded.features, emb.features)
    assert loaded.identity["templates"] == "custom-1"
    with pytest.raises(UsageError, match="--templates applies to a class list"):
        embed_vocabulary_file(out, tmp_path / "copy.npz", clip=tiny_clip, templates=["{}"])
