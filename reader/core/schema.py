"""The record schema (version 1), declared once.

One `tf.train.Example` per image, written by the Beam job with `Record.serialize`. Python reads
it through one parser, `parse_features` (every key held to its kind and length): `Record.parse`,
`ShardSequence` (only the keys it needs), the checker, which then holds the bytes values to
`value_problem`. `make_dataset` parses inside tf.data (`tf.io.parse_example`, `tf_feature_spec`);
both readers name a record they failed to read with `record_problem`. No feature key is spelled
anywhere else.

Bbox keys and names follow the TensorFlow Object Detection API, so its tools read the shards.
Normalized coordinates are relative to the stored square image.

Four keys exist for other tools and hold nothing new (source_id, class/text, is_crowd, area; see
docs/DESIGN.md, "Record"): `serialize` derives them from `Record`'s fields, so they never disagree
with the rest of the record (the checker holds them to it); `Record.parse` reads records without them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Collection, Mapping
from typing import Literal

import numpy as np

from reader.core import layout, protowire
from reader.core.config import IMAGE_FORMATS, BuildConfig
from reader.core.targets import NUM_CHANNELS, finite_problem

SCHEMA_VERSION = 1
ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
ORIGINAL_HEIGHT = "image/original/height"
ORIGINAL_WIDTH = "image/original/width"
FILENAME = "image/filename"
SHA256 = "image/key/sha256"
SOURCE_ID = "image/source_id"
XMIN = "image/object/bbox/xmin"
YMIN = "image/object/bbox/ymin"
XMAX = "image/object/bbox/xmax"
YMAX = "image/object/bbox/ymax"
LABEL = "image/object/class/label"
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"
# WIDER's face attributes (named here alone) in its files' order, each with its largest value (all from 0).
ATTRIBUTE_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}
ATTRIBUTES = tuple(ATTRIBUTE_MAX)
ATTRIBUTE_KEYS = tuple(f"image/object/{name}" for name in ATTRIBUTES)
INVALID_ATTRIBUTE = ATTRIBUTES.index("invalid")  # WIDER's invalid flag per face: what the targets leave out
INVALID = ATTRIBUTE_KEYS[INVALID_ATTRIBUTE]
GRID = "target/grid"
IGNORE = "target/ignore"
DROPPED = "target/dropped"

BOX_KEYS = (XMIN, YMIN, XMAX, YMAX)  # rel_xyxy order
FINITE_KEYS = (GRID, IGNORE, *BOX_KEYS)  # what the readers hand to training: finite numbers only
FACE_LABEL = 1
FACE_NAME = "face"
# The label map: class id -> name. Id 0 is left to the background, as the Object Detection API
# and Model Garden expect.
LABEL_MAP: Mapping[int, str] = {FACE_LABEL: FACE_NAME}
# source_id is this many bits of the filename's hash: integers up to 2**53 stay exact as float64
# (JSON numbers, pandas) and parse as int64 (Model Garden's COCO evaluation needs an integer).
SOURCE_ID_BITS = 53


@dataclasses.dataclass(frozen=True)
class Feature:
    """One key of the schema: its value kind and how many values it holds.

    length: a fixed count, "faces" for one value per stored face, or a function of the grid
    size (see `expected_length`).
    derived: written by `serialize` from the other fields, for other tools; records of builds
    made before these keys lack them.
    """

    key: str
    kind: protowire.Kind
    length: str  # "1", "faces", "grid", "cells"
    derived: bool = False


FEATURES: tuple[Feature, ...] = (
    Feature(ENCODED, "bytes", "1"),
    Feature(FORMAT, "bytes", "1"),
    Feature(HEIGHT, "int64", "1"),
    Feature(WIDTH, "int64", "1"),
    Feature(ORIGINAL_HEIGHT, "int64", "1"),
    Feature(ORIGINAL_WIDTH, "int64", "1"),
    Feature(FILENAME, "bytes", "1"),
    Feature(SHA256, "bytes", "1"),
    Feature(SOURCE_ID, "bytes", "1", derived=True),
    *(Feature(key, "float", "faces") for key in BOX_KEYS),
    Feature(LABEL, "int64", "faces"),
    Feature(CLASS_TEXT, "bytes", "faces", derived=True),
    Feature(IS_CROWD, "int64", "faces", derived=True),
    Feature(AREA, "float", "faces", derived=True),
    *(Feature(key, "int64", "faces") for key in ATTRIBUTE_KEYS),
    Feature(GRID, "float", "grid"),
    Feature(IGNORE, "float", "cells"),
    Feature(DROPPED, "int64", "1"),
)
FEATURES_BY_KEY: Mapping[str, Feature] = {f.key: f for f in FEATURES}
DERIVED_KEYS = tuple(f.key for f in FEATURES if f.derived)
_HEX64 = re.compile(rb"[0-9a-f]{64}")


def source_id(filename: str) -> str:
    """The image's id: a decimal integer in [0, 2**53), the top SOURCE_ID_BITS bits of the sha256
    of its filename as written (the hash that places the record, `layout.record_key`).

    An integer because Model Garden's COCO evaluation parses source_id with
    `tf.strings.to_number(..., tf.int64)` and `int()`; a hash of the filename, not an image
    count, so that an image keeps its id whatever else the annotation file lists, and the
    checker can recompute it. No two images of WIDER FACE (train, val and test) share one.
    """
    return str(int.from_bytes(layout.record_key(filename)[:8], "big") >> (64 - SOURCE_ID_BITS))


def box_areas(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [N]: the area of each rel_xyxy box [N, 4] in pixels of a height x width image.

    Computed in float32 in the order Model Garden's TfExampleDecoder uses when a record has no
    areas, `(xmax - xmin) * (ymax - ymin) * height * width`, so both give the same values.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * np.float32(height) * np.float32(width)


def expected_length(feature: Feature, grid_size: int, faces: int) -> int:
    """How many values `feature` holds in a record with `faces` stored faces."""
    if feature.length == "1":
        return 1
    if feature.length == "faces":
        return faces
    return grid_size * grid_size * (NUM_CHANNELS if feature.length == "grid" else 1)


@functools.lru_cache(maxsize=256)
def _checks(keys: frozenset[str] | None, grid_size: int | None, require_derived: bool) -> tuple:
    """(feature, length: -1 per face, -2 unchecked, optional) of the features `validate_features`
    checks, in FEATURES order."""

    def want(f: Feature) -> int:
        if f.length == "faces":
            return -1
        return -2 if grid_size is None and f.length in ("grid", "cells") else expected_length(f, grid_size, 0)

    return tuple((f, want(f), f.derived and not require_derived) for f in FEATURES if keys is None or f.key in keys)


class SchemaError(ValueError):
    """A record that does not match the schema: a key missing, of the wrong kind or length."""


def invalid_flags(attributes) -> np.ndarray:
    """int64 [N]: WIDER's invalid flag of each face, from its attributes [N, len(ATTRIBUTES)]."""
    return np.asarray(attributes, np.int64).reshape(-1, len(ATTRIBUTES))[:, INVALID_ATTRIBUTE]


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """One image and its targets, as stored.

    image: JPEG bytes, or raw uint8 H x W x 3 bytes when image_format is "raw".
    boxes: float32 rel_xyxy [N, 4] of the stored (non-degenerate) faces.
    attributes: int64 [N, 6] in ATTRIBUTES order.
    grid: float32 [S, S, NUM_CHANNELS]; ignore: float32 [S, S]; dropped: int.
    """

    image: bytes
    image_format: str
    height: int
    width: int
    original_height: int
    original_width: int
    filename: str
    sha256: str
    boxes: np.ndarray
    attributes: np.ndarray
    grid: np.ndarray
    ignore: np.ndarray
    dropped: int

    @property
    def grid_size(self) -> int:
        return self.grid.shape[0]

    @property
    def source_id(self) -> str:
        return source_id(self.filename)

    @property
    def is_crowd(self) -> np.ndarray:
        """int64 [N]: WIDER's invalid flag of each face."""
        return invalid_flags(self.attributes)

    @property
    def areas(self) -> np.ndarray:
        """float32 [N]: each box's area in pixels of the stored image."""
        return box_areas(self.boxes, self.height, self.width)

    def pixels(self) -> np.ndarray:
        """The stored image as uint8 [height, width, 3] (`images.decode_stored_image`: Pillow
        for JPEG, in any mode it opens, converted to RGB); raises ValueError saying what is wrong."""
        from reader.core import images

        return images.decode_stored_image(self.image, self.image_format, self.height, self.width, any_mode=True)

    def serialize(self) -> bytes:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        attributes = np.asarray(self.attributes, np.int64).reshape(-1, len(ATTRIBUTES))
        values = {
            ENCODED: [self.image],
            FORMAT: [self.image_format.encode()],
            HEIGHT: [self.height],
            WIDTH: [self.width],
            ORIGINAL_HEIGHT: [self.original_height],
            ORIGINAL_WIDTH: [self.original_width],
            FILENAME: [self.filename.encode("utf-8")],
            SHA256: [self.sha256.encode()],
            SOURCE_ID: [self.source_id.encode()],
            **{key: boxes[:, i] for i, key in enumerate(BOX_KEYS)},
            LABEL: np.full(len(boxes), FACE_LABEL, np.int64),
            CLASS_TEXT: [FACE_NAME.encode()] * len(boxes),
            IS_CROWD: invalid_flags(attributes),
            AREA: box_areas(boxes, self.height, self.width),
            **{key: attributes[:, i] for i, key in enumerate(ATTRIBUTE_KEYS)},
            GRID: np.asarray(self.grid, np.float32).ravel(),
            IGNORE: np.asarray(self.ignore, np.float32).ravel(),
            DROPPED: [self.dropped],
        }
        return protowire.encode_example({key: (FEATURES_BY_KEY[key].kind, v) for key, v in values.items()})

    @classmethod
    def parse(cls, data: bytes) -> Record:
        """Parses and validates a serialized record; raises SchemaError naming the bad key.

        The derived keys are not read back (the fields give them), only validated; a record
        of a build made before them, which lacks them all, parses too."""
        features = parse_features(data, derived="as_held")
        faces = len(features[XMIN])
        grid_values = features[GRID]
        grid_size = _grid_size(len(grid_values))

        def one(key):
            return features[key][0]

        return cls(
            image=one(ENCODED),
            image_format=one(FORMAT).decode(),
            height=int(one(HEIGHT)),
            width=int(one(WIDTH)),
            original_height=int(one(ORIGINAL_HEIGHT)),
            original_width=int(one(ORIGINAL_WIDTH)),
            filename=one(FILENAME).decode("utf-8"),
            sha256=one(SHA256).decode(),
            boxes=np.stack([features[key] for key in BOX_KEYS], axis=1).reshape(faces, 4),
            attributes=np.stack([features[key] for key in ATTRIBUTE_KEYS], axis=1).reshape(faces, len(ATTRIBUTES)),
            grid=grid_values.reshape(grid_size, grid_size, NUM_CHANNELS),
            ignore=features[IGNORE].reshape(grid_size, grid_size),
            dropped=int(one(DROPPED)),
        )


def _grid_size(grid_values: int) -> int:
    return int(round((grid_values / NUM_CHANNELS) ** 0.5))  # of a record holding that many


def parse_features(data: bytes, keys: Collection[str] | None = None, *, grid_size: int | None = None,
                   derived: Literal["required", "optional", "as_held"] = "required") -> dict[str, list[bytes] | np.ndarray]:  # fmt: skip
    """The one parser of serialized records: `{key: values}` (list of bytes, float32 or int64
    array), every key present with its kind and length, or a SchemaError naming the key.

    keys: the keys to decode and check (None: all); the others are skipped undecoded.
    grid_size: the manifest's (a record of another grid is named as disagreeing with it), or
      None to take it from the record's own grid.
    derived: DERIVED_KEYS are "required" (the checker), "optional" (training needs none), or
      "as_held": required unless the record lacks them all, as older builds' do (`Record.parse`).
    """
    try:
        features = protowire.decode_example(data, keys)
    except protowire.WireError as e:
        raise SchemaError(f"not a tf.train.Example: {e}") from None
    require_derived = any(key in features for key in DERIVED_KEYS) if derived == "as_held" else derived == "required"
    validate_features(features, grid_size, require_derived=require_derived, keys=keys)
    return {key: values for key, (_, values) in features.items()}


def validate_features(features: Mapping[str, tuple[str, object]], grid_size: int | None = None, *,
                      require_derived: bool = True, keys: Collection[str] | None = None) -> None:  # fmt: skip
    """Checks every schema key (or only `keys`) of `protowire.decode_example`'s {key: (kind,
    values)} is present with its kind and length; raises SchemaError. grid_size as in
    `parse_features`; require_derived False accepts a record without the derived keys (the ones
    it holds are validated all the same)."""
    size = _grid_size(len(features[GRID][1])) if grid_size is None and GRID in features else grid_size
    faces, wrong_length = -1, None  # faces: the first per-face key's count (bbox/xmin's, when checked)
    # One pass (ShardSequence runs it per record); presence and kinds are named before lengths.
    for feature, want, optional in _checks(None if keys is None else frozenset(keys), size, require_derived):
        entry = features.get(feature.key)
        if entry is None:
            if optional:
                continue
            older = " (builds made before it was added lack it: build the split again)" if feature.derived else ""
            raise SchemaError(f"missing key {feature.key!r}{older}")
        if entry[0] != feature.kind:
            raise SchemaError(f"key {feature.key!r}: expected {feature.kind} values, found {entry[0]}")
        if wrong_length is not None or want == -2:
            continue
        found = len(entry[1])
        if want == -1:
            if faces < 0:
                faces = found
            want = faces
        if want != found:
            wrong_length = feature, want, found
    if wrong_length is not None:
        feature, want, found = wrong_length
        if grid_size is not None and feature.length in ("grid", "cells"):
            raise SchemaError(_grid_disagreement(feature, want, found, grid_size))
        raise SchemaError(f"key {feature.key!r}: expected {want} values, found {found}")


def value_problem(features: Mapping[str, list[bytes] | np.ndarray], image_format: str | None = None) -> str | None:
    """What is wrong with the bytes values of a parsed record (`parse_features`' output), or None:
    image/format none of IMAGE_FORMATS (or not `image_format`, the manifest's), image/filename
    not UTF-8 or empty, image/key/sha256 not 64 lowercase hex digits."""
    found = features[FORMAT][0]
    if found.decode("ascii", "replace") not in IMAGE_FORMATS:
        return f"key {FORMAT!r}: expected one of {IMAGE_FORMATS}, found {found!r}"
    if image_format is not None and found.decode() != image_format:
        return f"key {FORMAT!r}: expected {image_format!r} as the manifest's config says, found {found.decode()!r}"
    filename = features[FILENAME][0]
    try:
        text = filename.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"key {FILENAME!r}: expected UTF-8 text, found {filename[:60]!r} ({e.reason})"
    if not text:
        return f"key {FILENAME!r}: expected the annotation path, found an empty string"
    sha256 = features[SHA256][0]
    if not _HEX64.fullmatch(sha256):
        return f"key {SHA256!r}: expected 64 lowercase hex digits, found {sha256[:80]!r}"
    return None


def record_problem(data: bytes, config: BuildConfig) -> str | None:
    """Why a record cannot be fed to training as the manifest's config describes it, in the words
    of the checker's schema and images steps (not a tf.train.Example, a key missing or of another
    kind or length, a bytes value that makes no sense, an image of another size or that does not
    decode), or None. The readers call it for a record they failed to read; training needs none
    of the derived keys, and value ranges and targets are the checker's business."""
    try:
        features = parse_features(data, grid_size=config.grid_size, derived="optional")
    except SchemaError as e:
        return str(e)
    problem = value_problem(features, config.image_format) or finite_problem(features, FINITE_KEYS)
    if problem is not None:
        return problem
    from reader.core import images

    height, width = int(features[HEIGHT][0]), int(features[WIDTH][0])
    return images.image_problem(features[ENCODED][0], features[FORMAT][0].decode(), height, width, config.input_size)


def _grid_disagreement(feature: Feature, want: int, found: int, grid_size: int) -> str:
    """A grid of another size than the manifest's, said in grid sizes as well as value counts."""
    per_cell = expected_length(feature, 1, 0)
    side = int(round((found / per_cell) ** 0.5))
    held = f" (a {side}x{side} grid)" if side * side * per_cell == found else ""
    where = f"for the manifest's grid_size {grid_size}, found {found}{held}"
    return f"key {feature.key!r}: expected {want} values {where}: the manifest disagrees with this record"


def tf_feature_spec(grid_size: int) -> dict:
    """The feature spec for `tf.io.parse_example` (imports TensorFlow; readers only). It names
    every key, the derived ones too: records of builds made before them do not parse with it
    whole (pick the keys you read, as reader.data.dataset does)."""
    import tensorflow as tf

    kinds = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}
    spec = {}
    for feature in FEATURES:
        dtype = kinds[feature.kind]
        if feature.length == "faces":
            spec[feature.key] = tf.io.RaggedFeature(dtype)
        else:
            spec[feature.key] = tf.io.FixedLenFeature([expected_length(feature, grid_size, 0)], dtype)
    return spec
