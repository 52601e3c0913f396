"""The record schema (version 1), declared once.

One `tf.train.Example` per image. The Beam job writes records with `Record.serialize`, the
readers parse them with `Record.parse` or with `tf_feature_spec` inside tf.data, and the checker
validates them against `FEATURES`. No feature key is spelled anywhere else.

Bbox keys and names follow the TensorFlow Object Detection API, so its tools read the shards.
Normalized coordinates are relative to the stored square image.

Four keys exist for other tools and hold nothing new: `serialize` derives them from the fields of
`Record`, so they can never disagree with the rest of the record (the checker holds them to it):
    image/source_id          the image's id for TF Model Garden and COCO evaluation (`source_id`)
    image/object/class/text  the label's name per face (LABEL_MAP)
    image/object/is_crowd    WIDER's invalid flag per face: COCO evaluation ignores such faces
    image/object/area        each box's area in pixels of the stored image (`box_areas`)
Records of builds made before them lack these keys; `Record.parse` still reads such records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from reader.core import layout, protowire

SCHEMA_VERSION = 1
IMAGE_FORMATS = ("jpeg", "raw")

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
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
# The largest value of each WIDER attribute (all start at 0).
ATTRIBUTE_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}
ATTRIBUTE_KEYS = tuple(f"image/object/{name}" for name in ATTRIBUTES)
GRID = "target/grid"
IGNORE = "target/ignore"
DROPPED = "target/dropped"

BOX_KEYS = (XMIN, YMIN, XMAX, YMAX)  # rel_xyxy order
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
_INVALID = ATTRIBUTES.index("invalid")


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
    return {"1": 1, "faces": faces, "grid": grid_size * grid_size * 5, "cells": grid_size * grid_size}[
        feature.length
    ]


class SchemaError(ValueError):
    """A record that does not match the schema: a key missing, of the wrong kind or length."""


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """One image and its targets, as stored.

    image: JPEG bytes, or raw uint8 H x W x 3 bytes when image_format is "raw".
    boxes: float32 rel_xyxy [N, 4] of the stored (non-degenerate) faces.
    attributes: int64 [N, 6] in ATTRIBUTES order.
    grid: float32 [S, S, 5]; ignore: float32 [S, S]; dropped: int.
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
        return np.asarray(self.attributes, np.int64).reshape(-1, len(ATTRIBUTES))[:, _INVALID]

    @property
    def areas(self) -> np.ndarray:
        """float32 [N]: each box's area in pixels of the stored image."""
        return box_areas(self.boxes, self.height, self.width)

    def pixels(self) -> np.ndarray:
        """The stored image as uint8 [height, width, 3] (decodes JPEG with Pillow)."""
        if self.image_format == "raw":
            return np.frombuffer(self.image, np.uint8).reshape(self.height, self.width, 3)
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.image)) as im:
            return np.asarray(im.convert("RGB"))

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
            IS_CROWD: attributes[:, _INVALID],
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
        try:
            features = protowire.decode_example(data)
        except protowire.WireError as e:
            raise SchemaError(f"not a tf.train.Example: {e}") from e
        validate_features(features, require_derived=not _lacks_all_derived(features))
        faces = len(features[XMIN][1])
        grid_values = features[GRID][1]
        grid_size = int(round((len(grid_values) / 5) ** 0.5))

        def one(key):
            return features[key][1][0]

        return cls(
            image=one(ENCODED),
            image_format=one(FORMAT).decode(),
            height=int(one(HEIGHT)),
            width=int(one(WIDTH)),
            original_height=int(one(ORIGINAL_HEIGHT)),
            original_width=int(one(ORIGINAL_WIDTH)),
            filename=one(FILENAME).decode("utf-8"),
            sha256=one(SHA256).decode(),
            boxes=np.stack([features[key][1] for key in BOX_KEYS], axis=1).reshape(faces, 4),
            attributes=np.stack([features[key][1] for key in ATTRIBUTE_KEYS], axis=1).reshape(faces, len(ATTRIBUTES)),
            grid=grid_values.reshape(grid_size, grid_size, 5),
            ignore=features[IGNORE][1].reshape(grid_size, grid_size),
            dropped=int(one(DROPPED)),
        )


def _lacks_all_derived(features: Mapping[str, object]) -> bool:
    return not any(key in features for key in DERIVED_KEYS)


def validate_features(
    features: Mapping[str, tuple[str, object]], grid_size: int | None = None, *, require_derived: bool = True
) -> None:
    """Checks every schema key is present with its kind and length; raises SchemaError.

    grid_size: the grid size the manifest's config gives (a record holding another grid is then
    named as disagreeing with it), or None to take it from the record's own grid.
    require_derived: False accepts a record without the derived keys (as builds made before
    them wrote); the ones it holds are validated all the same.
    """
    present = [f for f in FEATURES if require_derived or not f.derived or f.key in features]
    for feature in present:
        if feature.key not in features:
            if feature.derived:
                raise SchemaError(f"missing key {feature.key!r} (builds made before it was added lack it: "
                                  f"build the split again)")
            raise SchemaError(f"missing key {feature.key!r}")
        kind, _ = features[feature.key]
        if kind != feature.kind:
            raise SchemaError(f"key {feature.key!r}: expected {feature.kind} values, found {kind}")
    faces = len(features[XMIN][1])
    from_manifest = grid_size is not None
    if grid_size is None:
        grid_size = int(round((len(features[GRID][1]) / 5) ** 0.5))
    for feature in present:
        want, found = expected_length(feature, grid_size, faces), len(features[feature.key][1])
        if want != found:
            if from_manifest and feature.length in ("grid", "cells"):
                raise SchemaError(_grid_disagreement(feature, want, found, grid_size))
            raise SchemaError(f"key {feature.key!r}: expected {want} values, found {found}")


def _grid_disagreement(feature: Feature, want: int, found: int, grid_size: int) -> str:
    """A grid of another size than the manifest's, said in grid sizes as well as value counts."""
    per_cell = expected_length(feature, 1, 0)
    side = int(round((found / per_cell) ** 0.5))
    held = f" (a {side}x{side} grid)" if side * side * per_cell == found else ""
    return (f"key {feature.key!r}: expected {want} values for the manifest's grid_size {grid_size}, "
            f"found {found}{held}: the manifest disagrees with this record")


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
