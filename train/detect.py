"""Predicted grids to detections: decode (centres per DESIGN.md), threshold, clip, NMS. Pure NumPy.

Boxes are `rel_xyxy` (xmin, ymin, xmax, ymax) normalized to the stored canvas; scores are the
objectness in [0, 1].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from reader.core import boxes as box_formats
from reader.core import targets


@dataclasses.dataclass(frozen=True)
class DetectSettings:
    """score_threshold: lowest objectness kept. For AP it is low, so the precision-recall curve
    runs to the grid's full recall; raise it for pictures. iou_threshold: NMS overlap above which
    the lower-scoring box goes. max_detections: per image, None for all (at most S * S)."""

    score_threshold: float = 0.01
    iou_threshold: float = 0.4
    max_detections: int | None = None

    def __post_init__(self):
        if not (0 <= self.score_threshold <= 1 and 0 <= self.iou_threshold <= 1):
            raise ValueError(f"thresholds must lie in [0, 1], got {self}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    boxes: [N, 4] rel_xyxy; scores: [N]. Returns the indices of the kept boxes, int64 [K], best
    score first: a box is dropped when its IoU with a kept, higher-scoring box exceeds
    `iou_threshold`. Equal scores keep their input order.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[box_formats.iou_rel_xyxy(boxes[best], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, np.int64)


def detect(
    grid: np.ndarray, score_threshold: float = 0.5, iou_threshold: float = 0.4, max_detections: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Detections of one image from its predicted grid [S, S, 5] (CHANNELS order).

    Every cell with obj >= score_threshold gives one box, centred as the targets define it;
    boxes are clipped to the canvas (the stored boxes are), then suppressed with `nms`.
    Returns rel_xyxy float32 [K, 4] and scores float32 [K], best first, at most max_detections.
    """
    boxes, scores = targets.decode(grid, score_threshold)
    boxes = np.clip(boxes, 0.0, 1.0)
    keep = nms(boxes, scores, iou_threshold)[:max_detections]
    return boxes[keep], scores[keep]
