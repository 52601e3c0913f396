"""The faces of a checked split, for the dataset report: every stored face's box and role.

    ROLES     a face's role in the targets: owner of its cell, dropped, ignored, not recomputable
    Faces     the arrays the report's numbers are computed from (reader.check.report.numbers)
    roles     one parsed record -> the role of each of its faces, by the build's rule
    collect   a SplitCheck -> Faces, reading every readable record again (no image decoding)

Faces per image and face sizes are the records' facts (the very numbers of the checker's
statistics); boxes and roles come from reading the records once more, because the facts hold
counts, not boxes (about a second for the 3,226 records of WIDER val). A record that changed
since it was checked stops the report (ReportError).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from reader.check import records as check_records
from reader.check.split import SplitCheck
from reader.core import boxes as box_formats
from reader.core import schema, storage, tfrecord
from reader.core.config import BuildConfig

# A face's role in the targets, as the build's rule gives it from the stored boxes.
OWNER, DROPPED, INVALID, SMALL, UNKNOWN = range(5)
ROLES = ("target", "dropped", "ignored_invalid", "ignored_small", "not_recomputed")


class ReportError(RuntimeError):
    """The report cannot be drawn from the check: a record changed or vanished since."""


@dataclasses.dataclass(frozen=True)
class Faces:
    """Every face stored in a checked split's readable records, in record order.

    per_image: int64 [R], faces per record. sides: float32 [F], shorter side in pixels of the
    stored image (the checker's face_sides). boxes: float32 [F, 4] rel_xyxy; role: int8 [F], an
    index into ROLES; source_aspect: float64 [F], width / height in source pixels (NaN where the
    placement is unknown).
    """

    per_image: np.ndarray
    sides: np.ndarray
    boxes: np.ndarray
    role: np.ndarray
    source_aspect: np.ndarray

    def __post_init__(self):
        count = int(self.per_image.sum())
        for name in ("sides", "boxes", "role", "source_aspect"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {count} faces")


def roles(fields: dict, config: BuildConfig) -> np.ndarray:
    """Each stored face's role (int8 [N], indexes into ROLES) in one parsed record (`fields`:
    check_records.parse's), as `config`'s grid and min_face_px give it."""
    recomputed = check_records.recompute_targets(fields, config)
    count = len(fields["boxes"])
    if recomputed is None:
        return np.full(count, UNKNOWN, np.int8)
    invalid = schema.invalid_flags(fields["attributes"]) != 0
    role = np.where(recomputed.is_target, DROPPED, np.where(invalid, INVALID, SMALL)).astype(np.int8)
    role[recomputed.owners[recomputed.owners >= 0]] = OWNER
    return role


def source_aspect(fields: dict, config: BuildConfig) -> np.ndarray:
    """Each stored face's width / height in source-image pixels (float64 [N]), undoing the
    resize to the canvas; NaN for all when the record's original size is unknown (under 1 px)."""
    rel = fields["boxes"].astype(np.float64)
    width, height = rel[:, 2] - rel[:, 0], rel[:, 3] - rel[:, 1]
    if min(fields["original_width"], fields["original_height"]) < 1:
        return np.full(len(rel), np.nan)
    placement = box_formats.Placement.fit(fields["original_width"], fields["original_height"], config.input_size, config.resize)
    # Canvas pixels per source pixel, across and down.
    sx, sy = placement.scaled_width / placement.source_width, placement.scaled_height / placement.source_height
    with np.errstate(divide="ignore", invalid="ignore"):
        return (width / sx) / (height / sy)


def collect(result: SplitCheck) -> Faces:
    """Reads every readable record of the check again (no image decoding) for its boxes and the
    roles the build's rule gives them. Raises ReportError when a record is gone or differs from
    what was checked (a build committed in between)."""
    config = result.config
    readable = [r for r in result.records if r.facts is not None]
    spans = {file: {span.index: span for span in index.spans} for file, index in result.indexes.items()}
    boxes, role, aspect = [], [], []
    for file, group in itertools.groupby(readable, key=lambda r: r.file):
        try:
            with storage.open_binary(result.paths[file], None) as f:
                for record in group:
                    fields = _read_again(f, file, spans[file][record.index], record, config)
                    boxes.append(fields["boxes"])
                    role.append(roles(fields, config))
                    aspect.append(source_aspect(fields, config))
        except (OSError, ValueError) as e:  # gone, or damaged since (CorruptRecordError, SchemaError)
            raise ReportError(f"{file}: cannot read it again for the report: {e}") from None
    per_image = np.array([r.facts.faces for r in readable], np.int64)
    sides = np.concatenate([r.facts.face_sides for r in readable]) if readable else np.zeros(0, np.float32)
    return Faces(
        per_image,
        sides,
        np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        np.concatenate(role) if role else np.zeros(0, np.int8),
        np.concatenate(aspect) if aspect else np.zeros(0),
    )


def _read_again(f, file: str, span: tfrecord.RecordSpan, record, config: BuildConfig) -> dict:
    """The parsed fields of `record` (a CheckedRecord) from the open shard `f`; raises
    ReportError when it no longer holds the filename and face count it was checked with."""
    fields = check_records.parse(tfrecord.read_record(f, file, span), config)
    if fields["filename"] != record.facts.filename or len(fields["boxes"]) != record.facts.faces:
        raise ReportError(
            f"{file}:{record.index}: holds {fields['filename']!r} with {len(fields['boxes'])} faces, "
            f"checked as {record.facts.filename!r} with {record.facts.faces}: the split changed since"
        )
    return fields
