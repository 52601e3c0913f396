"""The WIDER FACE annotation formats, parsed as a stream.

`*_bbx_gt.txt` (train, val) repeats, per image:
    path/of/image.jpg
    N                                   the face count
    x y w h blur expression illumination invalid occlusion pose      N such lines
An image with no face is written `0` followed by one all-zero line (train) or `1` followed by an
all-zero box (val). Box lines end with a space. The test file list holds one path per line and
no boxes.

A malformed file raises AnnotationError `FILE:LINE: expected ..., found ...` at its first
problem, so a build stops before any shard is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from reader.schema import ATTRIBUTE_MAX

BOX_FIELDS = ("x", "y", "w", "h", "blur", "expression", "illumination", "invalid", "occlusion", "pose")
LIST_FORMATS = ("boxes", "names")


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


def _show(text: str | None) -> str:
    return "end of file" if text is None else repr(text)


class _Lines:
    """Numbered, stripped lines with one line of lookahead."""

    def __init__(self, lines: Iterable[str]):
        self._it = iter(lines)
        self.number = 0
        self._peeked: str | None = None
        self._has_peeked = False

    def peek(self) -> str | None:
        if not self._has_peeked:
            raw = next(self._it, None)
            self._peeked = None if raw is None else raw.strip()
            self._has_peeked = True
        return self._peeked

    def next(self) -> str | None:
        line = self.peek()
        self._has_peeked = False
        if line is not None:
            self.number += 1
        return line


def _parse_box(text: str) -> list[int] | None:
    parts = text.split()
    if len(parts) != len(BOX_FIELDS):
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        return None


def _check_attributes(box: list[int], source: str, line: int) -> None:
    for name, value in zip(BOX_FIELDS[4:], box[4:]):
        if not 0 <= value <= ATTRIBUTE_MAX[name]:
            raise AnnotationError(source, line, f"{name} between 0 and {ATTRIBUTE_MAX[name]}", f"{value} in {box}")


def parse_boxes(lines: Iterable[str], source: str) -> Iterator[ImageAnnotation]:
    """Parses a `*_bbx_gt.txt` stream. `source` names the file in errors."""
    lines = _Lines(lines)
    seen: dict[str, int] = {}
    while True:
        filename = lines.next()
        if filename is None:
            return
        line = lines.number
        if not filename:
            if all(rest == "" for rest in iter(lines.next, None)):
                return  # blank lines at the end of the file
            raise AnnotationError(source, line, "an image path", "an empty line")
        if _parse_box(filename) is not None or filename.isdigit():
            raise AnnotationError(source, line, "an image path", repr(filename))
        if filename in seen:
            raise AnnotationError(source, line, "each image listed once", f"{filename!r} again (first at line {seen[filename]})")
        seen[filename] = line

        count_text = lines.next()
        if count_text is None or not count_text.isdigit():
            raise AnnotationError(source, lines.number + (count_text is None), "a face count (a non-negative integer)", _show(count_text))
        count = int(count_text)

        boxes = []
        for _ in range(count):
            text = lines.next()
            box = None if text is None else _parse_box(text)
            if box is None:
                raise AnnotationError(
                    source, lines.number + (text is None), f"a box line of {len(BOX_FIELDS)} integers ({' '.join(BOX_FIELDS)})", _show(text)
                )
            _check_attributes(box, source, lines.number)
            boxes.append(box)

        if count == 0:
            # The train file's empty image: `0` and one all-zero line. Accept the line's absence.
            placeholder = lines.peek()
            box = None if placeholder is None else _parse_box(placeholder)
            if box is not None:
                lines.next()
                if any(box):
                    raise AnnotationError(source, lines.number, "an all-zero line after a face count of 0", repr(placeholder))
        elif count == 1 and not any(boxes[0]):
            boxes = []  # the val file's empty image: `1` and an all-zero box

        faces = np.array(boxes, dtype=np.int32).reshape(-1, len(BOX_FIELDS))
        yield ImageAnnotation(filename, line, faces)


def parse_names(lines: Iterable[str], source: str) -> Iterator[ImageAnnotation]:
    """Parses the test file list: one image path per line, no boxes."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        filename = raw.strip()
        if not filename:
            continue
        if len(filename.split()) != 1:
            raise AnnotationError(source, number, "one image path per line", repr(filename))
        if filename in seen:
            raise AnnotationError(source, number, "each image listed once", f"{filename!r} again (first at line {seen[filename]})")
        seen[filename] = number
        yield ImageAnnotation(filename, number, np.zeros((0, len(BOX_FIELDS)), np.int32))


def parse(lines: Iterable[str], source: str, list_format: str) -> Iterator[ImageAnnotation]:
    """Parses either format: "boxes" (`*_bbx_gt.txt`) or "names" (the test file list)."""
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
