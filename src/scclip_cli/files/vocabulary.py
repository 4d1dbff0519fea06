"""Class lists: one class per line, synonyms separated by commas; line 1 is class 0.

The format of the reference's ``vocab/*.txt``::

    sky, wall, tree, ..., fence        <- class 0 (background), 26 synonyms
    aeroplane                          <- class 1
    ...
    television, screen                 <- class 20, 2 synonyms

Every synonym becomes a *query* (embedded on its own); a class scores the max over its queries. The
class's display name is its first synonym. Line numbers are class indices (``class = line - 1``), so
a blank line between classes is an error, not something to skip. A UTF-8 BOM, CRLF line ends and
trailing blank lines are accepted. A name on two lines is only a warning: the reference's
``coco_object.txt`` lists ``bed`` both as a background synonym and as a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scclip_cli.errors import VocabularyError

SYNONYM_SEPARATOR = ","
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Vocabulary:
    """A parsed class list. ``K`` classes, ``Q >= K`` queries (synonyms)."""

    class_names: tuple[str, ...]
    """[K] display name of each class (its first synonym)."""
    queries: tuple[str, ...]
    """[Q] every synonym of every class, in file order."""
    query_class: tuple[int, ...]
    """[Q] class index (0..K-1) of each query."""
    source: str
    """File path, or ``"<list>"`` for lines given in Python."""
    warnings: tuple[str, ...] = ()
    """Non-fatal issues (duplicate names), one message each."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def read_text_lines(path: str | Path, what: str = "vocabulary file") -> list[str]:
    """The lines of a UTF-8 text file (BOM and CR removed); errors name the file and line.

    Raises :class:`VocabularyError` for a missing or unreadable file and for bytes that are not
    UTF-8 (naming the first bad line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VocabularyError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise VocabularyError(f"{what} {path} is a directory, not a file") from None
    except OSError as err:
        raise VocabularyError(f"cannot read {what} {path}: {err.strerror or err}") from None
    data = data.removeprefix(UTF8_BOM)
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 1].hex()
            raise VocabularyError(
                f"{path} line {number}: not valid UTF-8 (byte 0x{bad} at column {err.start + 1}); "
                "save the file as UTF-8"
            ) from None
        lines.append(text.removesuffix("\r"))
    return lines


def _trim_trailing_blank(lines: Sequence[str]) -> list[str]:
    kept = list(lines)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def parse_vocabulary(lines: Sequence[str], source: str = "<list>") -> Vocabulary:
    """Parse class lines (``"cat, kitten"``); see the module docstring for the format.

    Raises :class:`VocabularyError` naming ``source`` and the line for: no classes, a blank line
    before the last class, and an empty synonym (``"a,,b"``, a trailing comma).
    """
    if isinstance(lines, str):
        lines = lines.split("\n")
    lines = _trim_trailing_blank(lines)
    if not lines:
        raise VocabularyError(f"{source} is empty: it needs one class per line")
    class_names: list[str] = []
    queries: list[str] = []
    query_class: list[int] = []
    first_line: dict[str, int] = {}
    notes: list[str] = []
    for index, line in enumerate(lines):
        number = index + 1
        if "\n" in line or "\r" in line:
            raise VocabularyError(f"{source} line {number}: a class line cannot contain a newline")
        if not line.strip():
            raise VocabularyError(
                f"{source} line {number} is empty; line numbers are class indices, so remove the "
                "blank line (or give the class a name)"
            )
        names = [name.strip() for name in line.split(SYNONYM_SEPARATOR)]
        if not all(names):
            raise VocabularyError(
                f"{source} line {number} has an empty name ({line.strip()!r}); separate synonyms "
                "with single commas"
            )
        class_names.append(names[0])
        for name in names:
            key = name.casefold()
            if key in first_line:
                where = (
                    f"twice on line {number}"
                    if first_line[key] == number
                    else f"on line {first_line[key]} and line {number}"
                )
                notes.append(f"{source}: {name!r} appears {where}; it scores for both classes")
            else:
                first_line[key] = number
            queries.append(name)
            query_class.append(index)
    return Vocabulary(
        class_names=tuple(class_names),
        queries=tuple(queries),
        query_class=tuple(query_class),
        source=source,
        warnings=tuple(notes),
    )


def read_vocabulary(path: str | Path) -> Vocabulary:
    """Read and parse a class-list file (UTF-8). Errors name the file and line."""
    return parse_vocabulary(read_text_lines(path), source=str(path))
