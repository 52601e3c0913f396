"""Dataset statistics for the checker's report: faces per image, face sizes, the share of faces
dropped by cell collisions or ignored, and how evenly the shards are filled.

Built from the records' facts (`check_records.RecordFacts`) and the shard sizes; the numbers are
plain Python values, ready for JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from reader.check import records as check_records

FACES_PER_IMAGE_BINS = (0, 1, 2, 6, 21, 101)  # lower edges: 0, 1, 2-5, 6-20, 21-100, 101+
FACE_SIDE_BINS = (0, 4, 8, 16, 32, 64, 128)  # px of the stored image: <4, 4-8, ..., 128+


def bin_counts(values: np.ndarray, edges: Sequence[float], integer: bool, weights: np.ndarray | None = None) -> dict[str, int]:
    """Counts per bin, labelled "a-b" (or "a" for a one-value integer bin, "a+" for the last).

    edges: the lower edge of each bin, ascending; the last bin is open. weights: what each value
    adds to its bin (1 by default). The dataset report (reader.check.report.dataset) bins by this
    function too, so its numbers are the checker's."""
    bins = [*edges, np.inf]
    counts = np.histogram(values, bins=bins, weights=weights)[0] if len(values) else np.zeros(len(edges), int)
    labels = []
    for low, high in zip(edges, [*edges[1:], None]):
        if high is None:
            labels.append(f"{low}+")
        elif integer and high - low == 1:
            labels.append(f"{low}")
        elif integer:
            labels.append(f"{low}-{high - 1}")
        else:
            labels.append(f"{low}-{high}")
    return {label: int(c) for label, c in zip(labels, counts)}


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


@dataclasses.dataclass(frozen=True)
class Statistics:
    """records: records read; every other number is over those records."""

    records: int
    faces: dict
    face_sides: dict
    targets: dict
    shards: dict

    @classmethod
    def compute(
        cls, facts: Sequence[check_records.RecordFacts], shard_records: dict[str, int], shard_bytes: dict[str, int]
    ) -> Statistics:
        """facts: every readable record; shard_records / shard_bytes: per shard file, as found."""
        per_image = np.array([f.faces for f in facts], np.int64)
        sides = np.concatenate([f.face_sides for f in facts]) if facts else np.zeros(0, np.float32)
        stored = int(per_image.sum())
        kept = {key: int(sum(getattr(f, key) for f in facts)) for key in ("targets", "dropped", "ignored")}

        def summary(values):
            if not len(values):
                return {"mean": 0.0, "median": 0.0, "max": 0}
            return {"mean": round(float(values.mean()), 2), "median": float(np.median(values)), "max": values.max().item()}

        records = np.array(list(shard_records.values()), np.int64)
        sizes = np.array(list(shard_bytes.values()), np.int64)
        mean = float(records.mean()) if len(records) else 0.0
        return cls(
            records=len(facts),
            faces={
                **summary(per_image),
                "total": stored,
                "images_without_faces": int((per_image == 0).sum()),
                "histogram": bin_counts(per_image, FACES_PER_IMAGE_BINS, integer=True),
            },
            face_sides={
                "unit": "px, shorter side on the stored image",
                **{f"p{q}": round(float(np.percentile(sides, q)), 1) if len(sides) else 0.0 for q in (10, 50, 90)},
                "histogram": bin_counts(sides, FACE_SIDE_BINS, integer=False),
            },
            targets={
                "faces_stored": stored,
                **kept,
                **{f"{key}_share": _share(value, stored) for key, value in kept.items()},
            },
            shards={
                "count": len(records),
                "records_min": int(records.min()) if len(records) else 0,
                "records_max": int(records.max()) if len(records) else 0,
                "records_mean": round(mean, 1),
                "max_deviation": round(float(np.abs(records - mean).max() / mean), 4) if mean else 0.0,
                "bytes_min": int(sizes.min()) if len(sizes) else 0,
                "bytes_max": int(sizes.max()) if len(sizes) else 0,
            },
        )

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The statistics for people, one topic a line."""
        f, s, t, sh = self.faces, self.face_sides, self.targets, self.shards

        def hist(h: dict, total: int) -> str:
            return "  ".join(f"{label}: {count} ({_share(count, total):.0%})" for label, count in h.items())

        return [
            f"faces per image: mean {f['mean']}, median {f['median']:g}, max {f['max']}; "
            f"{f['images_without_faces']} of {self.records} images without a face",
            f"  images by face count  {hist(f['histogram'], self.records)}",
            f"face size ({s['unit']}): p10 {s['p10']}, median {s['p50']}, p90 {s['p90']}",
            f"  faces by size  {hist(s['histogram'], f['total'])}",
            f"faces stored {t['faces_stored']}: targets {t['targets']} ({t['targets_share']:.1%}), "
            f"dropped by cell collisions {t['dropped']} ({t['dropped_share']:.1%}), "
            f"ignored {t['ignored']} ({t['ignored_share']:.1%})",
            f"shards: {sh['count']}, records min {sh['records_min']} / mean {sh['records_mean']} / max {sh['records_max']} "
            f"(largest deviation from the mean {sh['max_deviation']:.1%}); bytes {sh['bytes_min']:,} to {sh['bytes_max']:,}",
        ]
