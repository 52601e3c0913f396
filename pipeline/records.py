"""One annotated image to one record: the per-image work of the build, free of Beam.

`make_record` is what every Beam worker runs per image (and what the single-process baseline
of the benchmark runs in a loop): prepare the pixels, clip and place the boxes, encode the grid.
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np

from pipeline import images
from pipeline.annotations import ImageAnnotation
from reader.core import boxes as box_formats
from reader.core import schema, targets
from reader.core.config import BuildConfig
from reader.core.manifest import COUNT_KEYS, count_imbalances


class Counts(collections.Counter):
    """Counts of COUNT_KEYS, added up across images and shards."""

    def as_dict(self) -> dict[str, int]:
        return {key: int(self[key]) for key in COUNT_KEYS}

    def imbalances(self) -> list[str]:
        """The conservation laws that do not hold, as readable equations (empty when all hold)."""
        return count_imbalances(self)


def stored_faces(annotation: ImageAnnotation, placement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The faces a record stores: boxes as rel_xyxy float32 [N, 4] and attributes int64 [N, 6]
    of the faces that are not degenerate once clipped, and the degenerate mask over all faces."""
    xyxy = box_formats.xywh_to_clipped_xyxy(annotation.xywh, placement.source_width, placement.source_height)
    degenerate = box_formats.is_degenerate(xyxy)
    stored = ~degenerate
    return placement.to_rel_xyxy(xyxy[stored]), annotation.attributes[stored].astype(np.int64), degenerate


def make_record(
    annotation: ImageAnnotation,
    data: bytes,
    config: BuildConfig,
    prepared: images.PreparedImage | None = None,
    sha256: str | None = None,
) -> tuple[schema.Record, Counts]:
    """The record for one image and its face counts. Raises images.UnusableImage.
    prepared: the image as an earlier build stored it from these very bytes (pipeline.reuse),
    or None to prepare it here; sha256: of `data`, when the caller has it."""
    prepared = prepared or images.prepare(data, config)
    placement = prepared.placement
    rel, attributes, degenerate = stored_faces(annotation, placement)
    stored = ~degenerate
    invalid = schema.invalid_flags(attributes)
    grid = targets.encode_faces(rel, invalid, placement, config.grid_size, config.min_face_px)

    size = config.input_size
    record = schema.Record(
        image=prepared.encoded,
        image_format=config.image_format,
        height=size,
        width=size,
        original_height=placement.source_height,
        original_width=placement.source_width,
        filename=annotation.filename,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
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
