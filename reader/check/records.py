"""The checker's per-record checks: one serialized record in, its problems and facts out.

Pure functions of the record bytes and the build's config (no file access), so the checker runs
them in worker processes and the tests run them on hand-made records. Never imports TensorFlow:
Pillow decodes the JPEGs (`reader.core.images`).

A record is checked in order; a failing step stops the steps that depend on it:
    schema    the bytes are a tf.train.Example holding every key of the schema, with its kind
              and length (grid of the manifest's grid size), and bytes values that make sense
    images    image/encoded decodes as image/format says to input_size x input_size x 3
    ranges    boxes in [0, 1] with min <= max; grid h, w in (0, 1], offsets in [0, 1), obj in
              {0, 1} and all channels 0 where obj is 0; ignore in {0, 1} and never under a
              target; dropped >= 0; labels 1; WIDER attributes within their ranges; and the
              keys derived for other tools as the record gives them: class/text `face`,
              is_crowd equal to invalid, area the box's in stored pixels (to 1e-5 of it),
              source_id the one of image/filename (`schema.source_id`)
    targets   grid, ignore and dropped equal what `reader.core.targets.encode_faces` recomputes from
              the stored boxes, invalid flags and original size, bit for bit: the build encodes
              from the same float32 boxes by the same rule

Records of builds made before the derived keys (schema.DERIVED_KEYS) fail the schema step here;
training never reads those keys, so `schema.record_problem` does not require them.

source_id is unique in a split when filenames are, unless two filenames' hashes collide (none do
in WIDER FACE); `source_id_duplicates` finds such records across a split.

The schema step is `schema.parse_features` and `schema.value_problem`, the images step
`images.image_problem`: the ones the readers call (`schema.record_problem`) on a record they
failed to read, to say why in the checker's words. Grid and image sizes are held to the
manifest's config, and a record of another size says so ("expected 320 values for the
manifest's grid_size 8, found 245 (a 7x7 grid)").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from reader.core import boxes as box_formats
from reader.core import images, schema, targets
from reader.core.config import BuildConfig

# Largest value of each WIDER attribute (all start at 0); see the WIDER FACE readme.
_ATTRIBUTE_MAX = np.array([schema.ATTRIBUTE_MAX[name] for name in schema.ATTRIBUTES])
_SHOWN_CELLS = 3  # cells named per targets problem; the rest are counted
_AREA_RTOL = 1e-5  # of the recomputed area (at least 1 pixel): float32 rounding is far below it


@dataclasses.dataclass(frozen=True)
class RecordFacts:
    """What the split-wide checks and the statistics need from one readable record.

    face_sides: float32 [N], the shorter side of each stored face in pixels of the stored image.
    targets / dropped / ignored: recomputed from the boxes (not read from the record); 0 when
    they cannot be (see `recompute_targets`).
    source_id: image/source_id as stored (unique in a split: see `source_id_duplicates`).
    """

    filename: str
    sha256: str
    faces: int
    face_sides: np.ndarray
    targets: int
    dropped: int
    ignored: int
    source_id: str = ""


Problems = list[tuple[str, str]]  # (check name, message)


def check_record(data: bytes, config: BuildConfig) -> tuple[RecordFacts | None, Problems]:
    """Checks one serialized record. Returns its facts (None when it is not a readable record
    of the schema) and its problems as (check, message) pairs, in check order."""
    problems: Problems = []
    try:
        fields = parse(data, config)
    except schema.SchemaError as e:
        return None, [("schema", str(e))]

    problems += (("images", m) for m in _image_problems(fields, config))
    problems += (("ranges", m) for m in _range_problems(fields))
    problems += (("ranges", m) for m in _derived_problems(fields))

    boxes = fields["boxes"]
    counts = (0, 0, 0)
    recomputed = recompute_targets(fields, config)
    if recomputed is not None:
        problems += (("targets", m) for m in _target_problems(fields, recomputed))
        counts = (recomputed.targets, recomputed.dropped, recomputed.ignored)
    # else: the ranges check names the non-finite box or the bad original size.
    sides = (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * config.input_size).astype(np.float32)
    return RecordFacts(fields["filename"], fields["sha256"], len(boxes), sides, *counts, fields["source_id"]), problems


def source_id_duplicates(facts: Iterable[RecordFacts | None]) -> list[tuple[int, int]]:
    """(position, position of the first) for every record whose source_id an earlier record of
    `facts` (a split's records in any fixed order; None for unreadable ones) already holds."""
    first: dict[str, int] = {}
    found = []
    for position, record in enumerate(facts):
        if record is None or not record.source_id:
            continue
        seen = first.setdefault(record.source_id, position)
        if seen != position:
            found.append((position, seen))
    return found


def parse(data: bytes, config: BuildConfig, *, require_derived: bool = True) -> dict:
    """A serialized record's values by name, as arrays and strings: image, format, height, width,
    original_height, original_width, filename, sha256, boxes [N, 4] rel_xyxy, labels [N],
    attributes [N, 6], grid [S, S, 5], ignore [S, S], dropped; and the derived keys as stored,
    source_id (str), class_text (list of bytes), is_crowd [N], area [N], each None when the
    record lacks it (only with require_derived False).

    Raises SchemaError for bytes that are not a record of the schema with the config's grid
    size, or whose bytes values are not what the schema means (`schema.value_problem`: unknown
    format, filename not UTF-8, sha256 not hex). Unlike `schema.Record.parse`, it holds the
    record to the manifest's grid size and image format.
    """
    features = schema.parse_features(data, grid_size=config.grid_size, derived="required" if require_derived else "optional")
    message = schema.value_problem(features, config.image_format)
    if message:
        raise schema.SchemaError(message)
    return _fields(features, config.grid_size)


def recompute_targets(fields: dict, config: BuildConfig) -> targets.GridTargets | None:
    """The targets the build's rule gives for a record's stored boxes and invalid flags, or None
    when they cannot be recomputed (a non-finite box, an original size below 1 pixel)."""
    if not np.isfinite(fields["boxes"]).all() or min(fields["original_width"], fields["original_height"]) < 1:
        return None
    placement = box_formats.Placement.fit(fields["original_width"], fields["original_height"], config.input_size, config.resize)
    invalid = schema.invalid_flags(fields["attributes"])
    return targets.encode_faces(fields["boxes"], invalid, placement, config.grid_size, config.min_face_px)


def _fields(features: dict, s: int) -> dict:
    """`parse`'s values by name, from `schema.parse_features`' checked ones."""

    def one(key):
        return features[key][0]

    faces = len(features[schema.XMIN])
    source_id = features.get(schema.SOURCE_ID)
    return {
        "image": one(schema.ENCODED),
        "format": one(schema.FORMAT).decode(),
        "height": int(one(schema.HEIGHT)),
        "width": int(one(schema.WIDTH)),
        "original_height": int(one(schema.ORIGINAL_HEIGHT)),
        "original_width": int(one(schema.ORIGINAL_WIDTH)),
        "filename": one(schema.FILENAME).decode("utf-8"),
        "sha256": one(schema.SHA256).decode(),
        "boxes": np.stack([features[key] for key in schema.BOX_KEYS], axis=1).reshape(faces, 4),
        "labels": features[schema.LABEL],
        "attributes": np.stack([features[key] for key in schema.ATTRIBUTE_KEYS], axis=1).reshape(faces, len(schema.ATTRIBUTES)),
        "grid": features[schema.GRID].reshape(s, s, targets.NUM_CHANNELS),
        "ignore": features[schema.IGNORE].reshape(s, s),
        "dropped": int(one(schema.DROPPED)),
        "source_id": None if source_id is None else source_id[0].decode("ascii", "backslashreplace"),
        "class_text": features.get(schema.CLASS_TEXT),
        "is_crowd": features.get(schema.IS_CROWD),
        "area": features.get(schema.AREA),
    }


def _image_problems(fields: dict, config: BuildConfig) -> list[str]:
    problem = images.image_problem(fields["image"], fields["format"], fields["height"], fields["width"], config.input_size)
    return [] if problem is None else [problem]


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True element, and how many there are (as the last item)."""
    where = np.argwhere(mask)
    return (*(int(i) for i in where[0]), len(where))


def _cells_differ(what: str, differ: np.ndarray, stored: np.ndarray, recomputed: np.ndarray, show) -> str:
    """The first differing cells of a stored grid or mask against the recomputed one, as a problem."""
    cells = np.argwhere(differ)
    shown = [f"cell ({r}, {c}) stored {show(stored[r, c])}, recomputed {show(recomputed[r, c])}" for r, c in cells[:_SHOWN_CELLS]]
    more = f"; and {len(cells) - _SHOWN_CELLS} more cells" if len(cells) > _SHOWN_CELLS else ""
    return f"{what} differs from the boxes: {'; '.join(shown)}{more}"


def _show(values) -> str:
    """Float32 values in their shortest exact form."""
    return "(" + ", ".join(str(np.float32(v)) for v in np.ravel(values)) + ")"


def _in_range(fields: dict) -> bool:
    """The common case, cheaply: True when every value is within range (no message needed).
    NaN fails every comparison, so it never passes."""
    boxes, grid, ignore = fields["boxes"], fields["grid"], fields["ignore"]
    if fields["original_height"] < 1 or fields["original_width"] < 1 or fields["dropped"] < 0:
        return False
    if boxes.size and not (
        boxes.min() >= 0
        and boxes.max() <= 1
        and (boxes[:, :2] < boxes[:, 2:]).all()  # a zero-size (degenerate) face is never stored
        and (fields["labels"] == schema.FACE_LABEL).all()
        and ((fields["attributes"] >= 0) & (fields["attributes"] <= _ATTRIBUTE_MAX)).all()
    ):
        return False
    is_target = grid[..., targets.OBJ] == 1
    if grid[~is_target].any():  # a cell without a target holds something (NaN included)
        return False
    cells = grid[is_target]
    if cells.size and not (
        cells[:, :2].min() > 0 and cells[:, :2].max() <= 1 and cells[:, 2:4].min() >= 0 and cells[:, 2:4].max() < 1
    ):
        return False
    return bool(((ignore == 0) | (ignore == 1)).all() and not ignore[is_target].any())


def _range_problems(fields: dict) -> list[str]:
    if _in_range(fields):
        return []
    problems = []
    boxes = fields["boxes"]
    for name in ("original_height", "original_width"):
        if fields[name] < 1:
            problems.append(f"image/{name.replace('_', '/')}: expected >= 1, found {fields[name]}")
    if boxes.size:
        bad = ~np.isfinite(boxes).all(axis=1) | ((boxes < 0) | (boxes > 1)).any(axis=1)
        if bad.any():
            face, count = _first(bad)
            problems.append(f"face {face}: box (xmin, ymin, xmax, ymax) {_show(boxes[face])} outside [0, 1] ({count} such faces)")
        inverted = (boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])
        if inverted.any():
            face, count = _first(inverted)
            problems.append(f"face {face}: box (xmin, ymin, xmax, ymax) {_show(boxes[face])} has min > max ({count} such faces)")
        empty = ~inverted & ((boxes[:, 0] == boxes[:, 2]) | (boxes[:, 1] == boxes[:, 3]))
        if empty.any():
            face, count = _first(empty)
            problems.append(
                f"face {face}: box (xmin, ymin, xmax, ymax) {_show(boxes[face])} has zero width or height: "
                f"a degenerate face, which a build never stores ({count} such faces)"
            )
        labels = fields["labels"]
        if (labels != schema.FACE_LABEL).any():
            face, count = _first(labels != schema.FACE_LABEL)
            problems.append(
                f"face {face}: {schema.LABEL} expected {schema.FACE_LABEL}, found {labels[face]} ({count} such faces)"
            )
        attributes = fields["attributes"]
        for column, name in enumerate(schema.ATTRIBUTES):
            bad = (attributes[:, column] < 0) | (attributes[:, column] > schema.ATTRIBUTE_MAX[name])
            if bad.any():
                face, count = _first(bad)
                problems.append(
                    f"face {face}: image/object/{name} expected 0..{schema.ATTRIBUTE_MAX[name]}, "
                    f"found {attributes[face, column]} ({count} such faces)"
                )

    grid, ignore = fields["grid"], fields["ignore"]
    obj = grid[..., targets.OBJ]
    if not np.isfinite(grid).all():
        row, col, _, count = _first(~np.isfinite(grid))
        problems.append(f"cell ({row}, {col}): grid {_show(grid[row, col])} is not finite ({count} values)")
    checks = (
        ((obj != 0) & (obj != 1), "obj expected 0 or 1"),
        ((obj == 1) & ~((grid[..., targets.H] > 0) & (grid[..., targets.H] <= 1)), "h expected in (0, 1]"),
        ((obj == 1) & ~((grid[..., targets.W] > 0) & (grid[..., targets.W] <= 1)), "w expected in (0, 1]"),
        ((obj == 1) & ~((grid[..., targets.Y] >= 0) & (grid[..., targets.Y] < 1)), "y offset expected in [0, 1)"),
        ((obj == 1) & ~((grid[..., targets.X] >= 0) & (grid[..., targets.X] < 1)), "x offset expected in [0, 1)"),
        ((obj == 0) & (grid != 0).any(axis=-1), "a cell without a target expected all channels 0"),
        ((ignore != 0) & (ignore != 1), "ignore expected 0 or 1"),
        ((ignore == 1) & (obj == 1), "ignore expected 0 where a target is"),
    )
    for mask, expected in checks:
        if mask.any():
            row, col, count = _first(mask)
            problems.append(
                f"cell ({row}, {col}): {expected}, found grid (h, w, y, x, obj) {_show(grid[row, col])}, "
                f"ignore {_show(ignore[row, col])[1:-1]} ({count} such cells)"
            )
    if fields["dropped"] < 0:
        problems.append(f"{schema.DROPPED}: expected >= 0, found {fields['dropped']}")
    return problems


def _derived_problems(fields: dict) -> list[str]:
    """Where the keys derived for other tools disagree with the rest of the record."""
    problems = []
    faces = len(fields["boxes"])
    wanted = schema.source_id(fields["filename"])
    if fields["source_id"] != wanted:
        problems.append(
            f"{schema.SOURCE_ID}: expected {wanted!r} (the id of image/filename {fields['filename']!r}), "
            f"found {fields['source_id'][:80]!r}"
        )
    wrong = np.array([name != schema.FACE_NAME.encode() for name in fields["class_text"]], bool)
    if wrong.any():
        face, count = _first(wrong)
        problems.append(
            f"face {face}: {schema.CLASS_TEXT} expected {schema.FACE_NAME.encode()!r}, "
            f"found {fields['class_text'][face][:60]!r} ({count} such faces)"
        )
    if not faces:
        return problems
    invalid = schema.invalid_flags(fields["attributes"])
    if (fields["is_crowd"] != invalid).any():
        face, count = _first(fields["is_crowd"] != invalid)
        problems.append(
            f"face {face}: {schema.IS_CROWD} expected {invalid[face]} (its invalid flag), "
            f"found {fields['is_crowd'][face]} ({count} such faces)"
        )
    expected = schema.box_areas(fields["boxes"], fields["height"], fields["width"])
    area = fields["area"]
    # A face whose box is not finite has no area to hold it to (the ranges check names the box).
    with np.errstate(invalid="ignore", over="ignore"):  # `~(x <= y)` holds for a NaN area: named too
        off = ~(np.abs(area - expected) <= _AREA_RTOL * np.maximum(expected, 1)) & np.isfinite(expected)
    if off.any():
        face, count = _first(off)
        problems.append(
            f"face {face}: {schema.AREA} expected {_show([expected[face]])[1:-1]} (the box's area in "
            f"pixels of the {fields['width']}x{fields['height']} image), found {_show([area[face]])[1:-1]} "
            f"({count} such faces)"
        )
    return problems


def _target_problems(fields: dict, recomputed: targets.GridTargets) -> list[str]:
    """Where the stored targets differ from the recomputed ones (bitwise, as float32)."""
    problems = []
    grid, ignore = fields["grid"], fields["ignore"]
    # Compared as bits: the same float32 inputs give the same float32 outputs, and NaN != NaN.
    grid_diff = (grid.view(np.uint32) != recomputed.grid.view(np.uint32)).any(axis=-1)
    ignore_diff = ignore.view(np.uint32) != recomputed.ignore.view(np.uint32)
    if grid_diff.any():
        problems.append(_cells_differ("grid (h, w, y, x, obj)", grid_diff, grid, recomputed.grid, _show))
    if ignore_diff.any():
        problems.append(_cells_differ("ignore", ignore_diff, ignore, recomputed.ignore, lambda v: _show(v)[1:-1]))
    if fields["dropped"] != recomputed.dropped:
        problems.append(f"{schema.DROPPED}: stored {fields['dropped']}, recomputed from the boxes {recomputed.dropped}")
    return problems
