"""Seeded random CLIP weights by the golden recipe.

The recipe (``tests/data/golden/README.md``) makes weights that behave like a trained CLIP's in
scale: unit-ish activations through every block, LayerNorm weights near 1, small biases. It is what
``--pretrained random:SEED`` loads, so that the tiny test model (``scclip-tiny``, seed 7) reproduces
the reference's weights bit for bit, and larger shapes (ViT-B-16) can be benchmarked without a
download. Segmentations made with these weights are meaningless.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_SEED = 7
"""Seed of the golden tiny model's weights."""
INIT_LOGIT_SCALE = math.log(1 / 0.07)
"""CLIP's initial (log) logit scale; no random draw."""
OUTPUT_PROJECTION_GAIN = 0.3
"""Extra factor on ``out_proj.weight`` and ``c_proj.weight`` (the residual branch outputs)."""
LAYER_NORM_WEIGHT_STD = 0.1
BIAS_STD = 0.02
TEXT_POSITION_STD = 0.01
TOKEN_EMBEDDING_STD = 0.02


def _layer_norm_weight_keys(model: torch.nn.Module) -> set[str]:
    """Keys (``<module>.weight``) of every LayerNorm weight of ``model``."""
    from torch import nn

    return {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm) and module.weight is not None
    }


def _draw(
    rng: np.random.Generator, key: str, shape: tuple[int, ...], ln_weights: set[str]
) -> np.ndarray:
    """One standard-normal draw of ``shape`` (float64), scaled for the kind of ``key``."""
    noise = rng.standard_normal(shape)
    if key == "visual.ln_pre.bias":
        return noise * 0.0
    if key in ln_weights:
        return 1.0 + LAYER_NORM_WEIGHT_STD * noise
    if key.endswith("bias"):
        return BIAS_STD * noise
    if key in ("visual.class_embedding", "visual.proj", "text_projection"):
        return noise * shape[0] ** -0.5
    if key == "visual.positional_embedding":
        return noise * shape[1] ** -0.5
    if key == "positional_embedding":
        return TEXT_POSITION_STD * noise
    if key == "token_embedding.weight":
        return TOKEN_EMBEDDING_STD * noise
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    weight = noise * fan_in**-0.5
    if key.endswith(("out_proj.weight", "c_proj.weight")):
        weight = weight * OUTPUT_PROJECTION_GAIN
    return weight


def recipe_state_dict(model: torch.nn.Module, seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """The recipe's weights for every floating-point entry of ``model.state_dict()``.

    numpy ``Generator(PCG64(seed))``; keys in sorted order; one ``standard_normal(shape)`` draw per
    key (none for ``logit_scale``), scaled by the key's kind; rounded to float16 and back.
    Non-float entries (integer buffers) are left out; non-persistent buffers such as the text
    tower's ``attn_mask`` are not in the state dict at all.

    Returns:
        ``{key: float32 CPU tensor of the key's shape}``, every value exactly representable in
        float16. Load with ``model.load_state_dict(sd)``.
    """
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    ln_weights = _layer_norm_weight_keys(model)
    reference = model.state_dict()
    weights: dict[str, torch.Tensor] = {}
    for key in sorted(reference):
        tensor = reference[key]
        if not torch.is_floating_point(tensor):
            continue
        shape = tuple(int(s) for s in tensor.shape)
        if key == "logit_scale":
            values = np.full(shape, INIT_LOGIT_SCALE)
        else:
            values = _draw(rng, key, shape, ln_weights)
        rounded = np.asarray(values).astype(np.float16).astype(np.float32)
        weights[key] = torch.from_numpy(rounded.copy(order="C")).reshape(shape)
    return weights
