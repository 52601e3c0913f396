import io
import tracemalloc

import numpy as np
import pytest

from pipeline import annotations
from pipeline.annotations import AnnotationError, parse_boxes, parse_names
from tests.support.paths import FIXTURE_ANNOTATIONS


def _parse(text: str | bytes, source: str = "gt.txt"):
    """Parses a whole `*_bbx_gt.txt` given as str (a text file) or bytes (a binary file)."""
    return list(parse_boxes(io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text), source))


def _rows(images):
    return [(i.filename, i.line, i.faces.tolist()) for i in images]


def test_real_train_file(wider_split_dir):
    with open(wider_split_dir / "wider_face_train_bbx_gt.txt", "rb") as f:  # binary, as the Beam job reads it
        images = list(parse_boxes(f, "train"))
    assert len(images) == 12_880
    assert images[-1].line == 185_182 and sum(i.line for i in images) == 1_410_873_852
    assert sum(len(i.faces) for i in images) == 159_420  # 159,424 box lines less 4 placeholders
    assert sum(len(i.faces) == 0 for i in images) == 4
    faces = np.concatenate([i.faces for i in images])
    assert int((faces[:, 7] == 1).sum()) == 2_399  # invalid
    assert int(((faces[:, 2] <= 0) | (faces[:, 3] <= 0)).sum()) == 27  # degenerate beyond placeholders
    assert max(len(i.faces) for i in images) == 1_968


def test_real_val_file(wider_split_dir):
    with open(wider_split_dir / "wider_face_val_bbx_gt.txt", "rb") as f:
        images = list(parse_boxes(f, "val"))
    assert len(images) == 3_226
    assert images[-1].line == 46_156 and sum(i.line for i in images) == 89_723_313
    assert sum(len(i.faces) for i in images) == 39_704
    assert sum(len(i.faces) == 0 for i in images) == 4
    faces = np.concatenate([i.faces for i in images])
    assert int((faces[:, 7] == 1).sum()) == 585
    assert int(((faces[:, 2] <= 0) | (faces[:, 3] <= 0)).sum()) == 7
    assert max(len(i.faces) for i in images) == 709
    assert int((faces[:, 1] + faces[:, 3]).max()) == 4_441  # far past any 1024-px-wide image's bottom


def test_real_test_file_list(wider_split_dir):
    with open(wider_split_dir / "wider_face_test_filelist.txt", "rb") as f:
        images = list(parse_names(f, "test"))
    assert len(images) == 16_097
    assert sum(i.line for i in images) == 129_564_753
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
@pytest.mark.parametrize("kind", [str, bytes])
def test_malformed_files_name_file_and_line(text, line, expected, kind):
    with pytest.raises(AnnotationError) as caught:
        _parse(text if kind is str else text.encode(), "some/gt.txt")
    assert str(caught.value).startswith(f"some/gt.txt:{line}: ")
    assert expected in str(caught.value)
    assert caught.value.line == line


def test_file_list_format():
    images = list(parse_names(io.StringIO("a/1.jpg\n\nb/2.jpg\n"), "list"))
    assert [(i.filename, i.line) for i in images] == [("a/1.jpg", 1), ("b/2.jpg", 3)]
    # A path may hold spaces, as in the box files (the line is the path, padding stripped).
    spaced = list(parse_names(io.StringIO("a.jpg\n  my photos/b c.jpg \n"), "list"))
    assert [i.filename for i in spaced] == ["a.jpg", "my photos/b c.jpg"]


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


# Issue 10, item 2: each case below was seen to surprise the parser (a raw traceback, a wrong
# value, or a wrong build); each must be a one-line `FILE:LINE: expected ..., found ...`.
BOX_LINE = "expected a box line of 10 integers"
COUNT = "expected a face count (a non-negative integer)"
INT32 = "within int32 (-2147483648 to 2147483647)"


@pytest.mark.parametrize(
    "data, line, expected",
    [
        # Not UTF-8: was a raw UnicodeDecodeError.
        ("0--Parade/caf\xe9.jpg\n0\n".encode("latin-1"), 1, r"expected UTF-8 text, found b'\xe9' in b'0--Parade/caf\xe9.jpg'"),
        (b"a.jpg\n0\nb\xff.jpg\n0\n", 3, r"expected UTF-8 text, found b'\xff' in b'b\xff.jpg'"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256)) * 40,
            1,
            r"expected UTF-8 text, found b'\xff' in b'\xff\xd8",
        ),
        ("a.jpg\n0\n".encode("utf-16"), 1, "expected UTF-8 text, found a UTF-16 byte-order mark"),
        (b"a.jpg\n0\n\xef\xbb\xbfb.jpg\n0\n", 3, r"without control characters, found '\ufeffb.jpg'"),  # a BOM inside
        # Beyond int32: was numpy's OverflowError; 5,000 digits was int()'s ValueError.
        (b"a.jpg\n1\n1 2 3 99999999999 0 0 0 0 0 0\n", 3, f"expected h {INT32}, found 99999999999 in '1 2 3 99999999999"),
        (
            b"a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n1\n-2147483649 2 3 4 0 0 0 0 0 0\n",
            6,
            f"expected x {INT32}, found -2147483649 in",
        ),
        (b"a.jpg\n1\n1 " + b"9" * 5000 + b" 3 4 0 0 0 0 0 0\n", 3, f"expected y {INT32}, found {'9' * 21}... in '1 999"),
        (b"a.jpg\n1\n1 2 3 4 0 0 0 99999999999 0 0\n", 3, "expected invalid between 0 and 1, found 99999999999"),
        (b"a.jpg\n2147483648\n", 2, "expected a face count of at most 2147483647, found '2147483648'"),
        (b"a.jpg\n" + b"9" * 5000 + b"\n", 2, "expected a face count of at most 2147483647, found '99999"),
        # Digits int() takes but the format does not: `²` was a ValueError, `3_37` read as 337, `١` as 1.
        ("a.jpg\n\u00b2\n".encode(), 2, f"{COUNT}, found '\u00b2'"),
        (b"a.jpg\n3_37\n", 2, f"{COUNT}, found '3_37'"),
        ("a.jpg\n\u0661\n".encode(), 2, f"{COUNT}, found '\u0661'"),
        ("a.jpg\n\uff11\n".encode(), 2, f"{COUNT}, found '\uff11'"),  # fullwidth 1
        (b"a.jpg\n+1\n", 2, f"{COUNT}, found '+1'"),
        (b"a.jpg\n1 1\n", 2, f"{COUNT}, found '1 1'"),
        (b"a.jpg\n1\x0c\n", 2, f"{COUNT}, found '1\\x0c'"),  # str.strip() used to take the form feed
        ("a.jpg\n1\n1 2 3 \u0664 0 0 0 0 0 0\n".encode(), 3, BOX_LINE),
        ("a.jpg\n1\n1 2 3 4\u00b2 0 0 0 0 0 0\n".encode(), 3, BOX_LINE),
        (b"a.jpg\n1\n1 2 3 4_0 0 0 0 0 0 0\n", 3, BOX_LINE),
        (b"a.jpg\n1\n1 2 +3 4 0 0 0 0 0 0\n", 3, BOX_LINE),
        (b"a.jpg\n1\n1 2 --3 4 0 0 0 0 0 0\n", 3, BOX_LINE),
        ("a.jpg\n1\n1 2 3\u00a04 0 0 0 0 0 0\n".encode(), 3, BOX_LINE),  # no-break space is not a separator
        (b"a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\x00\n", 3, BOX_LINE),
        # Control characters in a path.
        (b"a\x00.jpg\n0\n", 1, r"expected an image path without control characters, found 'a\x00.jpg'"),
        (b"a\tb.jpg\n0\n", 1, r"found 'a\tb.jpg'"),
        (b"a\x1b[31m.jpg\n0\n", 1, r"found 'a\x1b[31m.jpg'"),
        ("a\x85.jpg\n0\n".encode(), 1, r"found 'a\x85.jpg'"),
        ("a\u2028.jpg\n0\n".encode(), 1, r"found 'a\u2028.jpg'"),
        (b"a.jpg\n0\n1 2 3\n0\n", 3, "expected an image path, found '1 2 3'"),  # numbers where a path belongs
        # The same image twice once paths are normalized: was stored twice.
        (
            b"dir/x.jpg\n0\ndir/./x.jpg\n0\n",
            3,
            "expected each image listed once, found 'dir/./x.jpg' again (first at line 1 as 'dir/x.jpg')",
        ),
        (b"dir//x.jpg\n0\ndir/x.jpg\n0\n", 3, "found 'dir/x.jpg' again (first at line 1 as 'dir//x.jpg')"),
        (b"./dir/x.jpg\n0\ndir/y.jpg\n0\ndir/x.jpg\n0\n", 5, "found 'dir/x.jpg' again (first at line 1 as './dir/x.jpg')"),
        (b"dir/x.jpg\n0\ndir/../dir/x.jpg\n0\n", 3, "again (first at line 1"),
        # No image at all: built an empty split over a good one.
        (b"", 1, "expected at least one image, found an empty file"),
        (b"\n\n \t\n", 1, "expected at least one image, found only blank lines (3)"),
        (b"\xef\xbb\xbf", 1, "expected at least one image, found only blank lines (1)"),
        (b"\xef\xbb\xbf\r\n", 1, "expected at least one image, found only blank lines (1)"),
        # A line past the cap (a binary file without line breaks).
        (
            b"a.jpg\n0\n" + b"b" * (annotations.MAX_LINE_BYTES + 1) + b"\n0\n",
            3,
            "expected a line of at most 65536 bytes, found a longer line starting b'bbb",
        ),
    ],
)
def test_surprising_input_is_refused_with_file_and_line(data, line, expected):
    with pytest.raises(AnnotationError) as caught:
        _parse(data, "some/gt.txt")
    message = str(caught.value)
    assert message.startswith(f"some/gt.txt:{line}: expected "), message
    assert expected in message, message
    assert caught.value.line == line
    assert len(message) < 250 and "\n" not in message, message


def test_a_utf8_bom_at_the_start_is_not_part_of_the_first_path():
    data = "\ufeffa.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    assert _rows(_parse(data.encode())) == _rows(_parse(data)) == [("a.jpg", 1, [[1, 2, 3, 4, 0, 0, 0, 0, 0, 0]])]
    assert [i.filename for i in parse_names(io.BytesIO(b"\xef\xbb\xbfa.jpg\r\nb.jpg\r\n"), "list")] == ["a.jpg", "b.jpg"]


def test_paths_are_kept_as_written_and_escapes_are_left_to_the_image_reader():
    images = _parse(b"./dir/x.jpg\n0\ndir//y.jpg\n0\n../outside.jpg\n0\n/abs.jpg\n0\n")
    assert [i.filename for i in images] == ["./dir/x.jpg", "dir//y.jpg", "../outside.jpg", "/abs.jpg"]
    with pytest.raises(
        AnnotationError,
        match=r"^list:3: expected each image listed once, found 'a/b.jpg' again \(first at line 1 as 'a/./b.jpg'\)$",
    ):
        list(parse_names(io.BytesIO(b"a/./b.jpg\n\na/b.jpg\n"), "list"))


def test_a_file_list_without_any_path_is_refused():
    for data in (b"", b"\n\n", b"\xef\xbb\xbf\n"):
        with pytest.raises(AnnotationError, match=r"^list:1: expected at least one image, found "):
            list(parse_names(io.BytesIO(data), "list"))
    with pytest.raises(AnnotationError, match=r"^list:2: expected an image path without control characters, found 'b\\x00.jpg'$"):
        list(parse_names(io.BytesIO(b"a.jpg\nb\x00.jpg\n"), "list"))
    with pytest.raises(AnnotationError, match=r"^list:1: expected UTF-8 text, found b'\\xe9' in b'caf\\xe9.jpg'$"):
        list(parse_names(io.BytesIO(b"caf\xe9.jpg\n"), "list"))


class _CountingReader(io.BytesIO):
    """A binary file that counts the bytes handed out."""

    handed_out = 0

    def read(self, size=-1):
        data = super().read(size)
        self.handed_out += len(data)
        return data


def test_a_binary_file_without_line_breaks_is_refused_without_reading_it_whole():
    reader = _CountingReader(b"\x89PNG" + b"x" * (64 << 20))  # 64 MiB, one "line"
    with pytest.raises(
        AnnotationError, match=r"^big:1: expected a line of at most 65536 bytes, found a longer line starting b'\\x89PNGxxx"
    ):
        list(parse_boxes(reader, "big"))
    assert reader.handed_out <= 2 * annotations.MAX_LINE_BYTES


def test_a_huge_face_count_fails_at_the_first_missing_box_without_allocating_for_it():
    tracemalloc.start()
    try:
        with pytest.raises(AnnotationError, match=rf"^gt.txt:4: {BOX_LINE} .*, found end of file$"):
            _parse(b"a.jpg\n2147483647\n1 2 3 4 0 0 0 0 0 0\n")
        with pytest.raises(AnnotationError, match=rf"^gt.txt:4: {BOX_LINE} .*, found 'b.jpg'$"):
            _parse(b"a.jpg\n2147483647\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n0\n")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_line_endings_input_kinds_and_read_sizes_agree():
    with open(FIXTURE_ANNOTATIONS, "rb") as f:
        data = f.read()
    expected = _rows(_parse(data.decode()))
    for ending in (b"\n", b"\r\n", b"\r"):
        variant = data.replace(b"\n", ending)
        assert _rows(_parse(variant)) == expected  # a binary file (CR-only too: universal newlines)
        assert _rows(parse_boxes(variant.splitlines(keepends=True), "list of lines")) == expected
        assert _rows(parse_boxes(_Trickle(variant), "trickle")) == expected  # a CRLF split between two reads
    assert _rows(parse_boxes(data.decode().splitlines(), "lines without endings")) == expected


class _Trickle(io.BytesIO):
    """A binary file that hands out at most 3 bytes per read: every line and CRLF gets split."""

    def read(self, size=-1):
        return super().read(3)


def test_tabs_and_spaces_around_and_between_values_are_padding():
    images = _parse(b"a.jpg \t\r\n\t1\r\n 1\t2  3 \t4 0 0 0 0 0 0\t\r\n")
    assert _rows(images) == [("a.jpg", 1, [[1, 2, 3, 4, 0, 0, 0, 0, 0, 0]])]
    assert _rows(_parse(b"a.jpg\n1\n-0 007 3 4 0 0 0 0 0 0\n")) == [("a.jpg", 1, [[0, 7, 3, 4, 0, 0, 0, 0, 0, 0]])]


def test_int32_limits_are_values():
    images = _parse(b"a.jpg\n1\n-2147483648 2147483647 000000000000000000003 4 0 0 0 0 0 0\n")
    assert images[0].faces.dtype == np.int32
    assert images[0].faces.tolist() == [[-2147483648, 2147483647, 3, 4, 0, 0, 0, 0, 0, 0]]


def test_str_input_is_judged_as_its_utf8_bytes():
    with pytest.raises(AnnotationError, match=r"^gt.txt:1: expected UTF-8 text, found b'\\xed' in b'a\\xed\\xa0\\x80.jpg'$"):
        _parse("a\ud800.jpg\n0\n")  # a lone surrogate, as errors="surrogateescape" leaves them
