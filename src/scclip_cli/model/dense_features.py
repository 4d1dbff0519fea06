"""Dense patch features of a CLIP ViT with its last block replaced: SC-CLIP and the baselines.

The first ``L - 1`` blocks of the open_clip vision tower compute what open_clip's do (through
:func:`scclip_cli.model.block_forward.block_forward`: QuickGELU in one pass); only the last block's
``ln_1`` and attention weights are reused (read through open_clip's stable parameter names:
``ln_1``, ``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj``, ``ln_post``, ``proj``).
Every statistic (anomaly tokens, similarity means) is computed per crop, so batching changes nothing.

Methods (``MethodConfig.name``), all from the same first ``L - 1`` blocks:

* ``clip``: the unchanged last block (attention with residual and feed-forward).
* ``maskclip``: the last block's value embedding through ``out_proj``; no attention weights,
  residual or feed-forward (MaskCLIP, Zhou et al. 2022).
* ``sclip``: correlative self-attention ``softmax(q·qᵀ) + softmax(k·kᵀ)``, residual and
  feed-forward kept (SCLIP, Wang et al. 2024).
* ``clearclip``: query-query attention, residual and feed-forward removed (ClearCLIP, Lan et al.
  2024).
* ``sc-clip``: the reference (``tests/data/golden/ALGORITHM.md``), with its ablation switches and
  the training-free extensions (adaptive anomaly ratio, :mod:`scclip_cli.model.adaptive_ratio`;
  boundary-aware repair, :mod:`scclip_cli.model.boundary_repair`; alternative detectors,
  :mod:`scclip_cli.model.anomaly_detectors`), all off by default.

Shapes: ``B`` crops, ``T = 1 + N`` tokens (class token first), ``N = grid_h · grid_w`` patches in
row-major order, ``W`` the tower width, ``D`` the output (embedding) dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scclip_cli.config import CalibrationConfig, MethodConfig, check_calibration_depth
from scclip_cli.errors import ConfigError
from scclip_cli.model import (
    adaptive_ratio,
    affinity,
    anomaly_detectors,
    anomaly_repair,
    boundary_repair,
)
from scclip_cli.model.block_forward import block_forward, feed_forward


@dataclass
class CalibrationTrace:
    """Intermediate values of one forward pass, for tests and diagnostics (all per crop)."""

    penultimate_tokens: torch.Tensor  # [B, N, W] patch tokens after block L-1, before repair
    anomaly_scores: torch.Tensor  # [B, N] float32 (LOF or token norm)
    anomalies: torch.Tensor  # [B, N] bool
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Extension diagnostics: ``anomaly_ratio`` ``[B]`` float32 (adaptive ratio); ``boundary``
    ``[A]`` bool and ``repair_weights`` ``[A, 8]`` bool (boundary-aware repair, ``A`` anomalies of
    the batch in row-major order per crop)."""


def _attention_heads(block: Any) -> int:
    return int(block.attn.num_heads)


def sum_in_order(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``((t0 + t1) + t2) + ...`` without stacking copies (``torch.stack(tensors).sum(0)`` may add
    in another order: the two differ by float rounding only)."""
    total = tensors[0].clone()
    for t in tensors[1:]:
        total += t
    return total


class DenseFeatureExtractor(nn.Module):
    """Maps a batch of normalised crops to calibrated dense features.

    ``forward(crops [B, 3, h, w]) -> [B, h // p, w // p, D]`` in the model's dtype (not normalised).

    ``visual`` is an open_clip ``VisionTransformer``; it is typed ``Any`` because its submodules
    are read by name (``nn.Module.__getattr__`` is typed ``Tensor | Module``).
    """

    visual: Any
    blocks: list[Any]

    def __init__(
        self,
        visual: Any,
        calibration: CalibrationConfig,
        method: MethodConfig | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.calibration = calibration
        self.method = method or MethodConfig()
        self.blocks = list(visual.transformer.resblocks)
        check_calibration_depth(calibration, len(self.blocks))
        if self.method.adaptive_anomaly_ratio and (
            self.method.max_anomaly_ratio < calibration.anomaly_ratio
        ):
            raise ConfigError(
                f"max_anomaly_ratio ({self.method.max_anomaly_ratio}) is below the calibration's "
                f"anomaly_ratio ({calibration.anomaly_ratio})"
            )
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))
        patch = visual.conv1.kernel_size
        self.patch_size = int(patch[0] if isinstance(patch, tuple) else patch)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    # ------------------------------------------------------------------ stages
    def embed(self, crops: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch embedding, class token, positional embedding and ``ln_pre``.

        Returns ``([B, T, W], grid_h, grid_w)``.
        """
        v = self.visual
        x = v.conv1(crops.to(v.conv1.weight.dtype))  # [B, W, grid_h, grid_w]
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, W]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)  # [B, T, W]
        x = x + self.positional_embedding(grid_h, grid_w).to(x.dtype)
        return v.ln_pre(x), grid_h, grid_w

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[T, W]`` positional embedding for a ``grid_h × grid_w`` grid.

        The patch part is resized bicubically when the grid is not the pretraining grid, with the
        reference's scale factors (``(g + 0.1) / g0``) so small crops match it exactly.
        """
        pos = self.visual.positional_embedding
        g0 = round((pos.shape[0] - 1) ** 0.5)
        if (grid_h, grid_w) == (g0, g0):
            return pos
        key = (grid_h, grid_w)
        if key not in self._pos_cache:
            patch_pos = pos[1:].float().reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(
                patch_pos,
                scale_factor=((grid_h + 0.1) / g0, (grid_w + 0.1) / g0),
                mode="bicubic",
                align_corners=False,
            )
            assert patch_pos.shape[-2:] == (grid_h, grid_w)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
            self._pos_cache[key] = torch.cat([pos[:1].float(), patch_pos]).to(pos.dtype)
        return self._pos_cache[key]

    def run_blocks(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        """Run the first ``count`` blocks; returns every block output ``[B, T, W]`` (index i = block i+1)."""
        outputs = []
        for block in self.blocks[:count]:
            if self.batch_first:
                x = block_forward(block, x)
            else:
                x = block_forward(block, x.transpose(0, 1)).transpose(0, 1)
            outputs.append(x)
        return outputs

    def project(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` and the projection: ``[B, N, W] -> [B, N, D]``."""
        return self.visual.ln_post(patch_tokens) @ self.visual.proj

    # ------------------------------------------------------------------ attention variants
    def _qkv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last block's q, k, v split into heads: each ``[B, heads, N, W / heads]``."""
        attn = self.blocks[-1].attn
        heads = _attention_heads(self.blocks[-1])
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
        b, n, _ = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _kv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last block's k and v only (a third less projection work than :meth:`_qkv`)."""
        attn = self.blocks[-1].attn
        heads = _attention_heads(self.blocks[-1])
        width = attn.in_proj_weight.shape[1]
        kv = F.linear(y, attn.in_proj_weight[width:], attn.in_proj_bias[width:])
        b, n, _ = kv.shape
        k, v = kv.reshape(b, n, 2, heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, heads, N, d] -> out_proj -> [B, N, W]``."""
        b, h, n, d = out.shape
        return self.blocks[-1].attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    @staticmethod
    def _self_softmax(a: torch.Tensor) -> torch.Tensor:
        """``softmax(a · aᵀ / sqrt(d))`` per head: ``[B, h, N, d] -> [B, h, N, N]``."""
        scale = a.shape[-1] ** -0.5
        return torch.softmax((a @ a.transpose(-1, -2)) * scale, dim=-1)

    def calibrated_attention(
        self, y: torch.Tensor, mid_similarity: torch.Tensor | None
    ) -> torch.Tensor:
        """SC-CLIP's attention: ``(A_sim + A_kk) / 2`` applied to v, then ``out_proj``.

        Args:
            y: ``[B, N, W]`` (already through ``ln_1``).
            mid_similarity: ``[B, N, N]`` middle-layer similarity, or ``None`` to use key-key
                attention alone (the attention-enhancement ablation).
        Returns:
            ``[B, N, W]``.
        """
        k, v = self._kv(y)
        weights = self._self_softmax(k)  # [B, h, N, N]
        if mid_similarity is not None:
            a_sim = affinity.similarity_attention(
                mid_similarity.float(), self.calibration.attention_sharpness
            ).to(weights.dtype)
            weights = (a_sim[:, None] + weights) / 2
        return self._merge_heads(weights @ v)

    # ------------------------------------------------------------------ forward
    @torch.inference_mode()
    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.features_and_trace(crops)[0]

    @torch.inference_mode()
    def features_and_trace(
        self, crops: torch.Tensor
    ) -> tuple[torch.Tensor, CalibrationTrace | None]:
        """``[B, 3, h, w] -> ([B, grid_h, grid_w, D], trace)``; the trace is None for baselines."""
        x, grid_h, grid_w = self.embed(crops)
        name = self.method.name
        if name == "clip":
            outs = self.run_blocks(x, len(self.blocks))
            dense = self.project(outs[-1][:, 1:])
            trace = None
        elif name in ("maskclip", "sclip", "clearclip"):
            outs = self.run_blocks(x, len(self.blocks) - 1)
            dense = self.project(self._baseline_last_block(outs[-1], name))
            trace = None
        else:
            dense, trace = self._sc_clip(x, grid_h, grid_w)
        return dense.reshape(dense.shape[0], grid_h, grid_w, -1), trace

    def _baseline_last_block(self, tokens: torch.Tensor, name: str) -> torch.Tensor:
        """The last block of MaskCLIP / SCLIP / ClearCLIP on ``[B, T, W]`` tokens; returns patches ``[B, N, W]``."""
        block = self.blocks[-1]
        y = block.ln_1(tokens)
        q, k, v = self._qkv(y)
        if name == "maskclip":
            out = self._merge_heads(v)  # value embedding through out_proj, no attention weights
            return out[:, 1:]
        if name == "sclip":
            # correlative self-attention: query-query plus key-key, residual and FFN kept
            weights = self._self_softmax(q) + self._self_softmax(k)
            x = tokens + self._merge_heads(weights @ v)
            x = x + feed_forward(block, block.ln_2(x))
            return x[:, 1:]
        # clearclip: query-query attention, residual connection and feed-forward removed
        return self._merge_heads(self._self_softmax(q) @ v)[:, 1:]

    def _sc_clip(
        self, x: torch.Tensor, grid_h: int, grid_w: int
    ) -> tuple[torch.Tensor, CalibrationTrace]:
        cal, method = self.calibration, self.method
        depth = len(self.blocks)
        outs = self.run_blocks(x, depth - 1)  # T_1 .. T_{L-1}
        penultimate = outs[-1]
        batch, width = penultimate.shape[0], penultimate.shape[-1]
        patches = penultimate[:, 1:]  # [B, N, W]

        def as_grid(tokens: torch.Tensor) -> torch.Tensor:
            return tokens.reshape(batch, grid_h, grid_w, tokens.shape[-1])

        # 1. anomaly tokens of the penultimate layer, repaired by their valid 3x3 neighbours
        scores = anomaly_detectors.anomaly_scores(
            patches, method.anomaly_detector, cal.lof_neighbours, method.sklearn_lof_neighbours
        )
        extras: dict[str, torch.Tensor] = {}
        ratio: float | torch.Tensor = cal.anomaly_ratio
        if method.adaptive_anomaly_ratio:
            ratio = adaptive_ratio.adaptive_anomaly_ratio(
                as_grid(patches), cal.anomaly_ratio, method.max_anomaly_ratio
            )
            extras["anomaly_ratio"] = ratio
        anomalies = anomaly_detectors.anomaly_mask(scores, ratio)
        if not method.repair_anomalies:
            anomalies = torch.zeros_like(anomalies)
        grid_mask = anomalies.reshape(batch, grid_h, grid_w)

        sides: boundary_repair.RepairSides | None = None  # None: the reference's plain 3x3 mean
        if method.boundary_aware_repair:
            # sides from the (never repaired) post-similarity layer, where anomalies are not formed
            guide = as_grid(outs[cal.post_similarity_layer][:, 1:])
            sides = boundary_repair.boundary_sides(guide, grid_mask, method.boundary_similarity)
            extras["boundary"] = sides.boundary
            extras["repair_weights"] = sides.weights

        def repair(tokens: torch.Tensor) -> torch.Tensor:
            grid = as_grid(tokens)
            if sides is None:
                repaired = anomaly_repair.repair_anomalies(grid, grid_mask)
            else:
                repaired = boundary_repair.repair_with_sides(grid, sides)
            return repaired.reshape(batch, -1, width)

        x0 = repair(patches)

        # 2. self-adjustment with the middle layer's similarity
        mid = affinity.cosine_similarity(
            repair(outs[cal.similarity_layer][:, 1:])
        )  # S_pre [B, N, N]
        post = affinity.sparsify(
            affinity.cosine_similarity(outs[cal.post_similarity_layer][:, 1:]),
            cal.similarity_threshold,
        )
        enhancement = mid if method.attention_enhancement else None
        ln_1 = self.blocks[-1].ln_1
        res = cal.residual_class_weight

        def aggregate(features: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
            if not method.feature_aggregation:
                return features
            return affinity.aggregate(features, similarity, cal.aggregation_eps)

        x1 = aggregate(x0, affinity.sparsify(mid, cal.similarity_threshold))
        x2 = self.calibrated_attention(ln_1(x1), enhancement) + res * penultimate[:, :1]
        features = aggregate(x2, post)

        # 3. multi-level fusion: the sum of middle layers through the same calibrated block
        if method.multi_level_fusion:
            fused = sum_in_order([outs[i] for i in cal.fusion_layers])  # [B, T, W]
            r2 = self.calibrated_attention(ln_1(fused[:, 1:]), enhancement) + res * fused[:, :1]
            features = features + aggregate(r2, post)

        trace = CalibrationTrace(
            penultimate_tokens=patches, anomaly_scores=scores, anomalies=anomalies, extras=extras
        )
        return self.project(features), trace
