import io

import numpy as np
import pytest

from pipeline import annotations
from pipeline.annotations import AnnotationError, parse_boxes, parse_names
from tests.conftest import FIXTURE_ANNOTATIONS


def _parse(text: str, source: str = "gt.txt"):
    return list(parse_boxes(io.StringIO(text), source))


def test_real_train_file(wider_split_dir):
    with open(wider_split_dir / "wider_face_train_bbx_gt.txt") as f:
        images = list(parse_boxes(f, "train"))
    assert len(images) == 12_880
    assert sum(len(i.faces) for i in images) == 159_420  # 159,424 box lines less 4 placeholders
    assert sum(len(i.faces) == 0 for i in images) == 4
    faces = np.concatenate([i.faces for i in images])
    assert int((faces[:, 7] == 1).sum()) == 2_399  # invalid
    assert int(((faces[:, 2] <= 0) | (faces[:, 3] <= 0)).sum()) == 27  # degenerate beyond placeholders
    assert max(len(i.faces) for i in images) == 1_968


def test_real_val_file(wider_split_dir):
    with open(wider_split_dir / "wider_face_val_bbx_gt.txt") as f:
        images = list(parse_boxes(f, "val"))
    assert len(images) == 3_226
    assert sum(len(i.faces) for i in images) == 39_704
    assert sum(len(i.faces) == 0 for i in images) == 4
    faces = np.concatenate([i.faces for i in images])
    assert int((faces[:, 7] == 1).sum()) == 585
    assert int(((faces[:, 2] <= 0) | (faces[:, 3] <= 0)).sum()) == 7
    assert max(len(i.faces) for i in images) == 709
    assert int((faces[:, 1] + faces[:, 3]).max()) == 4_441  # far past any 1024-px-wide image's bottom


def test_real_test_file_list(wider_split_dir):
    with open(wider_split_dir / "wider_face_test_filelist.txt") as f:
        images = list(parse_names(f, "test"))
    assert len(images) == 16_097
    assert all(i.faces.shape == (0, 10) for i in images)
    assert images[0].line == 1 and images[0].filename.endswith(".jpg")


def test_quirks_of_the_fixture_file():
    with open(FIXTURE_ANNOTATIONS) as f:
        images = {i.filename: i for i in parse_boxes(f, str(FIXTURE_ANNOTATIONS))}
    assert len(images) == 16
    assert images["12--Group/12_Group_empty_9.jpg"].faces.shape == (0, 10)  # `0` + all-zero line
    assert images["12--Group/12_Group_empty_10.jpg"].faces.shape == (0, 10)  # `1` + all-zero box
    gray = images["0--Parade/0_Parade_gray_3.jpg"]
    assert gray.line == 8
    np.testing.assert_array_equal(gray.xywh[1], [10, 10, 0, 12])  # zero width stays a face here
    np.testing.assert_array_equal(gray.attributes[2], [1, 1, 1, 1, 2, 1])


def test_one_box_per_line_with_or_without_trailing_space():
    images = _parse("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0 \n5 6 7 8 2 1 1 1 2 1\nb.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    assert [i.filename for i in images] == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(images[0].faces[1], [5, 6, 7, 8, 2, 1, 1, 1, 2, 1])
    assert images[1].faces.shape == (0, 10)


def test_count_zero_without_placeholder_line_and_crlf_endings():
    images = _parse("a.jpg\r\n0\r\nb.jpg\r\n1\r\n1 2 3 4 0 0 0 0 0 0 \r\n")
    assert [len(i.faces) for i in images] == [0, 1]


def test_trailing_blank_lines_are_allowed():
    assert len(_parse("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n\n\n")) == 1


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("a.jpg\nx\n", 2, "expected a face count (a non-negative integer), found 'x'"),
        ("a.jpg\n", 2, "expected a face count (a non-negative integer), found end of file"),
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "expected a box line of 10 integers"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "found '1 2 3 4 0 0 0 0 0'"),
        ("a.jpg\n1\n1 2 3 4.5 0 0 0 0 0 0\n", 3, "expected a box line"),
        ("a.jpg\n1\n1 2 3 4 3 0 0 0 0 0\n", 3, "expected blur between 0 and 2, found 3"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 2 0 0\n", 3, "expected invalid between 0 and 1, found 2"),
        ("a.jpg\n0\n1 0 0 0 0 0 0 0 0 0\n", 3, "expected an all-zero line after a face count of 0"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "expected an image path, found '1 2 3 4"),
        ("a.jpg\n-1\n", 2, "found '-1'"),
        ("a.jpg\n0\n\nb.jpg\n0\n", 3, "expected an image path, found an empty line"),
        ("a.jpg\n0\na.jpg\n0\n", 3, "expected each image listed once, found 'a.jpg' again (first at line 1)"),
    ],
)
def test_malformed_files_name_file_and_line(text, line, expected):
    with pytest.raises(AnnotationError) as caught:
        _parse(text, "some/gt.txt")
    assert str(caught.value).startswith(f"some/gt.txt:{line}: ")
    assert expected in str(caught.value)
    assert caught.value.line == line


def test_file_list_format():
    images = list(parse_names(io.StringIO("a/1.jpg\n\nb/2.jpg\n"), "list"))
    assert [(i.filename, i.line) for i in images] == [("a/1.jpg", 1), ("b/2.jpg", 3)]
    with pytest.raises(AnnotationError, match=r"^list:2: expected one image path per line"):
        list(parse_names(io.StringIO("a.jpg\na b.jpg\n"), "list"))


def test_format_follows_the_split():
    assert annotations.list_format_for_split("test") == "names"
    assert annotations.list_format_for_split("val") == "boxes"
    with pytest.raises(ValueError, match="list_format must be one of"):
        annotations.parse([], "x", "csv")


def test_the_writer_is_the_parsers_inverse():
    with open(FIXTURE_ANNOTATIONS) as f:
        text = f.read()
    images = list(parse_boxes(io.StringIO(text), "fixture"))
    # The fixture writes its one empty image the train way and the other the val way; the
    # writer picks one style per file, so compare what both styles parse back to.
    for split in ("train", "val"):
        again = list(parse_boxes(io.StringIO(annotations.format_boxes([(i.filename, i.faces) for i in images], split)), "again"))
        assert [(i.filename, i.faces.tolist()) for i in again] == [(i.filename, i.faces.tolist()) for i in images]
    written = annotations.format_boxes([("a.jpg", [[1, 2, 3, 4, 0, 0, 0, 0, 0, 0]]), ("b.jpg", [])], "val")
    assert written == "a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \nb.jpg\n1\n0 0 0 0 0 0 0 0 0 0 \n"
