"""Class lists and prompt templates: the reference's files, every error with its line, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from scclip_cli.errors import VocabularyError
from scclip_cli.files.prompt_templates import (
    OPENAI_IMAGENET_TEMPLATES,
    check_templates,
    read_templates,
    templates_id,
)
from scclip_cli.files.vocabulary import parse_vocabulary, read_vocabulary

VOCAB_DIR = Path(__file__).parents[2] / "vocab"


@pytest.mark.parametrize(
    ("name", "classes"),
    [
        ("voc21", 21),
        ("voc20", 20),
        ("context60", 60),
        ("context59", 59),
        ("coco_object", 81),
        ("coco_stuff", 171),
        ("city_scapes", 19),
        ("ade20k", 150),
    ],
)
def test_reference_vocabularies_load_with_their_class_counts(name, classes):
    vocab = read_vocabulary(VOCAB_DIR / f"{name}.txt")
    assert vocab.num_classes == classes
    assert len(vocab.queries) == len(vocab.query_class) >= classes
    assert sorted(set(vocab.query_class)) == list(range(classes))
    assert all(q == q.strip() and q for q in vocab.queries)


def test_voc21_synonyms_map_to_their_line(golden_dir):
    vocab = read_vocabulary(golden_dir / "voc21.txt")
    assert len(vocab.queries) == 56
    assert vocab.class_names[:3] == ("sky", "aeroplane", "bicycle")  # first synonym of each line
    assert vocab.queries[:3] == ("sky", "wall", "tree")
    assert vocab.query_class[:27] == (0,) * 26 + (1,)
    assert vocab.queries[-2:] == ("television", "screen") and vocab.query_class[-2:] == (20, 20)
    assert vocab.warnings == ()


def test_coco_object_duplicate_is_a_warning_naming_both_lines():
    vocab = read_vocabulary(VOCAB_DIR / "coco_object.txt")
    assert vocab.num_classes == 81
    assert len(vocab.warnings) == 1
    assert "'bed'" in vocab.warnings[0]
    assert "line 1 and line 61" in vocab.warnings[0]
    assert "coco_object.txt" in vocab.warnings[0]


def test_everyday_vocabulary():
    vocab = read_vocabulary(VOCAB_DIR / "everyday.txt")
    assert vocab.class_names[0] == "background"
    assert 12 <= vocab.num_classes <= 20
    assert len(vocab.queries) > vocab.num_classes  # has synonyms
    assert vocab.warnings == ()


def test_bom_crlf_trailing_newlines_and_spaces_are_accepted(tmp_path: Path):
    plain = parse_vocabulary(["background", "cat, kitten", "dog"])
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbfbackground\r\n cat ,kitten  \r\ndog\r\n\r\n\n")
    vocab = read_vocabulary(path)
    assert (vocab.class_names, vocab.queries, vocab.query_class) == (
        plain.class_names,
        plain.queries,
        plain.query_class,
    )
    assert vocab.class_names == ("background", "cat", "dog")
    assert vocab.queries == ("background", "cat", "kitten", "dog")
    assert vocab.query_class == (0, 1, 1, 2)
    assert vocab.source == str(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"empty\.txt is empty"),
        (b"\n\n  \n", r"empty\.txt is empty"),
        (b"background\n\ncat\n", r"line 2 is empty"),
        (b"\nbackground\ncat\n", r"line 1 is empty"),
        (b"background\ncat\ndog,,puppy\n", r"line 3 has an empty name"),
        (b"background\ncat, kitten,\n", r"line 2 has an empty name"),
        (b"background\ncat\ncaf\xe9\n", r"line 3: not valid UTF-8 \(byte 0xe9"),
    ],
    ids=[
        "empty",
        "blank-lines-only",
        "blank-line",
        "leading-blank",
        "empty-synonym",
        "trailing-comma",
        "latin-1",
    ],
)
def test_vocabulary_errors_name_the_file_and_line(tmp_path: Path, content, pattern):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(VocabularyError, match=pattern) as info:
        read_vocabulary(path)
    assert str(path) in str(info.value)


def test_missing_vocabulary_file(tmp_path: Path):
    with pytest.raises(VocabularyError, match=r"absent\.txt not found"):
        read_vocabulary(tmp_path / "absent.txt")
    with pytest.raises(VocabularyError, match="is a directory"):
        read_vocabulary(tmp_path)


def test_duplicates_in_a_list_and_on_one_line_are_warnings():
    vocab = parse_vocabulary(["background, Sky", "sky", "cat, cat"])
    assert vocab.source == "<list>"
    assert vocab.num_classes == 3
    assert any("'sky' appears on line 1 and line 2" in w for w in vocab.warnings)
    assert any("'cat' appears twice on line 3" in w for w in vocab.warnings)


def test_openai_templates_are_the_80_of_the_clip_paper():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as OPEN_CLIP_TEMPLATES

    assert len(OPENAI_IMAGENET_TEMPLATES) == len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    assert tuple(f("{}") for f in OPEN_CLIP_TEMPLATES) == OPENAI_IMAGENET_TEMPLATES
    assert templates_id(OPENAI_IMAGENET_TEMPLATES) == "openai-imagenet-80"


def test_template_files(tmp_path: Path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\n\n  a {} in the wild  \n", encoding="utf-8")
    assert read_templates(path) == ("a photo of a {}.", "a {} in the wild")
    assert templates_id(read_templates(path)) == "custom-2"

    path.write_text("a photo of a {}.\nno placeholder here\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"templates\.txt line 2: .*exactly one \{\}"):
        read_templates(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty"):
        read_templates(path)
    with pytest.raises(VocabularyError, match="not found"):
        read_templates(tmp_path / "absent.txt")
    with pytest.raises(VocabularyError, match=r"template 2 .*\{\} \{\}"):
        check_templates(["{}", "{} {}"])
