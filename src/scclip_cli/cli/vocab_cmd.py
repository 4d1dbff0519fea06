"""``scclip vocab``: a thin wrapper over :func:`scclip_cli.model.text_embeddings.embed_vocabulary_file`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from scclip_cli.cli.options import DeviceOpt, ModelOpt, PrecisionOpt, PretrainedOpt
from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED

ClassesArg = Annotated[
    Path,
    typer.Argument(
        help="Class list (.txt: one class per line, synonyms separated by commas; line 1 is "
        "class 0), or an embedding cache (.npz) to check against the model and copy",
        metavar="CLASSES",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Embedding cache to write (.npz)", show_default=False),
]
TemplatesOpt = Annotated[
    Path | None,
    typer.Option(
        "--templates",
        help="Prompt templates, one per line with {} for the name "
        "[default: the 80 OpenAI ImageNet templates]",
        show_default=False,
    ),
]


def vocab_command(
    classes: ClassesArg,
    out: OutOpt,
    model: ModelOpt = DEFAULT_MODEL,
    pretrained: PretrainedOpt = DEFAULT_PRETRAINED,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    templates: TemplatesOpt = None,
) -> int:
    """Embed a class list once, for reuse with --vocab CLASSES.npz (same --model / --pretrained)."""
    from scclip_cli.model.text_embeddings import embed_vocabulary_file

    emb = embed_vocabulary_file(
        classes,
        out,
        model=model,
        pretrained=pretrained,
        device=device,
        precision=precision,
        templates=templates,
    )
    for warning in emb.warnings:
        print(f"scclip: warning: {warning}", file=sys.stderr)
    identity = emb.identity
    if identity.get("note"):
        print(f"scclip: note: {identity['note']}", file=sys.stderr)
    print(
        f"scclip: wrote {out}: {emb.num_classes} classes, {emb.num_queries} queries, "
        f"dim {emb.dim} (model {identity.get('model', model)}, "
        f"weights {identity.get('pretrained', pretrained)})",
        file=sys.stderr,
    )
    return 0
