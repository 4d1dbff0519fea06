"""Load an open_clip CLIP ViT for SC-CLIP: the only module that calls open_clip's factory.

``load_clip(model, pretrained, device, precision)`` resolves

* ``model``: an open_clip model name (``ViT-B-16-quickgelu``), a path to an open_clip model-config
  JSON (its file stem becomes the model name), or the built-in ``scclip-tiny`` test model;
* ``pretrained``: an open_clip tag (fetched through open_clip's download / Hugging Face cache, so
  cached weights work offline), a local checkpoint file (``.pt/.pth/.bin/.safetensors``, read
  without executing code from it), or ``random`` / ``random:SEED`` (:mod:`scclip_cli.model.random_weights`);

then refuses vision towers SC-CLIP cannot calibrate, and returns a :class:`LoadedClip`.

Weights a tag says were trained with QuickGELU (every OpenAI CLIP) get the ``-quickgelu`` config:
``ViT-B-16`` + ``openai`` builds ``ViT-B-16-quickgelu`` (see :func:`resolve_model_name`).

Precision: ``auto`` is float16 on CUDA (OpenAI's mixed precision, as the paper's code: linear and
attention weights in float16, LayerNorms in float32) and float32 on the CPU. ``bfloat16`` is
allowed on both; ``float16`` on the CPU is refused (slow and not what the paper ran).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED
from scclip_cli.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch

BUILTIN_CONFIG_DIR = Path(__file__).parent / "configs"
"""Model configs shipped with scclip (``scclip-tiny``), registered with open_clip on first use."""
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
"""File endings that make ``--pretrained`` a local checkpoint rather than a tag."""
RANDOM_PREFIX = "random"
JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
"""Constants OpenAI's TorchScript archives keep in their state dict."""
MAX_CAUSE_CHARS = 200
"""Longest underlying error text quoted in a download failure."""
LIST_MODELS_HINT = 'python -c "import open_clip; print(open_clip.list_models())"'

_PRECISIONS = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


TEXT_TOWER_ATTRIBUTES = (
    "transformer",
    "token_embedding",
    "positional_embedding",
    "ln_final",
    "text_projection",
    "attn_mask",
    "text",
)
"""Attributes of open_clip's ``CLIP`` (and ``CustomTextCLIP``: ``text``) that hold the text tower."""


@dataclass
class LoadedClip:
    """An open_clip CLIP ViT ready for SC-CLIP, with its tokenizer and where its weights came from."""

    model: torch.nn.Module
    """open_clip ``CLIP``, in eval mode, gradients off, on ``device``, weights in ``dtype``."""
    tokenizer: Callable[[list[str]], torch.Tensor]
    """Texts -> ``[N, context_length]`` int64 token ids (context length 77 for CLIP)."""
    model_name: str
    """The model as given (open_clip name or config path)."""
    pretrained: str
    """Tag (normalised), absolute file path, or ``random:SEED``."""
    device: torch.device
    dtype: torch.dtype
    """Dtype of the linear / attention weights; inputs are cast to it."""
    identity: dict[str, str] = field(default_factory=dict)
    """What made the weights: ``model`` (the open_clip config built), ``pretrained``, and for files
    ``weights_sha256``. Embedding caches are checked against it."""
    _text_released: bool = field(default=False, repr=False)

    @property
    def visual(self) -> Any:
        """The vision tower (open_clip ``VisionTransformer``)."""
        return self.model.visual

    @property
    def depth(self) -> int:
        """Number of vision transformer blocks."""
        return len(self.visual.transformer.resblocks)

    @property
    def patch_size(self) -> int:
        kernel = self.visual.conv1.kernel_size
        return int(kernel[0] if isinstance(kernel, tuple) else kernel)

    @property
    def width(self) -> int:
        """Vision transformer width ``W``."""
        return int(self.visual.transformer.width)

    @property
    def output_dim(self) -> int:
        """Embedding dimension ``D`` shared by image and text features."""
        return int(self.visual.proj.shape[1])

    @property
    def has_text_tower(self) -> bool:
        """Whether the text tower is loaded (see :meth:`release_text_tower`)."""
        return not self._text_released

    def release_text_tower(self) -> None:
        """Free the text tower's weights once the vocabulary is embedded: segmenting needs only the
        vision tower (this frees 242 MiB of ViT-B/16's 571 MiB of float32 weights). Embedding
        text afterwards raises :class:`ModelLoadError`."""
        for name in TEXT_TOWER_ATTRIBUTES:
            if hasattr(self.model, name):
                setattr(self.model, name, None)  # parameters, buffers and submodules alike
        self._text_released = True
        return_freed_memory()


def return_freed_memory() -> None:
    """Give freed heap memory back to the operating system, where the C library allows it.

    glibc keeps freed blocks in its heap for reuse: after loading (the checkpoint's copy of the
    weights) and releasing the text tower, about 300 MiB of ViT-B/16 would stay resident without
    ``malloc_trim``. A no-op elsewhere.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    trim(0)


# ---------------------------------------------------------------------------- device / dtype
def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU) | ``cpu`` | ``cuda`` | ``cuda:N``.

    Raises :class:`ModelLoadError` when CUDA is asked for but absent, or the index is out of range.
    """
    import torch

    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {device!r} was asked for but CUDA is not available to this PyTorch "
                f"(torch {torch.__version__}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if index_text and int(index_text) >= count:
            raise ModelLoadError(
                f"device {device!r} does not exist: this machine has {count} CUDA device(s)"
            )
        return torch.device(name)
    raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """``auto`` (float16 on CUDA, float32 on CPU) | ``float32`` | ``float16`` | ``bfloat16``.

    float16 on the CPU raises :class:`ConfigError` (use float32 or bfloat16 there).
    """
    import torch

    device_type = torch.device(device).type
    name = precision.strip().lower()
    if name == "auto":
        return torch.float16 if device_type == "cuda" else torch.float32
    if name not in _PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; use auto, float32, float16 or bfloat16"
        )
    dtype = getattr(torch, _PRECISIONS[name])
    if dtype == torch.float16 and device_type == "cpu":
        raise ConfigError(
            "float16 is not supported on the CPU (slow and inexact there); "
            "use --precision float32 or bfloat16"
        )
    return dtype


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of CPUs that compute bfloat16 matrix products natively."""


def cpu_bfloat16_support(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native bfloat16 flags (:data:`NATIVE_BF16_FLAGS`) this CPU reports; empty where it has
    none or the system does not say (no ``/proc/cpuinfo``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)


def precision_reason(precision: str, device: torch.device | str) -> str:
    """Why a run uses the dtype :func:`resolve_dtype` gives (recorded in ``summary.json``)."""
    import torch

    name = precision.strip().lower()
    if name != "auto":
        return f"asked for: --precision {name}"
    if torch.device(device).type == "cuda":
        return "auto: float16 on CUDA, as the paper's code"
    native = cpu_bfloat16_support()
    if not native:
        return "auto: float32 on the CPU (no native bfloat16 on this CPU)"
    return (
        f"auto: float32 on the CPU; this CPU has native bfloat16 ({', '.join(native)}) but auto "
        "does not choose it: its labels are not yet shown to agree with float32's on 99.5 % of "
        "stable pixels (docs/performance-cache.md); --precision bfloat16 uses it"
    )


# ---------------------------------------------------------------------------- names
@dataclass(frozen=True)
class _ModelPlan:
    name: str
    """open_clip config name that is built."""
    requested: str
    config_path: Path | None
    """Set when ``model`` was a config JSON path."""
    force_quick_gelu: bool = False
    note: str = ""
    """Why ``name`` differs from what was asked for."""


def _register_config_path(path: Path, config: dict[str, Any] | None = None) -> None:
    """Register a config file (or folder) with open_clip unless it already knows that config.

    A config file whose stem is a built-in name replaces the built-in for this process.
    """
    import open_clip

    if path.is_dir():
        stems = [p.stem for p in path.glob("*.json")]
        if all(stem in open_clip.list_models() for stem in stems):
            return
    elif open_clip.get_model_config(path.stem) == config:
        return
    open_clip.add_model_config(path.resolve())


def _is_config_path(model: str) -> bool:
    return model.strip().lower().endswith(".json")


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"model config file {path} not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"model config {path} is not readable JSON: {err}") from None
    required = ("embed_dim", "vision_cfg", "text_cfg")
    missing = [k for k in required if k not in config] if isinstance(config, dict) else []
    if not isinstance(config, dict) or missing:
        raise ModelLoadError(
            f"model config {path} is not an open_clip model config "
            f"({'missing ' + ', '.join(missing) if missing else 'not a JSON object'})"
        )
    return config


def _is_tag(pretrained: str) -> bool:
    """Whether ``pretrained`` names open_clip weights (not ``random[:SEED]``, not a file)."""
    from open_clip.pretrained import list_pretrained_models_by_tag

    text = pretrained.strip()
    if text.lower() == RANDOM_PREFIX or text.lower().startswith(RANDOM_PREFIX + ":"):
        return False
    if text.lower().endswith(WEIGHT_SUFFIXES) or os.sep in text or "/" in text:
        return False
    return bool(list_pretrained_models_by_tag(text)) or not os.path.isfile(text)


def _plan_model(model: str, pretrained: str) -> _ModelPlan:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    _register_config_path(BUILTIN_CONFIG_DIR)
    config_path: Path | None = None
    if _is_config_path(model):
        config_path = Path(model).expanduser()
        _register_config_path(config_path, _read_config_file(config_path))
        name = config_path.stem
    else:
        name = model.strip().replace("/", "-")  # "ViT-B/16" is open_clip's "ViT-B-16"
        if name not in open_clip.list_models():
            raise ModelLoadError(
                f"unknown model {model!r}; see the names open_clip knows with {LIST_MODELS_HINT}, "
                "or pass a path to an open_clip model-config JSON"
            )
    config = open_clip.get_model_config(name) or {}
    plan = _ModelPlan(name=name, requested=model, config_path=config_path)
    if not _is_tag(pretrained) or config.get("quick_gelu", False):
        return plan
    tag = pretrained.strip()
    if not get_pretrained_cfg(name, tag).get("quick_gelu", False):
        return plan
    quick = f"{name}-quickgelu"
    if quick in open_clip.list_models():
        note = f"{name} with {tag!r} weights uses {quick} (QuickGELU, as the weights were trained)"
        return _ModelPlan(quick, model, config_path, note=note)
    note = f"{name} with {tag!r} weights runs with QuickGELU (as the weights were trained)"
    return _ModelPlan(name, model, config_path, force_quick_gelu=True, note=note)


def resolve_model_name(model: str, pretrained: str) -> str:
    """The open_clip config that ``load_clip(model, pretrained)`` builds, without building it.

    A config path gives its file stem. Weights whose open_clip tag was trained with QuickGELU
    (``openai`` and a few others) get the ``-quickgelu`` variant when the name lacks it:
    ``resolve_model_name("ViT-B-16", "openai") == "ViT-B-16-quickgelu"``.
    Raises :class:`ModelLoadError` for an unknown name.
    """
    return _plan_model(model, pretrained).name


# ---------------------------------------------------------------------------- tower checks
def _check_tower_config(name: str, config: dict[str, Any]) -> None:
    """Refuse, before building, configs whose vision tower SC-CLIP cannot calibrate."""
    vision = config.get("vision_cfg", {})
    if isinstance(vision.get("layers"), list | tuple):
        raise ModelLoadError(
            f"model {name} has a ResNet vision tower; SC-CLIP calibrates the last attention block "
            "of a ViT. Use a ViT model (e.g. ViT-B-16-quickgelu)"
        )
    if vision.get("timm_model_name"):
        raise ModelLoadError(
            f"model {name} has a timm vision tower ({vision['timm_model_name']}); SC-CLIP needs "
            "open_clip's own VisionTransformer. Use e.g. ViT-B-16-quickgelu"
        )
    if vision.get("attentional_pool"):
        raise ModelLoadError(
            f"model {name} pools with attentional pooling; SC-CLIP needs the class-token ViT"
        )


def check_vision_tower(visual: torch.nn.Module, name: str = "this model") -> None:
    """Raise :class:`ModelLoadError` unless ``visual`` is a class-token ViT SC-CLIP can calibrate.

    Needs open_clip's ``VisionTransformer`` (no ResNet, no timm tower, no attentional pooling)
    whose blocks have ``ln_1`` and ``attn.in_proj_weight`` / ``attn.out_proj``, and a ``proj``.
    """
    import torch
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        raise ModelLoadError(
            f"{name} has a ResNet vision tower (ModifiedResNet); SC-CLIP needs a ViT"
        )
    if isinstance(visual, TimmModel):
        raise ModelLoadError(f"{name} has a timm vision tower; SC-CLIP needs a ViT")
    if not isinstance(visual, VisionTransformer):
        raise ModelLoadError(
            f"{name} has a {type(visual).__name__} vision tower; SC-CLIP needs open_clip's "
            "VisionTransformer"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ModelLoadError(
            f"{name} pools with attentional pooling; SC-CLIP needs the class-token ViT"
        )
    if not isinstance(getattr(visual, "proj", None), torch.Tensor):
        raise ModelLoadError(f"{name} has no vision projection (visual.proj); SC-CLIP needs one")
    for index, block in enumerate(visual.transformer.resblocks):
        attn = getattr(block, "attn", None)
        missing = [
            part
            for part, present in (
                ("ln_1", hasattr(block, "ln_1")),
                (
                    "attn.in_proj_weight",
                    isinstance(getattr(attn, "in_proj_weight", None), torch.Tensor),
                ),
                ("attn.out_proj", hasattr(attn, "out_proj")),
            )
            if not present
        ]
        if missing:
            raise ModelLoadError(
                f"{name}: vision block {index} lacks {', '.join(missing)}; SC-CLIP needs "
                "CLIP-style blocks (ln_1, attn.in_proj_weight, attn.out_proj)"
            )


# ---------------------------------------------------------------------------- weights
def parse_random_seed(pretrained: str) -> int | None:
    """``random`` -> 7, ``random:SEED`` -> SEED, anything else -> None."""
    from scclip_cli.model.random_weights import DEFAULT_SEED

    text = pretrained.strip().lower()
    if text == RANDOM_PREFIX:
        return DEFAULT_SEED
    if not text.startswith(RANDOM_PREFIX + ":"):
        return None
    seed_text = text.partition(":")[2]
    if not seed_text.isdigit():
        raise ModelLoadError(
            f"--pretrained {pretrained!r}: the seed must be a non-negative integer"
        )
    return int(seed_text)


_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised per (path, mtime, size) for this process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    if key not in _sha_memo:
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _sha_memo[key] = digest.hexdigest()
    return _sha_memo[key]


def _is_torchscript_archive(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, without executing code from it.

    ``.safetensors`` through safetensors; everything else through ``torch.load(weights_only=True)``
    (plain tensors and containers only: a pickle that would build other objects is refused). A
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a ``module.`` prefix are removed.
    OpenAI's original TorchScript archives are read with ``torch.jit.load``, which deserialises
    TorchScript (not Python) and is what open_clip itself uses for them.
    """
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} not found")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            checkpoint: Any = load_file(str(path), device="cpu")
        elif _is_torchscript_archive(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checkpoint = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in JIT_EXTRA_KEYS:
                checkpoint.pop(key, None)
        else:
            # Zip-format checkpoints (every torch.save since 1.6) are memory-mapped: the weights
            # are copied into the model straight from the page cache, with no second anonymous
            # copy of them in memory.
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except Exception as err:
        import pickle

        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
            raise ModelLoadError(
                f"refusing to load {path}: it contains Python objects other than tensors, and "
                "unpickling them could run code from the file. Save a plain state dict "
                "(torch.save(model.state_dict(), ...)) or a .safetensors file"
            ) from None
        if isinstance(err, pickle.UnpicklingError):
            first_line = "not a PyTorch checkpoint, or a damaged one"
        raise ModelLoadError(f"could not read weights file {path}: {first_line}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ModelLoadError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ModelLoadError(f"{path} holds values that are not tensors; expected a state dict")
    if all(str(k).startswith("module.") for k in checkpoint):
        checkpoint = {str(k)[len("module.") :]: v for k, v in checkpoint.items()}
    return {str(k): v for k, v in checkpoint.items()}


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly; mismatched keys or shapes -> ModelLoadError."""
    from open_clip.model import convert_to_custom_text_state_dict

    state_dict = dict(state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    logit_scale = getattr(model, "logit_scale", None)
    if logit_scale is not None and "logit_scale" in state_dict:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(logit_scale.shape)
    expected = model.state_dict()
    non_persistent = {name for name, _ in model.named_buffers()} - set(expected)
    state_dict = {k: v for k, v in state_dict.items() if k not in non_persistent}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k
        for k in set(expected) & set(state_dict)
        if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong_shape),
        ):
            if keys:
                shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                parts.append(f"{label}: {shown}")
        raise ModelLoadError(
            f"weights {source} do not fit this model ({'; '.join(parts)}); "
            "check --model matches the checkpoint"
        )
    model.load_state_dict(state_dict, strict=True)


def _download_tag(plan: _ModelPlan, tag: str, cache_dir: str | None) -> Path:
    from open_clip.pretrained import (
        download_pretrained,
        get_pretrained_cfg,
        list_pretrained_tags_by_model,
    )

    cfg = get_pretrained_cfg(plan.name, tag) or get_pretrained_cfg(
        plan.config_path.stem if plan.config_path else plan.requested, tag
    )
    if not cfg:
        known = list_pretrained_tags_by_model(plan.name) or list_pretrained_tags_by_model(
            plan.requested
        )
        choices = f"known tags: {', '.join(known)}" if known else "open_clip knows no tags for it"
        raise ModelLoadError(
            f"{tag!r} is neither a pretrained tag of model {plan.requested} ({choices}) nor a "
            "weights file; pass --pretrained /path/to/weights.pt for local weights"
        )
    from scclip_cli.model import weights_source

    source = (
        None if weights_source.offline_mode() else weights_source.weights_source(cfg, cache_dir)
    )
    if source is not None and not weights_source.host_reachable(source.url):
        # No network: huggingface_hub would retry each file with back-off before failing.
        cached = weights_source.cached_weights(source, cache_dir)
        if cached is None:
            host = urlsplit(source.url).hostname or source.url
            raise ModelLoadError(
                _missing_weights_message(plan, tag, f"{host} cannot be reached: no network?")
            )
        return cached
    try:
        with _quiet_open_clip():
            target = download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(cause) > MAX_CAUSE_CHARS:
            cause = cause[: MAX_CAUSE_CHARS - 1].rstrip() + "…"
        raise ModelLoadError(_missing_weights_message(plan, tag, cause)) from None
    if not target:
        raise ModelLoadError(f"open_clip has no download location for {plan.requested} / {tag!r}")
    return Path(target)


def _missing_weights_message(plan: _ModelPlan, tag: str, cause: str) -> str:
    """Why a tag's weights could not be had (``cause``), and the two ways to provide them."""
    return (
        f"the {tag!r} weights of model {plan.requested} are not in the local cache and could "
        f"not be downloaded ({cause}). Pass a local checkpoint with "
        "--pretrained /path/to/weights.pt, or pre-populate the Hugging Face cache (HF_HOME) "
        "on a machine with internet access, e.g. "
        f"python -c \"import open_clip; open_clip.create_model('{plan.name}', "
        f"pretrained='{tag}')\""
    )


# ---------------------------------------------------------------------------- the loader
class _DropOpenClipRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's root-logger chatter ("initialized randomly") and its warnings."""
    root = logging.getLogger()
    drop = _DropOpenClipRecords()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="open_clip")
            yield
    finally:
        root.removeFilter(drop)


def _identity(plan: _ModelPlan, pretrained: str) -> tuple[dict[str, str], str]:
    """:attr:`LoadedClip.identity` and the normalised ``pretrained``, without loading anything (a
    weights file is hashed)."""
    identity = {"model": plan.name}
    if plan.requested != plan.name:
        identity["model_requested"] = plan.requested
    if plan.note:
        identity["note"] = plan.note
    seed = parse_random_seed(pretrained)
    if seed is not None:
        pretrained_id = f"{RANDOM_PREFIX}:{seed}"
    elif _is_tag(pretrained):
        from open_clip.pretrained import _clean_tag

        pretrained_id = _clean_tag(pretrained.strip())
    else:
        weights_file = Path(pretrained).expanduser()
        if not weights_file.is_file():
            raise ModelLoadError(f"weights file {weights_file} not found")
        pretrained_id = str(weights_file.resolve())
        identity["weights_sha256"] = file_sha256(weights_file)
    identity["pretrained"] = pretrained_id
    return identity, pretrained_id


MODEL_FACTS_FOLDER = "models"
"""Subfolder of the user's cache folder that holds :class:`DeferredClip`'s facts per model."""


def _facts_key(model: str, pretrained: str) -> str | None:
    """The key of a model's facts: the arguments, and for files their path, size, modification
    time and inode (a changed file is hashed again); ``None`` when a file is missing."""
    from importlib.metadata import PackageNotFoundError, version

    from scclip_cli.files.cache_store import key_of

    def stat_of(text: str) -> list[object] | None:
        path = Path(text).expanduser()
        if not path.is_file():
            return None
        info = path.stat()
        return [str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino]

    parts: dict[str, object] = {"model": model, "pretrained": pretrained}
    for name, text in (("model_file", model), ("weights_file", pretrained)):
        if text.lower().endswith((".json", *WEIGHT_SUFFIXES)) or os.sep in text or "/" in text:
            found = stat_of(text)
            if found is None:
                return None
            parts[name] = found
    try:
        parts["open_clip"] = version("open_clip_torch")
    except PackageNotFoundError:
        parts["open_clip"] = "unknown"
    return key_of(parts)


class DeferredClip:
    """A model that is loaded (:func:`load_clip`) only when its weights are first needed.

    Tells what a :class:`LoadedClip` tells about itself (identity, device, dtype, depth, output
    dimension) from the model's config alone, so a run whose every image's features are cached
    never builds the model. ``release_text`` frees the text tower right after the load.

    With ``facts_dir`` (the user's cache folder), those facts are kept there
    (``<facts_dir>/models``) by model, weights and the weights file's size and modification time:
    a later run then learns them without importing open_clip or hashing the weights again.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str = DEFAULT_PRETRAINED,
        device: str = "auto",
        precision: str = "auto",
        *,
        release_text: bool = True,
        facts_dir: str | Path | None = None,
    ) -> None:
        self._arguments = (model, pretrained, device, precision)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.model_name = model
        facts = self._cached_facts(facts_dir)
        if facts is None:
            facts = self._read_facts()
            self._store_facts(facts_dir, facts)
        self.identity: dict[str, str] = dict(facts["identity"])
        self.pretrained: str = str(facts["pretrained"])
        self.depth: int = int(facts["depth"])
        self.output_dim: int = int(facts["output_dim"])
        self.patch_size: int = int(facts["patch_size"])
        self._release_text = release_text
        self._loaded: LoadedClip | None = None
        self._lock = threading.Lock()

    def _read_facts(self) -> dict[str, Any]:
        import open_clip

        model, pretrained = self._arguments[:2]
        plan = _plan_model(model, pretrained)
        config = open_clip.get_model_config(plan.name) or {}
        _check_tower_config(plan.name, config)
        identity, pretrained_id = _identity(plan, pretrained)
        vision = config.get("vision_cfg", {})
        if not isinstance(vision.get("layers"), int) or "embed_dim" not in config:
            raise ModelLoadError(f"model {model}: its config gives no vision depth / embed_dim")
        return {
            "identity": identity,
            "pretrained": pretrained_id,
            "depth": int(vision["layers"]),
            "output_dim": int(config["embed_dim"]),
            "patch_size": _patch_side(vision.get("patch_size", 16)),
        }

    def _cached_facts(self, facts_dir: str | Path | None) -> dict[str, Any] | None:
        if facts_dir is None:
            return None
        from scclip_cli.files.cache_store import CacheStore

        key = _facts_key(*self._arguments[:2])
        found = None if key is None else CacheStore(Path(facts_dir) / MODEL_FACTS_FOLDER).get(key)
        try:
            facts = json.loads(found) if found is not None else None
            if facts is not None and (
                not isinstance(facts["identity"], dict) or "patch_size" not in facts
            ):
                return None  # damaged, or written before a fact was added
            return facts
        except (ValueError, KeyError, TypeError):
            return None

    def _store_facts(self, facts_dir: str | Path | None, facts: dict[str, Any]) -> None:
        key = None if facts_dir is None else _facts_key(*self._arguments[:2])
        if facts_dir is not None and key is not None:
            from scclip_cli.files.cache_store import CacheStore

            store = CacheStore(Path(facts_dir) / MODEL_FACTS_FOLDER)
            store.put(key, json.dumps(facts, sort_keys=True).encode())

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> LoadedClip:
        """The model, loaded on the first call."""
        with self._lock:
            if self._loaded is None:
                loaded = load_clip(*self._arguments)
                if (
                    loaded.depth != self.depth
                    or loaded.output_dim != self.output_dim
                    or loaded.identity != self.identity
                    or loaded.patch_size != self.patch_size
                ):
                    raise ModelLoadError(
                        f"model {self.model_name} is not the model its config and weights said "
                        "(were the weights replaced during the run?)"
                    )
                if self._release_text:
                    loaded.release_text_tower()
                self._loaded = loaded
            return self._loaded

    @property
    def model(self) -> torch.nn.Module:
        return self.load().model

    @property
    def visual(self) -> Any:
        return self.load().visual


def _patch_side(patch_size: Any) -> int:
    """The side of a config's ``patch_size`` (an int, or a square ``[p, p]``)."""
    return int(patch_size[0] if isinstance(patch_size, list | tuple) else patch_size)


def load_clip(
    model: str = DEFAULT_MODEL,
    pretrained: str = DEFAULT_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
) -> LoadedClip:
    """Build an open_clip CLIP ViT, load its weights, and check SC-CLIP can calibrate it.

    Args:
        model: open_clip model name, path to an open_clip model-config JSON, or ``scclip-tiny``.
        pretrained: open_clip tag, local checkpoint file, or ``random`` / ``random:SEED``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: ``auto`` | ``float32`` | ``float16`` | ``bfloat16`` (see module docstring).
        cache_dir: download cache for tags (default: open_clip's, i.e. the Hugging Face cache).

    Raises:
        ModelLoadError: unknown model or tag, weights missing (offline) or unreadable, weights that
            do not fit the model, or a vision tower SC-CLIP cannot calibrate.
        ConfigError: unknown precision, or float16 on the CPU.
    """
    import open_clip
    import torch

    torch_device = resolve_device(device)
    dtype = resolve_dtype(precision, torch_device)
    plan = _plan_model(model, pretrained)
    _check_tower_config(plan.name, open_clip.get_model_config(plan.name) or {})

    identity, pretrained_id = _identity(plan, pretrained)
    seed = parse_random_seed(pretrained)
    weights_file: Path | None = None
    if seed is None and _is_tag(pretrained):
        weights_file = _download_tag(plan, pretrained.strip(), cache_dir)
    elif seed is None:
        weights_file = Path(pretrained).expanduser()

    try:
        with _quiet_open_clip():
            net = open_clip.create_model(
                plan.name,
                pretrained=None,
                precision="fp32",
                device="cpu",
                force_quick_gelu=plan.force_quick_gelu,
                pretrained_image=False,
                pretrained_text=False,
            )
    except Exception as err:
        raise ModelLoadError(f"could not build model {plan.requested}: {err}") from None
    check_vision_tower(net.visual, f"model {plan.requested}")

    if seed is not None:
        from scclip_cli.model.random_weights import recipe_state_dict

        load_weights(net, recipe_state_dict(net, seed), pretrained_id)
    else:
        assert weights_file is not None
        load_weights(net, read_state_dict(weights_file), str(weights_file))

    net.to(torch_device)
    if dtype != torch.float32:
        from open_clip.model import convert_weights_to_lp

        convert_weights_to_lp(net, dtype=dtype)
    net.eval().requires_grad_(False)

    try:
        with _quiet_open_clip():
            tokenizer = open_clip.get_tokenizer(plan.name)
    except Exception as err:
        raise ModelLoadError(f"could not load the tokenizer of {plan.requested}: {err}") from None
    return LoadedClip(
        model=net,
        tokenizer=tokenizer,
        model_name=model,
        pretrained=pretrained_id,
        device=torch_device,
        dtype=dtype,
        identity=identity,
    )
