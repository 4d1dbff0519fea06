"""Input discovery, order, sharding, output mapping and collision checks (no image is opened)."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import pytest

from scclip_cli.errors import InputError, UsageError
from scclip_cli.runs.inputs import (
    InputImage,
    OutputPaths,
    Shard,
    check_collisions,
    discover_inputs,
    parse_shard,
)
from scclip_cli.runs.summary import reserved_names


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def relatives(images: list[InputImage]) -> list[str]:
    return [image.relative.as_posix() for image in images]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for name in (
        "b.jpg",
        "a/z.png",
        "a/b/c.JPEG",
        "a/b/d.tif",
        "a/e.webp",
        "f.bmp",
        "g.tiff",
        "notes.txt",
        "a/.hidden.jpg",
        ".cache/x.jpg",
        "ünïcødé/名前.png",
    ):
        touch(root / name)
    return root


# --- shards --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3 / 3 ", Shard(3, 3)), (None, None)],
)
def test_parse_shard_accepts_i_of_n(text: str | None, expected: Shard | None) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "1", "1/2/3", "-1/2", ""])
def test_parse_shard_rejects_everything_else(text: str) -> None:
    with pytest.raises(UsageError, match="shard"):
        parse_shard(text)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 12, 20])
def test_shards_are_disjoint_and_cover_the_sorted_inputs(count: int) -> None:
    items = [InputImage(Path(f"{i:02}.jpg"), PurePosixPath(f"{i:02}.jpg")) for i in range(12)]
    parts = [Shard(i, count).take(items) for i in range(1, count + 1)]
    flat = [item for part in parts for item in part]
    assert sorted(flat, key=lambda i: str(i.path)) == items  # covering, no duplicates
    assert len(flat) == len(set(flat))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # round-robin keeps shards balanced


# --- discovery -----------------------------------------------------------------------------------


def test_folder_is_searched_recursively_in_sorted_order(tree: Path) -> None:
    found = discover_inputs([tree])
    assert relatives(found.images) == [
        "a/b/c.JPEG",
        "a/b/d.tif",
        "a/e.webp",
        "a/z.png",
        "b.jpg",
        "f.bmp",
        "g.tiff",
        "ünïcødé/名前.png",
    ]
    assert all(image.path == tree / image.relative for image in found.images)
    assert found.problems == []


def test_order_does_not_depend_on_the_order_of_inputs(tmp_path: Path) -> None:
    first = touch(tmp_path / "one" / "b.jpg").parent
    second = touch(tmp_path / "two" / "a.jpg").parent
    touch(tmp_path / "two" / "c.jpg")
    forward = discover_inputs([first, second]).images
    backward = discover_inputs([second, first]).images
    assert forward == backward
    assert relatives(forward) == ["a.jpg", "b.jpg", "c.jpg"]


def test_file_given_directly_maps_to_its_name_whatever_its_extension(tmp_path: Path) -> None:
    image = touch(tmp_path / "deep" / "er" / "photo.jpg")
    other = touch(tmp_path / "scan.weird")
    found = discover_inputs([image, other])
    assert relatives(found.images) == ["photo.jpg", "scan.weird"]


def test_missing_input_and_empty_folder_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        discover_inputs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "empty" / "readme.txt")
    with pytest.raises(InputError, match="no images"):
        discover_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="no inputs"):
        discover_inputs([])


def test_stdin_paths_are_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    touch(work / "a" / "x.jpg")
    touch(work / "folder" / "sub" / "y.png")
    outside = touch(tmp_path / "elsewhere" / "z.jpg")
    monkeypatch.chdir(work)
    lines = f"a/x.jpg\n\n{outside}\r\nfolder\nmissing/gone.jpg\n   \n"
    found = discover_inputs(["-"], stdin=io.StringIO(lines))
    # inside the current folder: relative to it; outside: the name; folders: relative to them;
    # a missing file stays an input (it fails when read, it is not a usage error)
    assert relatives(found.images) == ["a/x.jpg", "missing/gone.jpg", "sub/y.png", "z.jpg"]


def test_stdin_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="stdin"):
        discover_inputs(["-", "-"], stdin=io.StringIO("a.jpg\n"))


def test_output_folder_inside_an_input_folder_is_not_searched(tree: Path) -> None:
    out = tree / "masks"
    touch(out / "b.png")
    found = discover_inputs([tree], exclude=out)
    assert "masks/b.png" not in relatives(found.images)
    with pytest.raises(InputError, match="also an input folder"):
        discover_inputs([tree], exclude=tree)


# --- outputs and collisions ----------------------------------------------------------------------


def test_output_paths_mirror_the_relative_path(tmp_path: Path) -> None:
    image = InputImage(Path("imgs/a/b.jpg"), PurePosixPath("a/b.jpg"))
    outputs = image.outputs(tmp_path, overlay=True, wide_labels=True)
    assert outputs == OutputPaths(
        mask=tmp_path / "a" / "b.png",
        json=tmp_path / "a" / "b.json",
        overlay=tmp_path / "a" / "b_overlay.jpg",
        color=tmp_path / "a" / "b_color.png",
    )
    assert outputs.files()[-1] == outputs.json  # the completion marker comes last
    plain = image.outputs(tmp_path, overlay=False, wide_labels=False)
    assert plain.files() == (tmp_path / "a" / "b.png", tmp_path / "a" / "b.json")


def test_same_stem_with_two_extensions_collides(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    touch(root / "a" / "x.jpg")
    touch(root / "a" / "x.png")
    images = discover_inputs([root]).images
    with pytest.raises(InputError, match=r"a/x\.jpg and .*a/x\.png would both write"):
        check_collisions(images, tmp_path / "out", overlay=False, wide_labels=False)


def test_same_file_given_twice_collides(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    touch(root / "x.jpg")
    images = discover_inputs([root, f"{root}/"]).images
    assert len(images) == 2
    with pytest.raises(InputError, match="would both write"):
        check_collisions(images, tmp_path / "out", overlay=False, wide_labels=False)


def test_outputs_may_not_take_the_run_files(tmp_path: Path) -> None:
    image = touch(tmp_path / "summary.jpg")
    images = discover_inputs([image]).images
    with pytest.raises(InputError, match=r"summary\.json"):
        check_collisions(
            images,
            tmp_path / "out",
            overlay=False,
            wide_labels=False,
            reserved=reserved_names(None),
        )
    tagged = reserved_names("shard-1-of-2")
    check_collisions(images, tmp_path / "out", overlay=False, wide_labels=False, reserved=tagged)


def test_colour_png_collides_only_with_wide_labels(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    touch(root / "x.jpg")
    touch(root / "x_color.jpg")
    images = discover_inputs([root]).images
    check_collisions(images, tmp_path / "out", overlay=True, wide_labels=False)
    with pytest.raises(InputError, match=r"x_color\.png"):
        check_collisions(images, tmp_path / "out", overlay=False, wide_labels=True)


def test_output_may_not_overwrite_an_input(tmp_path: Path) -> None:
    image = touch(tmp_path / "x.png")
    images = discover_inputs([image]).images
    with pytest.raises(InputError, match="overwrite the input"):
        check_collisions(images, tmp_path, overlay=False, wide_labels=False)
    check_collisions(images, tmp_path / "out", overlay=False, wide_labels=False)
