"""One annotated image to one record: the per-image work of the build, free of Beam.

`make_record` is what every Beam worker runs per image (and what the single-process baseline
of the benchmark runs in a loop): prepare the pixels, clip and place the boxes, encode the grid.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np

from pipeline import images
from pipeline.annotations import ImageAnnotation
from reader.core import boxes as box_formats
from reader.core import schema, targets
from reader.core.manifest import COUNT_KEYS, count_imbalances


class Counts(collections.Counter):
    """Counts of COUNT_KEYS, added up across images and shards."""

    def as_dict(self) -> dict[str, int]:
        return {key: int(self[key]) for key in COUNT_KEYS}

    def imbalances(self) -> list[str]:
        """The conservation laws that do not hold, as readable equations (empty when all hold)."""
        return count_imbalances(self)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything that decides a record's bytes. Validates itself."""

    image: images.ImageConfig = images.ImageConfig()
    grid_size: int = 7
    min_face_px: float = 0.0

    def __post_init__(self):
        if not 1 <= self.grid_size <= self.image.input_size:
            raise ValueError(f"grid_size must be between 1 and input_size, got {self.grid_size}")
        if self.min_face_px < 0:
            raise ValueError(f"min_face_px must be >= 0, got {self.min_face_px}")

    def manifest(self) -> dict:
        """The `config` block of the manifest."""
        return {
            "input_size": self.image.input_size,
            "grid_size": self.grid_size,
            "image_format": self.image.image_format,
            "jpeg_quality": self.image.jpeg_quality,
            "resize": self.image.resize,
            "min_face_px": self.min_face_px,
        }


def make_record(annotation: ImageAnnotation, data: bytes, config: BuildConfig) -> tuple[schema.Record, Counts]:
    """The record for one image and its face counts. Raises images.UnusableImage."""
    prepared = images.prepare(data, config.image)
    placement = prepared.placement
    xyxy = box_formats.xywh_to_clipped_xyxy(annotation.xywh, placement.source_width, placement.source_height)
    degenerate = box_formats.is_degenerate(xyxy)
    stored = ~degenerate
    rel = placement.to_rel_xyxy(xyxy[stored])
    attributes = annotation.attributes[stored].astype(np.int64)
    invalid = attributes[:, schema.ATTRIBUTES.index("invalid")]
    grid = targets.encode_faces(rel, invalid, placement, config.grid_size, config.min_face_px)

    size = config.image.input_size
    record = schema.Record(
        image=prepared.encoded,
        image_format=config.image.image_format,
        height=size,
        width=size,
        original_height=placement.source_height,
        original_width=placement.source_width,
        filename=annotation.filename,
        sha256=hashlib.sha256(data).hexdigest(),
        boxes=rel,
        attributes=attributes,
        grid=grid.grid,
        ignore=grid.ignore,
        dropped=grid.dropped,
    )
    counts = Counts(
        records=1,
        faces_stored=int(stored.sum()),
        degenerate=int(degenerate.sum()),
        targets=grid.targets,
        dropped=grid.dropped,
        ignored=grid.ignored,
    )
    return record, counts
