"""The per-image record: written as ``<stem>.json``, read back to tell a complete image, and
turned into the ``--jsonl`` line, byte for byte as before it had a class."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scclip_cli.files.image_record import ImageRecord

CLASSES = (
    {"index": 0, "name": "sky", "pixels": 6, "fraction": 0.5, "mean_confidence": 0.25},
    {"index": 2, "name": "cat", "pixels": 6, "fraction": 0.5, "mean_confidence": 0.75},
)


def test_written_as_the_dict_it_replaced(tmp_path: Path) -> None:
    record = ImageRecord("imgs/a.jpg", 4, 3, CLASSES)
    before = {"path": "imgs/a.jpg", "width": 4, "height": 3, "classes": list(CLASSES)}
    assert record.to_json() == json.dumps(before, indent=2) + "\n"
    record.write(tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == record.to_json()
    again = ImageRecord.read(tmp_path / "a.json")
    assert again == record
    assert again is not None and again.to_json() == record.to_json()


def test_anything_else_reads_as_not_complete(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    assert ImageRecord.read(path) is None  # missing
    good = {"path": "a.jpg", "width": 4, "height": 3, "classes": list(CLASSES)}
    bad_values = [
        "{",
        "[]",
        json.dumps({**good, "width": "wide"}),
        json.dumps({k: v for k, v in good.items() if k != "classes"}),
        json.dumps({**good, "classes": [{"index": 0, "pixels": 12}]}),  # no mean_confidence
        json.dumps({**good, "path": 7}),
    ]
    for text in bad_values:
        path.write_text(text, encoding="utf-8")
        assert ImageRecord.read(path) is None, text


def test_the_jsonl_line_has_the_files_then_every_other_field() -> None:
    record = ImageRecord("a.jpg", 4, 3, CLASSES)
    files = {"mask": "out/a.png", "json": "out/a.json", "overlay": "out/a_overlay.jpg"}
    line = record.jsonl_line("done", files)
    assert list(line) == ["path", "status", "mask", "json", "overlay", "width", "height", "classes"]
    assert line["classes"] == list(CLASSES) and line["status"] == "done"


def test_a_new_field_flows_into_the_file_and_the_line() -> None:
    """How a field is added: declared with a default, it is written, read and put on the line."""

    @dataclasses.dataclass(frozen=True)
    class WithConfidence(ImageRecord):
        mean_confidence: float | None = None

    plain = WithConfidence("a.jpg", 4, 3, CLASSES)
    assert "mean_confidence" not in plain.to_dict()  # None: not written (older records)
    rich = WithConfidence("a.jpg", 4, 3, CLASSES, mean_confidence=0.5)
    assert list(rich.to_dict())[-1] == "mean_confidence"
    assert rich.jsonl_line("done", {"mask": "m", "json": "j"})["mean_confidence"] == 0.5
