"""Option definitions shared by several commands, defined once (``Annotated`` aliases).

Defaults come from the library's dataclasses so there is one place for every default. Nothing here
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scclip_cli.config import CalibrationConfig, ProtocolConfig

_PROTOCOL = ProtocolConfig()
_CAL = CalibrationConfig()

MODEL_PANEL = "Model"
PROTOCOL_PANEL = "Protocol"
RUN_PANEL = "Run"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="open_clip model name (e.g. ViT-B-16-quickgelu, ViT-L-14-quickgelu) or path to an "
        "open_clip model-config JSON. 'scclip-tiny' is a built-in 12-block test model.",
        rich_help_panel=MODEL_PANEL,
    ),
]
PretrainedOpt = Annotated[
    str,
    typer.Option(
        "--pretrained",
        "-p",
        help="open_clip pretrained tag (openai, laion2b_s34b_b88k, ...) or a local checkpoint file "
        "(.pt/.pth/.bin/.safetensors). 'random' or 'random:SEED' gives seeded random weights "
        "(for tests and benchmarks; segmentations are meaningless).",
        rich_help_panel=MODEL_PANEL,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto | cpu | cuda | cuda:N", rich_help_panel=MODEL_PANEL),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (float32 on CPU, float16 on CUDA, as the paper's code) | float32 | float16 | bfloat16",
        rich_help_panel=MODEL_PANEL,
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="sc-clip (default) | clip | maskclip | sclip | clearclip",
        rich_help_panel=MODEL_PANEL,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Benchmark protocol preset: voc21, voc20, context60, context59, coco-object, "
        "coco-stuff, cityscapes, ade20k. Explicit protocol options override it.",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
ShortSideOpt = Annotated[
    int | None,
    typer.Option(
        "--short-side", help=f"Resize short side [default: {_PROTOCOL.short_side}]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
CropOpt = Annotated[
    int | None,
    typer.Option("--crop", help=f"Window size [default: {_PROTOCOL.crop}]", rich_help_panel=PROTOCOL_PANEL),
]
StrideOpt = Annotated[
    int | None,
    typer.Option("--stride", help=f"Window stride [default: {_PROTOCOL.stride}]", rich_help_panel=PROTOCOL_PANEL),
]
LogitScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--logit-scale", help=f"Softmax temperature [default: {_PROTOCOL.logit_scale:g}]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
ProbThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--prob-threshold",
        help="Pixels whose best class probability is below this become class 0 [default: 0]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
AreaThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--area-threshold",
        help="Drop classes 1.. covering at most this share of the foreground [default: off]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", "-b", min=1, help="Crops per model forward pass", rich_help_panel=RUN_PANEL),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard", help="I/N: process only the I-th (1-based) of N disjoint parts of the sorted inputs",
        rich_help_panel=RUN_PANEL,
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or messages", rich_help_panel=RUN_PANEL)
]
VocabOpt = Annotated[
    Path,
    typer.Option(
        "--vocab",
        "-v",
        help="Class list (.txt: one class per line, synonyms separated by commas; line 1 is class 0) "
        "or an embedding cache made by 'scclip vocab' (.npz)",
    ),
]


def protocol_overrides(
    *,
    short_side: int | None = None,
    crop: int | None = None,
    stride: int | None = None,
    logit_scale: float | None = None,
    prob_threshold: float | None = None,
    area_threshold: float | None = None,
) -> dict[str, object]:
    """The protocol fields the user set explicitly (options left at ``None`` are not included)."""
    given = {
        "short_side": short_side,
        "crop": crop,
        "stride": stride,
        "logit_scale": logit_scale,
        "prob_threshold": prob_threshold,
        "area_threshold": area_threshold,
    }
    return {k: v for k, v in given.items() if v is not None}
