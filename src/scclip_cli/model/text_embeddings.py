"""Query embeddings of a vocabulary, and their ``.npz`` cache.

Each query (synonym) is embedded as the reference does: its name in every template, through the
text tower, each template's embedding L2-normalised, averaged over templates, normalised again. All
``Q × T`` texts go through the tower in batches. The tower runs in the model's dtype (float16 on
CUDA, as the paper's code); the outputs are normalised and averaged in float32.

A cache (written by ``scclip vocab``) is an ``.npz`` without pickles::

    class_names  [K] str        queries      [Q] str
    query_class  [Q] int64      features     [Q, D] float32, rows L2-normalised
    model, pretrained, weights_sha256?, templates, templates_sha256, scclip_version: str scalars

It records which model and weights made it; loading it for another model is refused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED
from scclip_cli.errors import ModelLoadError, UsageError, VocabularyError
from scclip_cli.files.prompt_templates import (
    OPENAI_IMAGENET_TEMPLATES,
    check_templates,
    fill_template,
    read_templates,
    templates_id,
    templates_sha256,
)
from scclip_cli.files.vocabulary import Vocabulary, parse_vocabulary, read_vocabulary

if TYPE_CHECKING:
    from scclip_cli.model.loading import LoadedClip

CACHE_SUFFIX = ".npz"
CACHE_FORMAT = "scclip-query-embeddings/1"
_DATA_KEYS = ("class_names", "query_class", "features", "queries")
_FORMAT_KEY = "scclip_format"
DEFAULT_TEXT_BATCH = 256
"""Texts per forward pass of the text tower."""


@dataclass(frozen=True, eq=False)
class QueryEmbeddings:
    """Text embeddings of every query of a vocabulary (``K`` classes, ``Q`` queries, width ``D``)."""

    class_names: tuple[str, ...]
    """[K] display names."""
    query_class: np.ndarray
    """[Q] int64 class index of each query, in 0..K-1."""
    features: np.ndarray
    """[Q, D] float32, rows L2-normalised."""
    identity: dict[str, str]
    """The model identity (``LoadedClip.identity``) plus ``templates``, ``templates_sha256`` and
    ``scclip_version``; empty for embeddings made by hand."""
    queries: tuple[str, ...] = ()
    """[Q] synonym strings (may be empty for embeddings made by hand)."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Non-fatal vocabulary issues (duplicate names); not stored in the cache."""

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        query_class = np.asarray(self.query_class)
        if features.ndim != 2 or query_class.shape != (features.shape[0],):
            raise VocabularyError(
                f"query embeddings need features [Q, D] and query_class [Q], got "
                f"{features.shape} and {query_class.shape}"
            )
        if self.queries and len(self.queries) != features.shape[0]:
            raise VocabularyError(
                f"{len(self.queries)} query names for {features.shape[0]} feature rows"
            )
        if query_class.size and (
            query_class.min() < 0 or query_class.max() >= len(self.class_names)
        ):
            raise VocabularyError(f"query_class values must be in 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_queries(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


# ---------------------------------------------------------------------------- embedding
def _scclip_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scclip-cli")
    except PackageNotFoundError:
        return "unknown"


def _trimmable(model) -> bool:
    """Whether ``model``'s text tower is open_clip's causal CLIP tower pooled at the EOT token.

    Then the tokens after a text's EOT cannot change its embedding (causal attention), and the
    padding can be cut from a batch without changing the result beyond float rounding.
    """
    import torch
    from open_clip.model import CLIP

    if not isinstance(model, CLIP) or model.text_pool_type != "argmax":
        return False
    mask = getattr(model, "attn_mask", None)
    if mask is None or mask.ndim != 2:
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def _encode_text_prefix(model, tokens):
    """``CLIP.encode_text`` on the first ``n`` token positions only: ``[B, n] -> [B, D]``.

    The same steps as open_clip's ``CLIP.encode_text`` (token + positional embedding, causal
    transformer, ``ln_final``, the EOT token, ``text_projection``), with the positional embedding and
    causal mask cut to ``n`` and QuickGELU in one pass (:mod:`scclip_cli.model.block_forward`). Only
    valid when :func:`_trimmable` holds and every EOT is within ``n``.
    """
    import torch

    from scclip_cli.model.block_forward import transformer_forward

    n = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [B, n, W]
    x = x + model.positional_embedding[:n].to(cast_dtype)
    x = transformer_forward(model.transformer, x, model.attn_mask[:n, :n])  # QuickGELU fused
    x = model.ln_final(x)  # [B, n, W]
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # [B, W] at EOT
    projection: Any = model.text_projection  # Parameter [W, D] or Linear
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def encode_texts(clip: LoadedClip, tokens, batch_size: int = DEFAULT_TEXT_BATCH):
    """``[N, D]`` float32 L2-normalised text embeddings of ``tokens`` (``[N, context]`` int64).

    Runs in batches of ``batch_size`` under ``inference_mode``. For open_clip's causal CLIP text
    tower, texts are batched by length and each batch is cut after its longest text's EOT token,
    which skips the padding (the result equals ``encode_text`` up to float rounding).
    """
    import torch

    if batch_size < 1:
        raise UsageError("text batch size must be at least 1")
    if not clip.has_text_tower:
        raise ModelLoadError(
            "this model's text tower was released after its vocabulary was embedded; "
            "load the model again to embed other texts"
        )
    model: Any = clip.model
    trim = _trimmable(model)
    lengths = tokens.argmax(dim=-1) + 1  # [N] position of EOT + 1
    order = torch.argsort(lengths, stable=True) if trim else torch.arange(tokens.shape[0])
    out = torch.empty(tokens.shape[0], clip.output_dim, dtype=torch.float32, device=clip.device)
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            index = order[start : start + batch_size]
            batch = tokens[index]
            if trim:
                batch = batch[:, : int(lengths[index].max())]
                features = _encode_text_prefix(model, batch.to(clip.device))
            else:
                features = model.encode_text(batch.to(clip.device))
            features = features.float()  # [b, D]
            out[index.to(clip.device)] = features / features.norm(dim=-1, keepdim=True)
    return out


def encode_queries(
    clip: LoadedClip,
    queries: Sequence[str],
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = DEFAULT_TEXT_BATCH,
):
    """``[Q, D]`` float32 torch tensor on ``clip.device``: the template-averaged query embeddings.

    Per query: ``normalise(mean_t(normalise(encode_text(template_t(query)))))``.
    """
    import torch

    templates = check_templates(templates)
    texts = [fill_template(t, q) for q in queries for t in templates]  # [Q·T], query-major
    tokens = clip.tokenizer(texts)  # [Q·T, context] int64
    per_text = encode_texts(clip, tokens, batch_size)  # [Q·T, D]
    with torch.inference_mode():
        mean = per_text.reshape(len(queries), len(templates), -1).mean(dim=1)  # [Q, D]
        return mean / mean.norm(dim=-1, keepdim=True)


def embed_vocabulary(
    clip: LoadedClip,
    vocabulary: Vocabulary,
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = DEFAULT_TEXT_BATCH,
) -> QueryEmbeddings:
    """Embed every query of ``vocabulary`` with ``clip``'s text tower (see module docstring).

    Args:
        templates: format strings with one ``{}``; default the 80 OpenAI ImageNet templates.
        batch_size: texts per forward pass (``Q × T`` texts in all).

    Returns:
        :class:`QueryEmbeddings` with ``features`` ``[Q, D]`` float32 (unit rows).
    """
    templates = check_templates(templates)
    features = encode_queries(clip, vocabulary.queries, templates, batch_size)
    identity = dict(clip.identity)
    identity.update(
        templates=templates_id(templates),
        templates_sha256=templates_sha256(templates),
        scclip_version=_scclip_version(),
    )
    return QueryEmbeddings(
        class_names=vocabulary.class_names,
        query_class=np.asarray(vocabulary.query_class, dtype=np.int64),
        features=features.cpu().numpy().astype(np.float32, copy=False),
        identity=identity,
        queries=vocabulary.queries,
        warnings=vocabulary.warnings,
    )


# ---------------------------------------------------------------------------- cache
def embeddings_to_npz(emb: QueryEmbeddings) -> bytes:
    """``emb`` as the bytes of an ``.npz`` cache (no pickles; see the module docstring)."""
    import io

    reserved = {*_DATA_KEYS, _FORMAT_KEY}
    clash = sorted(set(emb.identity) & reserved)
    if clash:
        raise VocabularyError(f"identity keys {clash} clash with the cache's data keys")
    arrays: dict[str, np.ndarray] = {
        "class_names": np.asarray(emb.class_names, dtype=np.str_),
        "query_class": np.asarray(emb.query_class, dtype=np.int64),
        "features": np.asarray(emb.features, dtype=np.float32),
        "queries": np.asarray(emb.queries, dtype=np.str_),
        _FORMAT_KEY: np.asarray(CACHE_FORMAT),
    }
    arrays.update({key: np.asarray(str(value)) for key, value in emb.identity.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def save_embeddings(emb: QueryEmbeddings, path: str | Path) -> None:
    """Write ``emb`` to ``path`` (``.npz``, no pickles) atomically: a temp file, then a rename."""
    path = Path(path)
    if path.suffix.lower() != CACHE_SUFFIX:
        raise UsageError(f"an embedding cache must end with {CACHE_SUFFIX}, got {path}")
    data = embeddings_to_npz(emb)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("xb") as handle:  # created with the umask's permissions
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _weights_label(identity: Mapping[str, str]) -> str:
    return identity.get("pretrained", "?")


def check_cache_identity(
    cache: Mapping[str, str], expected: Mapping[str, str], source: str | Path
) -> None:
    """Raise :class:`VocabularyError` unless the cache was made by the model and weights expected.

    Compares ``model`` and the weights: ``weights_sha256`` when either side has one (local files,
    wherever they live), else the ``pretrained`` tag / ``random:SEED``. Templates may differ.
    """
    if not expected.get("model"):
        return
    if not cache.get("model"):
        raise VocabularyError(
            f"embedding cache {source} does not record which model made it; remake it with "
            "'scclip vocab'"
        )
    same_model = cache.get("model") == expected.get("model")
    if "weights_sha256" in cache or "weights_sha256" in expected:
        same_weights = cache.get("weights_sha256") == expected.get("weights_sha256")
    else:
        same_weights = cache.get("pretrained") == expected.get("pretrained")
    if same_model and same_weights:
        return
    detail = ""
    if not same_weights and _weights_label(cache) == _weights_label(expected):
        detail = (
            f" (file contents differ: sha256 {cache.get('weights_sha256', '?')[:12]} vs "
            f"{expected.get('weights_sha256', '?')[:12]})"
        )
    raise VocabularyError(
        f"embedding cache {source} was made with model {cache.get('model')} / weights "
        f"{_weights_label(cache)}, but this run uses model {expected.get('model')} / weights "
        f"{_weights_label(expected)}{detail}; remake it with 'scclip vocab CLASSES.txt --out "
        f"{Path(source).name}' and this run's --model / --pretrained"
    )


def load_embeddings(
    path: str | Path, expect_identity: Mapping[str, str] | None = None
) -> QueryEmbeddings:
    """Read a cache written by :func:`save_embeddings` (``allow_pickle=False``).

    With ``expect_identity`` (a ``LoadedClip.identity``), a cache made with another model or other
    weights is refused (:class:`VocabularyError` naming both).
    """
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"embedding cache {path} not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise VocabularyError(f"cannot read embedding cache {path}: {err}") from None
    return embeddings_from_npz(data, path, expect_identity)


def embeddings_from_npz(
    data: bytes, source: str | Path, expect_identity: Mapping[str, str] | None = None
) -> QueryEmbeddings:
    """:class:`QueryEmbeddings` from the bytes of an ``.npz`` cache (``source`` names it in
    errors); see :func:`load_embeddings`.

    Raises:
        VocabularyError: not a readable cache, or (with ``expect_identity``) another model's.
    """
    import io
    import zipfile

    path = source
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VocabularyError(
            f"{path} is not a readable embedding cache (an .npz made by 'scclip vocab'): {err}"
        ) from None
    missing = [key for key in _DATA_KEYS if key not in arrays]
    if missing:
        raise VocabularyError(
            f"{path} is not an embedding cache made by 'scclip vocab' (missing {', '.join(missing)})"
        )
    features = arrays["features"]
    query_class = arrays["query_class"]
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise VocabularyError(f"{path}: features must be a [Q, D] float array")
    if not np.issubdtype(query_class.dtype, np.integer):
        raise VocabularyError(f"{path}: query_class must be integers")
    if not np.isfinite(features).all():
        raise VocabularyError(f"{path}: features contain NaN or infinity")
    identity = {
        key: str(value)
        for key, value in arrays.items()
        if key not in _DATA_KEYS and key != _FORMAT_KEY and value.ndim == 0
    }
    if expect_identity is not None:
        check_cache_identity(identity, expect_identity, path)
    return QueryEmbeddings(
        class_names=tuple(str(name) for name in arrays["class_names"]),
        query_class=query_class.astype(np.int64),
        features=features.astype(np.float32),
        identity=identity,
        queries=tuple(str(q) for q in arrays["queries"]),
    )


# ---------------------------------------------------------------------------- user cache
TEXT_CACHE_FOLDER = "text"
"""Subfolder of the user's cache folder that holds cached query embeddings."""
EMBEDDING_ALGORITHM = "template-mean/1"
"""Part of every cache key: changes when the way queries are embedded changes."""


class EmbeddingCache:
    """Query embeddings cached in the user's cache folder (``<folder>/text``), keyed by the model
    identity, its dtype and device type, the vocabulary's content and the templates.

    A damaged entry is recomputed (:mod:`scclip_cli.files.cache_store` checks every read).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        from scclip_cli.files.cache_store import CacheStore, default_cache_dir

        root = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.store = CacheStore(root / TEXT_CACHE_FOLDER)

    @staticmethod
    def key(clip: LoadedClip, vocabulary: Vocabulary, templates: Sequence[str]) -> str:
        from scclip_cli.files.cache_store import key_of

        return key_of(
            {
                "format": CACHE_FORMAT,
                "algorithm": EMBEDDING_ALGORITHM,
                "identity": dict(clip.identity),
                "dtype": str(clip.dtype),
                "device": clip.device.type,
                "class_names": list(vocabulary.class_names),
                "queries": list(vocabulary.queries),
                "query_class": [int(k) for k in vocabulary.query_class],
                "templates": list(templates),
            }
        )

    def embed(
        self,
        clip: LoadedClip,
        vocabulary: Vocabulary,
        templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
        batch_size: int = DEFAULT_TEXT_BATCH,
    ) -> QueryEmbeddings:
        """:func:`embed_vocabulary`, read from the cache when this model embedded this vocabulary
        with these templates before (then the text tower does not run)."""
        import dataclasses

        templates = check_templates(templates)
        key = self.key(clip, vocabulary, templates)
        data = self.store.get(key)
        if data is not None:
            try:
                emb = embeddings_from_npz(data, self.store.path_for(key), clip.identity)
            except VocabularyError:
                emb = None  # unreadable despite its checksum: recompute it
            if emb is not None and emb.dim == clip.output_dim:
                return dataclasses.replace(emb, warnings=vocabulary.warnings)
        emb = embed_vocabulary(clip, vocabulary, templates, batch_size)
        self.store.put(key, embeddings_to_npz(emb))
        return emb


# ---------------------------------------------------------------------------- entry points
def _is_cache_path(vocab: str | Path) -> bool:
    return Path(vocab).suffix.lower() == CACHE_SUFFIX


def vocabulary_class_names(vocab: str | Path | list[str] | QueryEmbeddings) -> tuple[str, ...]:
    """The class names ``vocab`` gives, without a model: read from a ``.txt`` class list, a list
    of class lines or an ``.npz`` cache (not checked against any model here).

    Raises:
        VocabularyError: the file is missing or not a valid class list or cache.
    """
    if isinstance(vocab, QueryEmbeddings):
        return tuple(vocab.class_names)
    if isinstance(vocab, list | tuple):
        return parse_vocabulary(list(vocab)).class_names
    if _is_cache_path(vocab):
        return tuple(load_embeddings(vocab).class_names)
    return read_vocabulary(vocab).class_names


def load_vocabulary_embeddings(
    vocab: str | Path | list[str],
    clip: LoadedClip,
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = DEFAULT_TEXT_BATCH,
    cache: EmbeddingCache | None = None,
) -> QueryEmbeddings:
    """Query embeddings for ``clip`` from a class list or a cache.

    ``vocab``: a ``.txt`` class list (embedded now, or read from ``cache`` when given and this
    model embedded it before), a list of class lines (``["background", "cat, kitten"]``), or an
    ``.npz`` cache (checked against ``clip.identity`` and its dimension).
    """
    embed = embed_vocabulary if cache is None else cache.embed
    if isinstance(vocab, list | tuple):
        return embed(clip, parse_vocabulary(list(vocab)), templates, batch_size)
    if _is_cache_path(vocab):
        emb = load_embeddings(vocab, expect_identity=clip.identity)
        if emb.dim != clip.output_dim:
            raise VocabularyError(
                f"embedding cache {vocab} has dimension {emb.dim} but model "
                f"{clip.identity.get('model', clip.model_name)} outputs {clip.output_dim}"
            )
        return emb
    return embed(clip, read_vocabulary(vocab), templates, batch_size)


def embed_vocabulary_file(
    vocab_path: str | Path,
    out_path: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    pretrained: str = DEFAULT_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    templates: str | Path | Sequence[str] | None = None,
    batch_size: int = DEFAULT_TEXT_BATCH,
    clip: LoadedClip | None = None,
) -> QueryEmbeddings:
    """``scclip vocab``: embed a class list (or re-check a cache) and write an ``.npz`` cache.

    The vocabulary, templates and output name are checked before the model loads. ``clip``, when
    given, is used instead of loading ``model`` / ``pretrained``.

    Args:
        vocab_path: ``.txt`` class list, or an ``.npz`` cache to re-export after checking that
            this model made it.
        out_path: the cache to write (``.npz``).
        templates: a template file, a list of templates, or None for the 80 OpenAI templates.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != CACHE_SUFFIX:
        raise UsageError(f"--out must be an {CACHE_SUFFIX} file, got {out_path}")
    if templates is None:
        template_list: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES
    elif isinstance(templates, str | Path):
        template_list = read_templates(templates)
    else:
        template_list = check_templates(templates)

    cached: QueryEmbeddings | None = None
    vocabulary: Vocabulary | None = None
    if _is_cache_path(vocab_path):
        if templates is not None:
            raise UsageError(
                "--templates applies to a class list; an embedding cache is already embedded"
            )
        cached = load_embeddings(vocab_path)  # validate the file before the model loads
    else:
        vocabulary = read_vocabulary(vocab_path)

    if clip is None:
        from scclip_cli.model.loading import load_clip

        clip = load_clip(model, pretrained, device=device, precision=precision)
    if cached is not None:
        emb = load_vocabulary_embeddings(vocab_path, clip)
    else:
        assert vocabulary is not None
        emb = embed_vocabulary(clip, vocabulary, template_list, batch_size)
    save_embeddings(emb, out_path)
    return emb
