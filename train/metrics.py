"""The evaluation metrics: average precision of face detections by the WIDER FACE protocol
(AP50), COCO's AP50 and AP50:95 (overall and by face size, through pycocotools), and the grid's
recall ceiling. Plain functions of boxes and scores, no model and no Keras: running the detector
over a split and scoring it with these is `train.validation.evaluate_split`.

Boxes are `rel_xyxy` on the stored canvas (IoU is scale-free only under one common scale per
image, which the canvas is for both detections and stored boxes).

WIDER (`match`, `average_precision`; pure NumPy). Matching, per image, detections in descending
score: a detection takes the stored face it overlaps most. At IoU >= 0.5 with an invalid face it
is discarded (neither true nor false positive); with a valid face not yet taken it is a true
positive; otherwise it is a false positive (a duplicate, or no face). Invalid faces are not
positives. This is the WIDER evaluation tool's rule, where invalid faces are outside the
ground-truth keep lists. AP is the all-point area under the precision-recall curve.

COCO (`coco_average_precision`): pycocotools' COCOeval on the same boxes in stored pixels, with
WIDER's invalid faces as crowd (iscrowd=1): neither rewarded nor punished, as above, except in
COCO's own way (a detection matches a valid face first; a crowd face takes any number of
detections, at intersection over the detection's area). AP is COCO's 101-point interpolation,
at up to 100 detections per image (the grid gives at most S * S = 49).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math

import numpy as np

from reader.core import boxes as box_formats

# Face size buckets, by sqrt(box area) in pixels of the stored 224 x 224 image. COCO's 32 and 96
# px limits belong to images of about 640 px; scaled to 224 px they are 11.2 and 33.6 px. The
# upper one is rounded to 32 px, one grid cell: a "large" face covers at least the cell that
# predicts it. The lower one is rounded up to 12 px, 3/8 of a cell: a "small" face covers under a
# seventh of its cell, a few pixels for a stride-32 backbone. AP by size shows what the 7 x 7 grid can
# and cannot find (of WIDER val's valid faces at 224 px, 83% are small, 13% medium, 4% large).
SIZE_BUCKETS_PX = {"small": (0.0, 12.0), "medium": (12.0, 32.0), "large": (32.0, math.inf)}
COCO_MAX_DETECTIONS = 100  # per image, COCO's own limit for AP

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
    left out). num_positives: valid faces. The curve has one point per distinct score, as a
    threshold on the score sees it (the WIDER tool's way): detections of equal score enter
    together, so the AP does not depend on the order in which images or tied detections come.
    Precision is made monotone (each point takes the best precision at any higher recall) before
    integrating over recall. 0 when there is no positive.
    """
    scores, labels = np.asarray(scores).reshape(-1), np.asarray(labels).reshape(-1)
    kept = labels != DISCARDED
    scores, labels = scores[kept], labels[kept]
    if num_positives <= 0 or not len(labels):
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    tp = np.cumsum(labels[order] == TRUE_POSITIVE)
    ends = np.append(ranked[1:] != ranked[:-1], True)  # the last detection of each run of equal scores
    recall = np.concatenate([[0.0], tp[ends] / num_positives])
    precision = np.concatenate([[1.0], tp[ends] / (np.flatnonzero(ends) + 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """One image as evaluated: detections rel_xyxy [K, 4] with scores [K], stored faces
    rel_xyxy [N, 4] with their invalid flags [N]."""

    det_boxes: np.ndarray
    det_scores: np.ndarray
    gt_boxes: np.ndarray
    gt_invalid: np.ndarray

    @classmethod
    def of(cls, det_boxes, det_scores, gt_boxes, gt_invalid) -> ImageResult:
        return cls(
            np.asarray(det_boxes, np.float64).reshape(-1, 4),
            np.asarray(det_scores, np.float64).reshape(-1),
            np.asarray(gt_boxes, np.float64).reshape(-1, 4),
            np.asarray(gt_invalid).reshape(-1).astype(bool),
        )


def _size_px(rel_xyxy: np.ndarray, input_size: int) -> np.ndarray:
    """sqrt(area) of boxes in pixels of the stored image."""
    sides = (rel_xyxy[:, 2:] - rel_xyxy[:, :2]) * input_size
    return np.sqrt(np.maximum(sides[:, 0], 0) * np.maximum(sides[:, 1], 0))


def coco_average_precision(images: list[ImageResult], input_size: int = 224) -> dict:
    """COCO AP of the images' detections by pycocotools, invalid faces as crowd.

    Returns {"ap50", "ap50_95" (mean over IoU 0.50, 0.55, ..., 0.95), "ap50_by_size" {bucket:
    AP50 with only the faces and detections of that size counting, COCO's area ranges},
    "faces_by_size" {bucket: valid faces}, "size_px" {bucket: [low, high] sqrt(area) in stored
    px, high None for no limit}, "images", "detections", "positives"}. An AP is None where no
    valid face counts (COCO's -1), 0.0 where faces count but nothing was detected.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ranges = [[low**2, min(high, 1e5) ** 2] for low, high in SIZE_BUCKETS_PX.values()]  # areas, px^2
    gt_annotations, detections = [], []
    for image_id, image in enumerate(images, start=1):
        for box, invalid in zip(image.gt_boxes * input_size, image.gt_invalid):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            # Ids from 1: COCOeval takes a match id of 0 for "unmatched".
            gt_annotations.append(
                {
                    "id": len(gt_annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": int(invalid),
                }
            )
        for box, score in zip(image.det_boxes * input_size, image.det_scores):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                }
            )
    valid = np.concatenate([image.gt_boxes[~image.gt_invalid] for image in images]) if images else np.zeros((0, 4))
    sizes = _size_px(valid, input_size)
    faces_by_size = {
        name: int(((sizes**2 >= low**2) & (sizes**2 <= min(high, 1e5) ** 2)).sum())
        for name, (low, high) in SIZE_BUCKETS_PX.items()
    }
    result = {
        "ap50": None,
        "ap50_95": None,
        "ap50_by_size": dict.fromkeys(SIZE_BUCKETS_PX),
        "faces_by_size": faces_by_size,
        "size_px": {name: [low, None if math.isinf(high) else high] for name, (low, high) in SIZE_BUCKETS_PX.items()},
        "images": len(images),
        "detections": len(detections),
        "positives": len(valid),
    }
    counted = [len(valid), *faces_by_size.values()]
    if not detections:  # pycocotools cannot load an empty result list
        aps = [0.0 if n else None for n in counted]
        result.update(ap50=aps[0], ap50_95=aps[0], ap50_by_size=dict(zip(SIZE_BUCKETS_PX, aps[1:])))
        return result

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i, "width": input_size, "height": input_size} for i in range(1, len(images) + 1)],
            "annotations": gt_annotations,
            "categories": [{"id": 1, "name": "face"}],
        }
        truth.createIndex()
        found = truth.loadRes(detections)
        # Two passes: every IoU threshold over all faces, then IoU 0.5 alone per size, since
        # COCOeval's matching costs (thresholds x area ranges); 13 such units instead of 40.
        overall = _coco_precision(COCOeval, truth, found, np.linspace(0.5, 0.95, 10), [[0.0, 1e10]])[:, :, 0]
        by_size = _coco_precision(COCOeval, truth, found, np.array([0.5]), ranges)[0]

    result.update(
        ap50=_mean_precision(overall[0]),
        ap50_95=_mean_precision(overall),
        ap50_by_size={name: _mean_precision(by_size[:, a]) for a, name in enumerate(SIZE_BUCKETS_PX)},
    )
    return result


def _coco_precision(cocoeval, truth, found, iou_thresholds: np.ndarray, area_ranges: list) -> np.ndarray:
    """COCOeval's interpolated precision [IoU threshold, recall threshold, area range], -1 where
    no valid face counts."""
    evaluation = cocoeval(truth, found, "bbox")
    evaluation.params.iouThrs = iou_thresholds
    evaluation.params.areaRng = area_ranges
    evaluation.params.areaRngLbl = [str(r) for r in area_ranges]
    evaluation.params.maxDets = [COCO_MAX_DETECTIONS]
    evaluation.evaluate()
    evaluation.accumulate()
    return evaluation.eval["precision"][:, :, 0, :, 0]


def _mean_precision(precision: np.ndarray) -> float | None:
    """COCO's AP: the mean of the precision over the points where valid faces count."""
    values = precision[precision > -1]
    return float(values.mean()) if values.size else None


@dataclasses.dataclass
class Evaluator:
    """Collects detections image by image; `result()` gives the WIDER protocol's AP over
    everything added, `coco_result()` COCO's (see `coco_average_precision`).

    input_size: side of the stored image in pixels, for COCO's sizes.
    """

    iou_threshold: float = 0.5
    input_size: int = 224
    num_positives: int = dataclasses.field(default=0, init=False)
    num_images: int = dataclasses.field(default=0, init=False)
    _scores: list = dataclasses.field(default_factory=list, init=False, repr=False)
    _labels: list = dataclasses.field(default_factory=list, init=False, repr=False)
    _images: list = dataclasses.field(default_factory=list, init=False, repr=False)

    def add(self, det_boxes, det_scores, gt_boxes, gt_invalid) -> None:
        """One image: its detections and its stored faces (see `match`)."""
        image = ImageResult.of(det_boxes, det_scores, gt_boxes, gt_invalid)
        self._images.append(image)
        self._scores.append(image.det_scores)
        self._labels.append(match(image.det_boxes, image.det_scores, image.gt_boxes, image.gt_invalid, self.iou_threshold))
        self.num_positives += int(np.sum(~image.gt_invalid))
        self.num_images += 1

    def coco_result(self) -> dict:
        """COCO's AP50, AP50:95 and AP50 by face size over everything added."""
        return coco_average_precision(self._images, self.input_size)

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
