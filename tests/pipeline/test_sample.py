"""Tests for pipeline.sample: the generated sample holds every quirk of the real WIDER files."""

import os

import numpy as np
import pytest
from PIL import Image

from pipeline import annotations, sample

KB = 1024
ZERO_LINE = "0 0 0 0 0 0 0 0 0 0 "


def _files(root):
    """Relative path -> bytes of every file under root."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def _parse(path):
    with open(path) as f:
        return list(annotations.parse_boxes(f, path))


def _raw_lines(path):
    with open(path, newline="") as f:
        return f.read().split("\n")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    return root, sample.write_sample(str(root), num_images=48, seed=0)


@pytest.fixture(scope="module")
def parsed(written):
    _, paths = written
    return {"train": _parse(paths.train_annotations), "val": _parse(paths.val_annotations)}


@pytest.fixture(scope="module")
def sizes(written, parsed):
    """filename -> (width, height) of its JPEG."""
    _, paths = written
    found = {}
    for entries in parsed.values():
        for entry in entries:
            with Image.open(os.path.join(paths.images_dir, entry.filename)) as image:
                found[entry.filename] = image.size
    return found


def test_layout_and_split(written, parsed):
    root, paths = written
    assert paths == sample.Sample(
        images_dir=str(root / "images"),
        train_annotations=str(root / "wider_face_split" / "wider_face_train_bbx_gt.txt"),
        val_annotations=str(root / "wider_face_split" / "wider_face_val_bbx_gt.txt"),
    )
    assert (len(parsed["train"]), len(parsed["val"])) == (36, 12)
    filenames = [e.filename for entries in parsed.values() for e in entries]
    assert len(set(filenames)) == 48
    assert sorted(filenames) == sorted(p for p in _files(paths.images_dir))
    for filename in filenames:
        event, name = filename.split("/")
        number, title = event.split("--")
        assert name.startswith(f"{number}_{title}_") and name.endswith(".jpg")


def test_box_lines_end_with_a_space(written):
    _, paths = written
    for path in (paths.train_annotations, paths.val_annotations):
        lines = _raw_lines(path)
        assert lines[-1] == "" and "" not in lines[:-1]  # one newline at the end, no blank line
        box_lines = [line for line in lines if len(line.split()) == 10]
        assert box_lines and all(line.endswith(" ") and not line.endswith("  ") for line in box_lines)
        assert "\r" not in "".join(lines)


@pytest.mark.parametrize("split, count", [("train", "0"), ("val", "1")])
def test_empty_image_placeholders(written, parsed, split, count):
    _, paths = written
    lines = _raw_lines(getattr(paths, f"{split}_annotations"))
    empty = [e for e in parsed[split] if len(e.faces) == 0]
    assert len(empty) == 1
    line = empty[0].line  # 1-based: lines[line] is the count, lines[line + 1] the placeholder
    assert lines[line : line + 2] == [count, ZERO_LINE]


def test_box_quirks(parsed, sizes):
    for split, entries in parsed.items():
        faces = np.concatenate([e.faces for e in entries])
        w, h, invalid = faces[:, 2], faces[:, 3], faces[:, 7]
        degenerate = (w == 0) | (h == 0)
        assert (w == 0).any() and (h == 0).any(), split
        assert not invalid[degenerate].any(), "degenerate boxes are not flagged invalid in WIDER"
        assert invalid.any() and not invalid.all(), split
        maxima = np.array([2, 1, 1, 1, 2, 1])
        assert (faces[:, 4:] >= 0).all() and (faces[:, 4:] <= maxima).all()
        assert (faces[:, :4] >= 0).all()

        past_right = past_bottom = False
        for entry in entries:
            width, height = sizes[entry.filename]
            x, y, w, h = entry.xywh.T
            past_right |= bool((x + w > width).any())
            past_bottom |= bool((y + h > height).any())
        assert past_right and past_bottom, split


def test_tiny_and_big_faces(parsed):
    train = parsed["train"]
    crowds = [e for e in train if len(e.faces) >= 100]
    assert crowds
    tiny = crowds[0].xywh[:, 2:]
    assert tiny.min() >= 3 and tiny.max() <= 10
    for split, entries in parsed.items():
        big = [e for e in entries if 0 < len(e.faces) <= 3 and e.xywh[:, 2:].min() >= 150]
        assert big, split


def test_images_are_photo_sized_jpegs(written, parsed, sizes):
    _, paths = written
    modes, progressive = [], []
    for entries in parsed.values():
        for entry in entries:
            path = os.path.join(paths.images_dir, entry.filename)
            assert 150 * KB <= os.path.getsize(path) <= 250 * KB, entry.filename
            with Image.open(path) as image:
                assert image.format == "JPEG"
                image.load()
                modes.append(image.mode)
                progressive.append(bool(image.info.get("progressive")))
    assert {width for width, _ in sizes.values()} == {1024}
    heights = {height for _, height in sizes.values()}
    assert len(heights) > 2 and min(heights) >= 576
    assert modes.count("L") == 1 and set(modes) == {"RGB", "L"}
    assert progressive.count(True) == 1


def test_faces_are_painted_in_their_boxes(written, parsed):
    """The pasted face differs from the photo around it: its centre is skin-toned."""
    _, paths = written
    big = next(e for e in parsed["train"] if 0 < len(e.faces) <= 3)
    with Image.open(os.path.join(paths.images_dir, big.filename)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=int)
    for x, y, w, h in big.xywh:
        r, g, b = pixels[y + h // 2 - 5 : y + h // 2 + 5, x + w // 2 - 5 : x + w // 2 + 5].mean(axis=(0, 1))
        assert r > g > b, (r, g, b)


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path):
    root, _ = written
    sample.write_sample(str(tmp_path / "again"), num_images=48, seed=0)
    sample.write_sample(str(tmp_path / "other"), num_images=48, seed=1)
    first, again, other = _files(root), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    annotation = os.path.join("wider_face_split", "wider_face_train_bbx_gt.txt")
    assert first[annotation] != other[annotation]
    assert not set(first.items()) & set(other.items())


def test_too_small_a_sample_is_refused(tmp_path):
    with pytest.raises(ValueError, match="num_images must be at least 12"):
        sample.write_sample(str(tmp_path), num_images=11)


HAND_WRITTEN = """\
0--Parade/0_Parade_Parade_0_1.jpg
2
10 20 30 36 1 0 0 0 0 0 \n\
1000 100 60 70 0 0 0 0 0 0 \n\
12--Group/nested/12_Group_Group_12_2.jpg
1
0 0 0 0 0 0 0 0 0 0 \n\
13--Interview/13_Interview_Interview_13_3.jpg
1
200 1400 300 380 0 0 0 0 0 0 \n\
../escapes.jpg
0
"""


@pytest.fixture
def annotation_file(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text(HAND_WRITTEN)
    return str(path)


def test_render_images_writes_each_entry(annotation_file, tmp_path):
    images = tmp_path / "images"
    assert sample.render_images(annotation_file, str(images), processes=1) == 3
    assert not (tmp_path / "escapes.jpg").exists()
    written = _files(images)
    assert sorted(written) == [
        "0--Parade/0_Parade_Parade_0_1.jpg",
        "12--Group/nested/12_Group_Group_12_2.jpg",
        "13--Interview/13_Interview_Interview_13_3.jpg",
    ]
    for name, data in written.items():
        assert 150 * KB <= len(data) <= 250 * KB, name
        with Image.open(images / name) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.width == 1024
            if name.startswith("13--"):
                assert image.height >= 1400 + 380  # raised to contain the box
            else:
                assert image.height in (576, 683, 768, 1024, 1366)


def test_render_images_does_not_depend_on_process_count(annotation_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    sample.render_images(annotation_file, str(one), seed=3, processes=1)
    sample.render_images(annotation_file, str(two), seed=3, processes=2)
    assert _files(one) == _files(two)
    sample.render_images(annotation_file, str(two), seed=4, processes=1, skip_existing=False)
    assert not set(_files(one).items()) & set(_files(two).items())


def test_render_images_skips_existing_files(annotation_file, tmp_path):
    images = str(tmp_path / "images")
    assert sample.render_images(annotation_file, images, processes=1) == 3
    assert sample.render_images(annotation_file, images, processes=1) == 0
    assert sample.render_images(annotation_file, images, processes=1, skip_existing=False) == 3


def test_render_images_for_a_file_list(tmp_path):
    names = tmp_path / "list.txt"
    names.write_text("0--Parade/a.jpg\n0--Parade/b.jpg\n")
    assert sample.render_images(str(names), str(tmp_path / "images"), processes=1, list_format="names") == 2
    assert sorted(_files(tmp_path / "images")) == ["0--Parade/a.jpg", "0--Parade/b.jpg"]


def test_cli(tmp_path, capsys, annotation_file):
    assert sample.main(["sample", f"--output_dir={tmp_path / 'out'}", "--num_images=12", "--seed=2"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "out" / "wider_face_split" / "wider_face_val_bbx_gt.txt") in printed
    assert len(_parse(str(tmp_path / "out" / "wider_face_split" / "wider_face_train_bbx_gt.txt"))) == 9

    args = ["sample", f"--render_for={annotation_file}", f"--images_dir={tmp_path / 'images'}", "--processes=1"]
    assert sample.main(args) == 0
    assert "wrote 3 images" in capsys.readouterr().out

    assert sample.main(["sample"]) == 2
    assert "exactly one of --output_dir and --render_for" in capsys.readouterr().err
    assert sample.main(["sample", f"--output_dir={tmp_path}", f"--render_for={annotation_file}"]) == 2
    assert sample.main(["sample", f"--render_for={annotation_file}"]) == 2
    assert sample.main(["sample", "--output_dir=x", "--num_images=3"]) == 2
    capsys.readouterr()
    # Mistakes of the user's: one line, no traceback.
    assert sample.main(["sample", f"--render_for={tmp_path / 'nowhere.txt'}", f"--images_dir={tmp_path / 'i'}"]) == 2
    assert (
        capsys.readouterr().err
        == f"pipeline.sample: --render_for={tmp_path / 'nowhere.txt'}: no such file; --help lists every flag\n"
    )
    assert sample.main(["sample", f"--render_for={annotation_file}", f"--images_dir={annotation_file}"]) == 2
    assert "a file, not a directory" in capsys.readouterr().err
    malformed = tmp_path / "bad_gt.txt"
    malformed.write_text("a.jpg\ntwo\n")
    assert sample.main(["sample", f"--render_for={malformed}", f"--images_dir={tmp_path / 'i'}"]) == 1
    assert (
        capsys.readouterr().err
        == f"pipeline.sample: {malformed}:2: expected a face count (a non-negative integer), found 'two'\n"
    )


def test_render_images_reports_progress(annotation_file, tmp_path):
    calls = []
    sample.render_images(annotation_file, str(tmp_path / "one"), processes=1, progress=lambda *c: calls.append(c))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    calls.clear()
    sample.render_images(annotation_file, str(tmp_path / "two"), processes=2, progress=lambda *c: calls.append(c))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_help(capsys):
    assert sample.main(["sample", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "--render_for" in printed and "--processes" in printed
