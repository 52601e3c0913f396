"""WIDER FACE's Easy / Medium / Hard AP in NumPy: the release's ground truth, IoU, the curves.

The protocol, and each rule it leaves open, is stated once in train/wider_eval.py's docstring
(the command's help); this module is its computation, apart from reading prediction files
(train/wider_predictions.py) so that training scores its detections without writing any.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np

SUBSETS = ("easy", "medium", "hard")
NUM_THRESHOLDS = 1000
IOU_THRESHOLD = 0.5
FACE_FILE = "wider_face_val.mat"
SUBSET_FILES = {subset: f"wider_{subset}_val.mat" for subset in SUBSETS}
# The repository's copy; absent when the package is installed without the repository.
DEFAULT_GROUND_TRUTH = pathlib.Path(__file__).resolve().parents[1] / "data" / "eval_tools" / "ground_truth"

ImageKey = tuple[str, str]  # (event, image name without .jpg), as the ground truth names images


class EvalError(ValueError):
    """Unusable predictions or ground truth: one line naming the file (and line). Exit 1."""


def thresholds() -> np.ndarray:
    """The 1,000 score thresholds, highest first: 1 - k/1000 for k = 1..1000 (the last is 0)."""
    return 1 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS


def image_key(filename: str) -> ImageKey:
    """(event, name) of an image path as annotated: `0--Parade/0_Parade_x_1.jpg` -> ("0--Parade", "0_Parade_x_1")."""
    parts = filename.replace("\\", "/").split("/")
    return (parts[-2] if len(parts) > 1 else "", os.path.splitext(parts[-1])[0])


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """WIDER val as the evaluation sees it, images in the files' order.

    images: (event, name) per image; boxes: float64 [N, 4] `x y w h` per image (source px);
    invalid: bool [N] per image (the release's invalid flag); counted: per subset, bool [N] per
    image, True for the faces that count in it.
    """

    images: tuple[ImageKey, ...]
    boxes: tuple[np.ndarray, ...]
    invalid: tuple[np.ndarray, ...]
    counted: Mapping[str, tuple[np.ndarray, ...]]

    @property
    def index(self) -> dict[ImageKey, int]:
        return {key: i for i, key in enumerate(self.images)}

    def faces(self, subset: str) -> int:
        return int(sum(mask.sum() for mask in self.counted[subset]))


def _cells(mat: dict, key: str, path: str) -> list:
    """A (events, 1) cell array of a .mat file as a list of per-event lists."""
    if key not in mat:
        raise EvalError(
            f"{path}: expected the key {key!r} of WIDER's ground truth, found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    return [list(np.asarray(event[0]).reshape(-1)) for event in np.asarray(mat[key]).reshape(-1, 1)]


def _load_mat(path: str) -> dict:
    import scipy.io

    if not os.path.isfile(path):
        raise EvalError(
            f"{path}: no such file (the ground truth folder holds {FACE_FILE} and {', '.join(SUBSET_FILES.values())})"
        )
    try:
        return scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many kinds on a damaged file
        raise EvalError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})".splitlines()[0]) from None


def load_ground_truth(directory: str | os.PathLike) -> GroundTruth:
    """Reads the four .mat files of `directory`. Raises EvalError naming a file that is missing,
    unreadable, or disagrees with wider_face_val.mat (images, boxes)."""
    directory = os.fspath(directory)
    face_path = os.path.join(directory, FACE_FILE)
    face = _load_mat(face_path)
    events = [str(np.asarray(e[0]).reshape(-1)[0]) for e in face["event_list"]] if "event_list" in face else None
    if events is None:
        raise EvalError(f"{face_path}: expected the key 'event_list' of WIDER's ground truth")
    files = _cells(face, "file_list", face_path)
    boxes = _cells(face, "face_bbx_list", face_path)
    invalid = _cells(face, "invalid_label_list", face_path)
    images = tuple((event, str(np.asarray(name).reshape(-1)[0])) for event, names in zip(events, files) for name in names)
    flat_boxes = tuple(np.asarray(b, np.float64).reshape(-1, 4) for event in boxes for b in event)
    flat_invalid = tuple(np.asarray(v).reshape(-1).astype(bool) for event in invalid for v in event)
    counted = {}
    for subset, name in SUBSET_FILES.items():
        path = os.path.join(directory, name)
        mat = _load_mat(path)
        keeps = [k for event in _cells(mat, "gt_list", path) for k in event]
        if len(keeps) != len(images):
            raise EvalError(f"{path}: gt_list covers {len(keeps)} images, {face_path} lists {len(images)}")
        masks = []
        for i, (keep, image_boxes) in enumerate(zip(keeps, flat_boxes)):
            rows = np.asarray(keep).reshape(-1).astype(np.int64) - 1  # 1-based in MATLAB; uint8 or uint16
            if len(rows) and (rows.min() < 0 or rows.max() >= len(image_boxes)):
                raise EvalError(
                    f"{path}: gt_list of {'/'.join(images[i])} names face {rows.max() + 1}, the image has {len(image_boxes)}"
                )
            mask = np.zeros(len(image_boxes), bool)
            mask[rows] = True
            masks.append(mask)
        counted[subset] = tuple(masks)
    return GroundTruth(images, flat_boxes, flat_invalid, counted)


def overlaps(detections: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """IoU [K, N] of `x y w h` boxes by the release's +1 pixel convention (train/wider_eval.py's docstring)."""
    d = np.asarray(detections, np.float64).reshape(-1, 4)
    g = np.asarray(faces, np.float64).reshape(-1, 4)
    d = np.concatenate([d[:, :2], d[:, :2] + d[:, 2:]], axis=1)
    g = np.concatenate([g[:, :2], g[:, :2] + g[:, 2:]], axis=1)
    iw = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0]) + 1
    ih = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (d[:, 2] - d[:, 0] + 1) * (d[:, 3] - d[:, 1] + 1)
    area_g = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    union = area_d[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP of a curve sampled at falling thresholds (recall non-decreasing)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclasses.dataclass(frozen=True)
class Result:
    """ap: per subset (None where no face of the subset is evaluated); faces: per subset;
    precision, recall: per subset, float64 [1000] at `thresholds()` (precision NaN where no
    counted detection scores that high); images evaluated, of ground_truth_images; detections:
    every detection read; score_range: (min, max) before normalization, None without detections."""

    ap: dict
    faces: dict
    precision: dict
    recall: dict
    images: int
    ground_truth_images: int
    detections: int
    score_range: tuple[float, float] | None

    def line(self) -> str:
        return " ".join(f"{subset} {ap_text(self.ap[subset])}" for subset in SUBSETS)

    def to_json(self) -> dict:
        def numbers(values):
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "ap": dict(self.ap),
            "faces": dict(self.faces),
            "images": self.images,
            "ground_truth_images": self.ground_truth_images,
            "detections": self.detections,
            "score_range": list(self.score_range) if self.score_range else None,
            "thresholds": thresholds().tolist(),
            "curves": {s: {"precision": numbers(self.precision[s]), "recall": self.recall[s].tolist()} for s in SUBSETS},
        }


def ap_text(ap: float | None) -> str:
    return "n/a" if ap is None else f"{ap:.4f}"


def evaluate(truth: GroundTruth, predictions: Mapping[ImageKey, np.ndarray], images: Iterable[ImageKey] | None = None) -> Result:
    """Easy / Medium / Hard AP of `predictions` ({(event, name): float64 [K, 5] `x y w h score`},
    any order) over `images` (default every image of the ground truth; each must have an entry
    in predictions, possibly empty). Raises EvalError for an image missing from either."""
    index = truth.index
    keys = list(truth.images if images is None else images)
    for key in keys:
        if key not in index:
            raise EvalError(f"{'/'.join(key)}: not an image of the ground truth")
        if key not in predictions:
            raise EvalError(f"{'/'.join(key)}: no predictions given for this image")
    dets = [np.asarray(predictions[key], np.float64).reshape(-1, 5) for key in keys]
    scores = np.concatenate([d[:, 4] for d in dets]) if dets else np.zeros(0)
    score_range = (float(scores.min()), float(scores.max())) if len(scores) else None
    low, high = score_range or (0.0, 1.0)

    # Per image, once for the three subsets: the face each detection takes (-1: none at IoU >= 0.5).
    counting = {s: [] for s in SUBSETS}  # normalized scores of the detections that count
    recalling = {s: [] for s in SUBSETS}  # normalized scores of the detections that recall a face
    for key, det in zip(keys, dets):
        faces = truth.boxes[index[key]]
        if not len(det) or not len(faces):
            continue
        normalized = (det[:, 4] - low) / (high - low) if high > low else np.ones(len(det))
        order = np.argsort(-normalized, kind="stable")
        det, normalized = det[order], normalized[order]
        iou = overlaps(det[:, :4], faces)
        taken = np.argmax(iou, axis=1)
        matched = iou[np.arange(len(det)), taken] >= IOU_THRESHOLD
        first = np.zeros(len(det), bool)  # the best-scoring detection of each face taken
        hits = np.flatnonzero(matched)
        first[hits[np.unique(taken[hits], return_index=True)[1]]] = True
        for subset in SUBSETS:
            counts = truth.counted[subset][index[key]][taken]
            counting[subset].append(normalized[~(matched & ~counts)])
            recalling[subset].append(normalized[first & counts])

    ts = thresholds()
    ap, faces, precision, recall = {}, {}, {}, {}
    for subset in SUBSETS:
        faces[subset] = int(sum(truth.counted[subset][index[key]].sum() for key in keys))
        proposed = _at_or_above(counting[subset], ts)
        recalled = _at_or_above(recalling[subset], ts)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision[subset] = np.where(proposed > 0, recalled / proposed, np.nan)
        recall[subset] = recalled / faces[subset] if faces[subset] else np.zeros(len(ts))
        # Precision where nothing is proposed sits at recall 0, left of every step: 0 there is inert.
        ap[subset] = voc_ap(recall[subset], np.nan_to_num(precision[subset])) if faces[subset] else None
    return Result(ap, faces, precision, recall, len(keys), len(truth.images), len(scores), score_range)


def _at_or_above(parts: list[np.ndarray], ts: np.ndarray) -> np.ndarray:
    """For each threshold, how many of the scores are >= it."""
    values = np.sort(np.concatenate(parts)) if parts else np.zeros(0)
    return (len(values) - np.searchsorted(values, ts, side="left")).astype(np.float64)
