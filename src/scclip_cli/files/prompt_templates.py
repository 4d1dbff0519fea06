"""Prompt templates: each query is embedded as the normalised mean over these sentences.

:data:`OPENAI_IMAGENET_TEMPLATES` are the 80 ImageNet prompts of the CLIP paper (Radford et al.,
2021), in the order of OpenAI's notebook, as the SC-CLIP reference uses them. Templates are format
strings with one ``{}`` for the class name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from scclip_cli.errors import VocabularyError

PLACEHOLDER = "{}"

OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
"""The 80 OpenAI ImageNet prompt templates (format strings with one ``{}``)."""

OPENAI_TEMPLATES_ID = "openai-imagenet-80"


def fill_template(template: str, name: str) -> str:
    """``template`` with its ``{}`` replaced by ``name`` (other braces are left alone)."""
    return template.replace(PLACEHOLDER, name, 1)


def templates_sha256(templates: Sequence[str]) -> str:
    """Hash of the template list (order matters): sha256 of the templates joined by newlines."""
    return hashlib.sha256("\n".join(templates).encode("utf-8")).hexdigest()


def templates_id(templates: Sequence[str]) -> str:
    """``openai-imagenet-80`` for the default list, else ``custom-N`` (N templates)."""
    if tuple(templates) == OPENAI_IMAGENET_TEMPLATES:
        return OPENAI_TEMPLATES_ID
    return f"custom-{len(templates)}"


def check_templates(templates: Sequence[str], source: str = "<list>") -> tuple[str, ...]:
    """Validate templates: at least one, each with exactly one ``{}``. Returns them as a tuple."""
    if isinstance(templates, str):
        raise VocabularyError(f"{source}: templates must be a list of strings, not one string")
    checked = tuple(templates)
    if not checked:
        raise VocabularyError(f"{source} has no templates")
    for number, template in enumerate(checked, start=1):
        if template.count(PLACEHOLDER) != 1:
            raise VocabularyError(
                f"{source} template {number} ({template!r}) must contain exactly one {{}} "
                "where the class name goes"
            )
    return checked


def read_templates(path: str | Path) -> tuple[str, ...]:
    """Templates from a UTF-8 file, one per line, each with exactly one ``{}``.

    Blank lines are skipped (a template's position carries no meaning). Errors
    (:class:`VocabularyError`) name the file and line.
    """
    from scclip_cli.files.vocabulary import read_text_lines

    templates: list[str] = []
    for number, line in enumerate(read_text_lines(path, what="template file"), start=1):
        template = line.strip()
        if not template:
            continue
        if template.count(PLACEHOLDER) != 1:
            raise VocabularyError(
                f"{path} line {number}: a template must contain exactly one {{}} where the class "
                f"name goes, got {template!r}"
            )
        templates.append(template)
    if not templates:
        raise VocabularyError(f"template file {path} is empty: it needs one template per line")
    return tuple(templates)
