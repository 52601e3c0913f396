"""The WIDER FACE annotation formats, parsed as a stream.

`*_bbx_gt.txt` (train, val) repeats, per image:
    path/of/image.jpg
    N                                   the face count
    x y w h blur expression illumination invalid occlusion pose      N such lines
An image with no face is written `0` followed by one all-zero line (train) or `1` followed by an
all-zero box (val); a `0` without its zero line is accepted too. Box lines end with a space.
Blank lines may end the file. The test file list holds one path per line and no boxes; blank
lines there are skipped anywhere.

Input: an iterable of lines, as `bytes` (a binary file object: what the Beam job passes) or as
`str` (a text file, a list of lines). A file object is read in pieces of at most 64 KiB. Lines
end in LF, CRLF or CR (universal newlines, as Python's text mode reads them, so both inputs
number lines alike); each line is decoded as UTF-8 on its own, strictly; one UTF-8 byte-order
mark at the start of the file is dropped. Spaces and tabs around a line, and between numbers,
are not part of it.

A malformed file raises AnnotationError `FILE:LINE: expected ..., found ...` (the found part cut
short) at its first problem, so a build stops before any shard is written. Nothing else escapes
the parsers on any bytes. (A text file decodes before the parser sees it: its own
UnicodeDecodeError is raised by the caller's file object, which is why the job passes bytes.)
Refused:
- a line longer than MAX_LINE_BYTES (a binary file is refused without being read whole);
- a line that is not UTF-8;
- a path holding a control character (C0, DEL, C1, U+2028/2029, or a byte-order mark not at
  the start of the file), or a line of numbers where a path belongs;
- counts other than ASCII digits, box values other than ASCII digits after an optional `-`
  (int() would also take `²`, `١` and `3_37`), values outside int32 and attributes outside
  reader.core.schema.ATTRIBUTE_MAX;
- an image listed twice, compared after posixpath.normpath (`d/./x.jpg`, `d//x.jpg` and
  `./d/x.jpg` are all `d/x.jpg`). The path is kept as written; one leaving the images directory
  is not refused here: it becomes that image's error when the image is read;
- a file without any image (empty, blank lines only, or a byte-order mark only), which would
  otherwise build an empty split over a good one.
"""

from __future__ import annotations

import dataclasses
import operator
import posixpath
import re
from collections.abc import Iterable, Iterator

import numpy as np

from reader.core.schema import ATTRIBUTE_MAX, ATTRIBUTES

BOX_FIELDS = ("x", "y", "w", "h", *ATTRIBUTES)  # a face line: its box (`xywh` source pixels), its attributes
LIST_FORMATS = ("boxes", "names")
MAX_LINE_BYTES = 64 * 1024  # the real files' longest line is 136 bytes
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_READ_SIZE = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_PADDING = " \t"
# Explicit ASCII classes: `\d` and int() also take other scripts' digits.
_COUNT = re.compile(r"[0-9]+")
_INTEGERS = re.compile(r"-?[0-9]+(?:[ \t]+-?[0-9]+)*")  # a line of integers, already stripped
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_SHOW_CHARS = 80


class AnnotationError(ValueError):
    """A malformed annotation file. The message is `FILE:LINE: expected ..., found ...`."""

    def __init__(self, source: str, line: int, expected: str, found: str):
        super().__init__(f"{source}:{line}: expected {expected}, found {found}")
        self.source, self.line = source, line


@dataclasses.dataclass(frozen=True, eq=False)
class ImageAnnotation:
    """One image of an annotation file.

    filename: the path as written, relative to the images directory.
    line: 1-based line of the filename in its file.
    faces: int32 [N, 10] in BOX_FIELDS order; box part in `xywh` source pixels. Empty-image
      placeholders are not faces: such an image has N = 0.
    """

    filename: str
    line: int
    faces: np.ndarray

    @property
    def xywh(self) -> np.ndarray:
        return self.faces[:, :4]

    @property
    def attributes(self) -> np.ndarray:
        return self.faces[:, 4:]


def _cut(text: str, limit: int = _SHOW_CHARS) -> str:
    """text, cut to `limit` characters: errors stay one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: str | bytes) -> str:
    return _cut(repr(value))


def _show(text: str | None) -> str:
    return "end of file" if text is None else _short(text)


def _pieces(lines: Iterable[str | bytes]) -> Iterator[tuple[bytes, bool]]:
    """(bytes, whole) pieces of the input. A file object is read in bounded pieces that may end
    mid-line (whole=False), so a file without line breaks is never read whole; the items of any
    other iterable are lines (whole=True: an item's last line may lack its ending)."""
    read = getattr(lines, "read", None)
    if callable(read):
        while piece := read(_READ_SIZE):
            yield _as_bytes(piece), False
    else:
        for item in lines:
            yield _as_bytes(item), True


def _as_bytes(piece: str | bytes) -> bytes:
    # str input goes back to bytes so that one strict decoder judges both kinds of input; a
    # lone surrogate survives the trip and is then refused as not UTF-8.
    return piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else bytes(piece)


def _whole_lines(data: bytes) -> list[bytes]:
    """The lines of `data` without their endings; the last may lack its ending."""
    *lines, last = _LINE_BREAK.split(data)
    return lines + [last] if last else lines


def _check_length(data: bytes, source: str, number: int) -> None:
    if len(data) > MAX_LINE_BYTES:
        raise AnnotationError(
            source, number, f"a line of at most {MAX_LINE_BYTES} bytes", f"a longer line starting {_short(data[:32])}"
        )


def _decode(data: bytes, source: str, number: int) -> str:
    """Line `number` as text: strict UTF-8, without the file's byte-order mark."""
    _check_length(data, source, number)
    if number == 1 and data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if number == 1 and data.startswith(_UTF16_BOMS):
            raise AnnotationError(source, number, "UTF-8 text", f"a UTF-16 byte-order mark in {_short(data)}") from None
        raise AnnotationError(
            source, number, "UTF-8 text", f"{_short(data[error.start : error.end])} in {_short(data)}"
        ) from None


def _text_lines(lines: Iterable[str | bytes], source: str) -> Iterator[str]:
    """The decoded lines of the input, without their endings: the n-th yielded is line n."""
    number = 0
    pending: list[bytes] = []  # reads holding the start of an unfinished line
    size = 0
    for piece, whole in _pieces(lines):
        if not whole and size + len(piece) <= MAX_LINE_BYTES and b"\n" not in piece and b"\r" not in piece:
            pending.append(piece)  # joined once the line ends: short reads stay linear
            size += len(piece)
            continue
        if whole:
            complete, rest, held = _whole_lines(piece), b"", b""
        else:
            data = b"".join(pending) + piece
            # A CR that ends a read may be the first half of a CRLF: keep it for the next read.
            held = b"\r" if data.endswith(b"\r") else b""
            *complete, rest = _LINE_BREAK.split(data[: len(data) - len(held)])
        for data in complete:
            number += 1
            yield _decode(data, source, number)
        _check_length(rest, source, number + 1)  # before reading on into a huge line
        pending, size = [rest + held], len(rest) + len(held)
    for data in _whole_lines(b"".join(pending)):
        number += 1
        yield _decode(data, source, number)


class _Lines:
    """Numbered lines stripped of spaces and tabs, with one line of lookahead."""

    def __init__(self, lines: Iterable[str | bytes], source: str):
        self._it = _text_lines(lines, source)
        self.number = 0
        self._peeked: str | None = None
        self._has_peeked = False

    def peek(self) -> str | None:
        if not self._has_peeked:
            raw = next(self._it, None)
            self._peeked = None if raw is None else raw.strip(_PADDING)
            self._has_peeked = True
        return self._peeked

    def next(self) -> str | None:
        line = self.peek()
        self._has_peeked = False
        if line is not None:
            self.number += 1
        return line


def _int32(token: str) -> int | None:
    """The value of an ASCII integer token (`-?[0-9]+`), or None when outside int32."""
    digits = token.lstrip("-").lstrip("0") or "0"
    if len(digits) > 10:  # outside int32 at any rate; also keeps int() off its 4,300-digit limit
        return None
    value = -int(digits) if token.startswith("-") else int(digits)
    return value if INT32_MIN <= value <= INT32_MAX else None


def _integers(text: str) -> list[str] | None:
    """The tokens of a stripped line of ASCII integers separated by spaces or tabs, else None."""
    # Once the line matches, str.split() can only split at spaces and tabs.
    return text.split() if _INTEGERS.fullmatch(text) else None


_LOWEST = (INT32_MIN,) * 4 + (0,) * 6
_HIGHEST = (INT32_MAX,) * 4 + tuple(ATTRIBUTE_MAX[name] for name in BOX_FIELDS[4:])


def _box_values(tokens: list[str], text: str, source: str, line: int) -> list[int]:
    """The values of a box line's 10 integer tokens; refuses the first outside int32 (numpy
    would overflow) or outside ATTRIBUTE_MAX."""
    # Up to 11 characters (`-2147483648`) int() is cheap, and exact.
    values = list(map(int, tokens)) if max(map(len, tokens)) <= 11 else [_int32(token) for token in tokens]
    if None in values or not (all(map(operator.le, _LOWEST, values)) and all(map(operator.le, values, _HIGHEST))):
        column = next(i for i, value in enumerate(values) if value is None or not _LOWEST[i] <= value <= _HIGHEST[i])
        name = BOX_FIELDS[column]
        expected = (
            f"{name} within int32 ({INT32_MIN} to {INT32_MAX})" if column < 4 else f"{name} between 0 and {_HIGHEST[column]}"
        )
        raise AnnotationError(source, line, expected, f"{_cut(tokens[column], 24)} in {_short(text)}")
    return values


class _Listed:
    """The images seen so far, by normalized path: refuses one listed twice."""

    def __init__(self, source: str):
        self._source = source
        self._first: dict[str, tuple[int, str]] = {}

    def add(self, filename: str, line: int) -> None:
        first_line, first_name = self._first.setdefault(posixpath.normpath(filename), (line, filename))
        if first_line != line:
            spelled = "" if first_name == filename else f" as {_short(first_name)}"
            raise AnnotationError(
                self._source, line, "each image listed once", f"{_short(filename)} again (first at line {first_line}{spelled})"
            )

    def require_some(self, lines_read: int) -> None:
        if not self._first:
            found = "an empty file" if lines_read == 0 else f"only blank lines ({lines_read})"
            raise AnnotationError(self._source, 1, "at least one image", found)


def _check_path(filename: str, source: str, line: int) -> None:
    if _CONTROL.search(filename):
        raise AnnotationError(source, line, "an image path without control characters", _short(filename))


def parse_boxes(lines: Iterable[str | bytes], source: str) -> Iterator[ImageAnnotation]:
    """Parses a `*_bbx_gt.txt` stream of bytes or str lines. `source` names the file in errors.

    Yields one ImageAnnotation per image, in file order; raises AnnotationError at the first
    problem (see the module docstring).
    """
    lines = _Lines(lines, source)
    listed = _Listed(source)
    box_line = f"a box line of {len(BOX_FIELDS)} integers ({' '.join(BOX_FIELDS)})"
    while True:
        filename = lines.next()
        if filename is None:
            break
        line = lines.number
        if not filename:
            if all(rest == "" for rest in iter(lines.next, None)):
                break  # blank lines at the end of the file
            raise AnnotationError(source, line, "an image path", "an empty line")
        _check_path(filename, source, line)
        if _integers(filename) is not None:
            raise AnnotationError(source, line, "an image path", _short(filename))  # most likely a miscount
        listed.add(filename, line)

        count_text = lines.next()
        if count_text is None or not _COUNT.fullmatch(count_text):
            raise AnnotationError(
                source, lines.number + (count_text is None), "a face count (a non-negative integer)", _show(count_text)
            )
        count = _int32(count_text)
        if count is None:
            raise AnnotationError(source, lines.number, f"a face count of at most {INT32_MAX}", _short(count_text))

        # Boxes grow with the lines read, never with the count: a huge count fails at the first
        # line that is not a box instead of allocating first.
        boxes = []
        for _ in range(count):
            text = lines.next()
            tokens = None if text is None else _integers(text)
            if tokens is None or len(tokens) != len(BOX_FIELDS):
                raise AnnotationError(source, lines.number + (text is None), box_line, _show(text))
            boxes.append(_box_values(tokens, text, source, lines.number))

        if count == 0:
            # The train file's empty image: `0` and one all-zero line. Accept the line's absence.
            placeholder = lines.peek()
            tokens = None if placeholder is None else _integers(placeholder)
            if tokens is not None and len(tokens) == len(BOX_FIELDS):
                lines.next()
                if any(_box_values(tokens, placeholder, source, lines.number)):
                    raise AnnotationError(source, lines.number, "an all-zero line after a face count of 0", _short(placeholder))
        elif count == 1 and not any(boxes[0]):
            boxes = []  # the val file's empty image: `1` and an all-zero box
        faces = np.array(boxes, dtype=np.int32).reshape(-1, len(BOX_FIELDS))
        yield ImageAnnotation(filename, line, faces)
    listed.require_some(lines.number)


def parse_names(lines: Iterable[str | bytes], source: str) -> Iterator[ImageAnnotation]:
    """Parses the test file list (bytes or str lines): one image path per line, no boxes.

    Yields one ImageAnnotation per path, with no faces; raises AnnotationError at the first
    problem (see the module docstring).
    """
    listed = _Listed(source)
    number = 0
    for number, raw in enumerate(_text_lines(lines, source), start=1):
        filename = raw.strip(_PADDING)
        if not filename:
            continue
        _check_path(filename, source, number)
        listed.add(filename, number)
        yield ImageAnnotation(filename, number, np.zeros((0, len(BOX_FIELDS)), np.int32))
    listed.require_some(number)


def parse(lines: Iterable[str | bytes], source: str, list_format: str) -> Iterator[ImageAnnotation]:
    """Parses either format: "boxes" (`*_bbx_gt.txt`) or "names" (the test file list).

    lines: a binary file object (or any iterable of bytes or str lines); source: the file's name
    in errors. Yields ImageAnnotations; raises AnnotationError on a malformed file, and
    ValueError (at once) on an unknown list_format.
    """
    if list_format == "boxes":
        return parse_boxes(lines, source)
    if list_format == "names":
        return parse_names(lines, source)
    raise ValueError(f"list_format must be one of {LIST_FORMATS}, got {list_format!r}")


ZERO_LINE = "0 0 0 0 0 0 0 0 0 0 "


def box_lines(faces, split: str) -> list[str]:
    """The count line and box lines of one image, byte for byte as the WIDER .txt files write
    them (`faces`: [N, 10] ints in BOX_FIELDS order). An image without faces gets the train
    file's placeholder (`0` and a zero line) or the val file's (`1` and a zero box)."""
    rows = np.asarray(faces, dtype=np.int64).reshape(-1, len(BOX_FIELDS)).tolist()
    if not rows:
        return ["0" if split == "train" else "1", ZERO_LINE]
    return [str(len(rows))] + ["".join(f"{v} " for v in row) for row in rows]


def format_boxes(entries, split: str) -> str:
    """A whole `*_bbx_gt.txt` file from (filename, faces) pairs: what `parse_boxes` reads."""
    return "".join(f"{line}\n" for filename, faces in entries for line in (filename, *box_lines(faces, split)))


def list_format_for_split(split: str) -> str:
    """The test split ships a file list; train and val ship boxes."""
    return "names" if split == "test" else "boxes"
