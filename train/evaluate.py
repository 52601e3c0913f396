"""Average precision at IoU 0.5 as the WIDER FACE protocol scores it, and the grid's recall ceiling.

Pure NumPy. Boxes are `rel_xyxy` on the stored canvas (IoU is scale-free only under one common
scale per image, which the canvas is for both detections and stored boxes).

Matching, per image, detections in descending score: a detection takes the stored face it
overlaps most. At IoU >= 0.5 with an invalid face it is discarded (neither true nor false
positive); with a valid face not yet taken it is a true positive; otherwise it is a false
positive (a duplicate, or no face). Invalid faces are not positives. This is the WIDER
evaluation tool's rule, where invalid faces are outside the ground-truth keep lists.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from reader import boxes as box_formats

TRUE_POSITIVE, FALSE_POSITIVE, DISCARDED = 1, 0, -1


def match(
    det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_invalid: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """Labels each detection of one image TRUE_POSITIVE, FALSE_POSITIVE or DISCARDED (int8 [K]).

    det_boxes: [K, 4], det_scores: [K]; gt_boxes: [N, 4] stored faces; gt_invalid: [N] 0/1.
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    gt_invalid = np.asarray(gt_invalid).reshape(-1).astype(bool)
    labels = np.full(len(det_boxes), FALSE_POSITIVE, np.int8)
    if not len(det_boxes) or not len(gt_invalid):
        return labels
    overlaps = box_formats.iou_rel_xyxy(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_invalid), bool)
    for d in np.argsort(-np.asarray(det_scores).reshape(-1), kind="stable"):
        g = int(np.argmax(overlaps[d]))
        if overlaps[d, g] < iou_threshold:
            continue
        if gt_invalid[g]:
            labels[d] = DISCARDED
        elif not taken[g]:
            labels[d], taken[g] = TRUE_POSITIVE, True
    return labels


def average_precision(scores: np.ndarray, labels: np.ndarray, num_positives: int) -> float:
    """Area under the precision-recall curve, all-point interpolated (PASCAL VOC 2010+, WIDER).

    scores, labels: every detection of the data set (labels from `match`; DISCARDED ones are
    left out). num_positives: valid faces. Precision is made monotone (each point takes the best
    precision at any higher recall) before integrating over recall. 0 when there is no positive.
    """
    scores, labels = np.asarray(scores).reshape(-1), np.asarray(labels).reshape(-1)
    kept = labels != DISCARDED
    scores, labels = scores[kept], labels[kept]
    if num_positives <= 0 or not len(labels):
        return 0.0
    hits = labels[np.argsort(-scores, kind="stable")] == TRUE_POSITIVE
    tp = np.cumsum(hits)
    recall = np.concatenate([[0.0], tp / num_positives])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(hits) + 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


@dataclasses.dataclass
class Evaluator:
    """Collects detections image by image; `result()` gives AP over everything added."""

    iou_threshold: float = 0.5
    num_positives: int = dataclasses.field(default=0, init=False)
    num_images: int = dataclasses.field(default=0, init=False)
    _scores: list = dataclasses.field(default_factory=list, init=False, repr=False)
    _labels: list = dataclasses.field(default_factory=list, init=False, repr=False)

    def add(self, det_boxes, det_scores, gt_boxes, gt_invalid) -> None:
        """One image: its detections and its stored faces (see `match`)."""
        self._scores.append(np.asarray(det_scores, np.float64).reshape(-1))
        self._labels.append(match(det_boxes, det_scores, gt_boxes, gt_invalid, self.iou_threshold))
        self.num_positives += int(np.sum(np.asarray(gt_invalid).reshape(-1) == 0))
        self.num_images += 1

    def result(self) -> dict:
        """{"ap": AP, "recall": recall with every detection kept, "positives", "detections",
        "true_positives", "discarded", "images"}."""
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int8)
        true_positives = int(np.sum(labels == TRUE_POSITIVE))
        return {
            "ap": average_precision(scores, labels, self.num_positives),
            "recall": true_positives / self.num_positives if self.num_positives else 0.0,
            "positives": self.num_positives,
            "detections": int(np.sum(labels != DISCARDED)),
            "true_positives": true_positives,
            "discarded": int(np.sum(labels == DISCARDED)),
            "images": self.num_images,
        }


def recall_ceiling(counts: dict) -> float:
    """The recall the one-face-per-cell grid allows: faces that own a cell / all target faces.

    counts: a manifest's counts ("targets" own a cell; "dropped" lost theirs to a larger face).
    1.0 for a split without target faces.
    """
    owners, dropped = int(counts["targets"]), int(counts["dropped"])
    return owners / (owners + dropped) if owners + dropped else 1.0
