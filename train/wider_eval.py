"""WIDER FACE's official evaluation (Easy / Medium / Hard AP on val), for any detector.

    python -m train.wider_eval --predictions=DIR [--ground_truth=DIR] [--json=FILE] [--plot=FILE.png]

Scores a folder of prediction files in the WIDER layout (`train.wider`: DIR/<event>/<name>.txt,
line 1 the image name, line 2 the number of detections, then `x y w h score` lines in source
pixels) against the release's ground truth (data/eval_tools/, read with scipy), and prints one
line `easy 0.xxxx medium 0.xxxx hard 0.xxxx`. --json writes the APs and the three
precision-recall curves; --plot draws the curves (matplotlib). Exit status: 0, 1 when the
predictions or the ground truth are unusable (one line naming the file and line), 2 on bad usage.

The protocol is the release's (data/eval_tools/README.md), written again here in NumPy:
- scores are normalized over every detection of every image evaluated: (s - min) / (max - min);
  when they are all equal (max = min, where the release's tools divide by zero) every score
  becomes 1;
- per image, detections in decreasing score (ties in file order) each take the face they
  overlap most (the first such face on a tie). IoU uses the +1 pixel convention: corners
  (x, y, x + w, y + h), every side, the intersection's too, is x2 - x1 + 1, and a side <= 0 is no
  overlap. At IoU >= 0.5 with a face the subset ignores, the detection counts neither way; with
  a face that counts and is not yet recalled, it recalls it; otherwise it is a false positive;
- an image whose face list is empty contributes no detection (the four val images without a
  face hold one all-zero box, so theirs are false positives, as in the release's tools); the
  faces of an image without detections still count;
- at the thresholds t = 1 - k/1000, k = 1..1000: precision = faces recalled / counted detections
  scoring >= t, recall = faces recalled / faces of the subset; AP is the VOC all-point area
  under that curve (precision made non-increasing from the right, recall 0 and 1 added).

What a prediction file must be (anything else is an error naming the file and line):
- a regular file of at most 64 MiB, UTF-8; `\\n` or `\\r\\n` line ends; blank lines at the end;
- line 1 the image's name (a path before it and a `.jpg` after it are allowed);
- line 2 an integer >= 0, the number of lines that follow;
- then that many lines of exactly five decimal numbers, all finite (no NaN or inf), separated
  by spaces or tabs; boxes are taken as written: a negative size is no error, it overlaps
  nothing (as in the release's tools);
- every image of the ground truth has its file (count 0 when nothing is detected), and every
  .txt file under DIR is one of them (another split's files are refused); other files are
  left alone, as are directories; a link leading out of DIR is refused.
Evaluating only some images (`images=` of `evaluate`, what training does for a build holding
part of WIDER val) scores them alone: figures not comparable with published ones.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import stat
import sys
from collections.abc import Iterable, Mapping

import numpy as np
from absl import flags

SUBSETS = ("easy", "medium", "hard")
NUM_THRESHOLDS = 1000
IOU_THRESHOLD = 0.5
MAX_FILE_BYTES = 64 * 2**20
FACE_FILE = "wider_face_val.mat"
SUBSET_FILES = {subset: f"wider_{subset}_val.mat" for subset in SUBSETS}
# The repository's copy; absent when the package is installed without the repository.
DEFAULT_GROUND_TRUTH = pathlib.Path(__file__).resolve().parents[1] / "data" / "eval_tools" / "ground_truth"
USAGE_EXIT, FAILED_EXIT = 2, 1

ImageKey = tuple[str, str]  # (event, image name without .jpg), as the ground truth names images


class EvalError(ValueError):
    """Unusable predictions or ground truth: one line naming the file (and line). Exit 1."""


class UsageError(ValueError):
    """Bad flags, or no ground truth to default to. Exit 2."""


def thresholds() -> np.ndarray:
    """The 1,000 score thresholds, highest first: 1 - k/1000 for k = 1..1000 (the last is 0)."""
    return 1 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS


def image_key(filename: str) -> ImageKey:
    """(event, name) of an image path as annotated: `0--Parade/0_Parade_x_1.jpg` -> ("0--Parade", "0_Parade_x_1")."""
    parts = filename.replace("\\", "/").split("/")
    return (parts[-2] if len(parts) > 1 else "", os.path.splitext(parts[-1])[0])


# -- ground truth ----------------------------------------------------------------------------------


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
        raise EvalError(f"{path}: expected the key {key!r} of WIDER's ground truth, found {sorted(k for k in mat if not k.startswith('__'))}")
    return [list(np.asarray(event[0]).reshape(-1)) for event in np.asarray(mat[key]).reshape(-1, 1)]


def _load_mat(path: str) -> dict:
    import scipy.io

    if not os.path.isfile(path):
        raise EvalError(f"{path}: no such file (the ground truth folder holds {FACE_FILE} and {', '.join(SUBSET_FILES.values())})")
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
                raise EvalError(f"{path}: gt_list of {'/'.join(images[i])} names face {rows.max() + 1}, the image has {len(image_boxes)}")
            mask = np.zeros(len(image_boxes), bool)
            mask[rows] = True
            masks.append(mask)
        counted[subset] = tuple(masks)
    return GroundTruth(images, flat_boxes, flat_invalid, counted)


# -- prediction files --------------------------------------------------------------------------------

# Unambiguous (digits before a dot, digits after it), so a long malformed line cannot make the
# regular expression backtrack through every way of splitting its digits.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DETECTION = re.compile(rf"[ \t]*{_NUMBER}(?:[ \t]+{_NUMBER}){{4}}[ \t]*\r?")
_DETECTIONS = re.compile(rf"(?:{_DETECTION.pattern}\n)*")
_NUMBER_ONLY = re.compile(rf"{_NUMBER}")
_COUNT = re.compile(r"[ \t]*(\d{1,9})[ \t]*\r?")


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_prediction_file(data: bytes, path: str, name: str) -> np.ndarray:
    """The detections of one prediction file (its bytes), float64 [K, 5] `x y w h score` in file
    order. name: the image's name without `.jpg`, which line 1 must give. Raises EvalError
    `PATH:LINE: expected ..., found ...` on anything the module docstring does not allow."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise EvalError(f"{path}:{line}: expected UTF-8 text, found byte 0x{data[e.start]:02x}") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise EvalError(f"{path}:1: expected the image name {name!r}, found an empty file")
    first = lines[0].strip().replace("\\", "/").split("/")[-1]
    if first.lower().endswith(".jpg"):
        first = first[:-4]
    if first != name:
        raise EvalError(f"{path}:1: expected the image name {name!r}, found {_shown(lines[0])}")
    count = _COUNT.fullmatch(lines[1]) if len(lines) > 1 else None
    if count is None:
        found = _shown(lines[1]) if len(lines) > 1 else "the end of the file"
        raise EvalError(f"{path}:2: expected the number of detections (an integer >= 0), found {found}")
    expected = int(count.group(1))
    body = lines[2:]
    if len(body) != expected:
        raise EvalError(f"{path}:2: expected {expected} detection lines after it (its count), found {len(body)}")
    if not expected:
        return np.zeros((0, 5))
    joined = "\n".join(body) + "\n"
    if _DETECTIONS.fullmatch(joined) is None:  # the slow path, only to say where
        for number, line in enumerate(body, start=3):
            if _DETECTION.fullmatch(line) is None:
                tokens = line.split()
                bad = next((t for t in tokens if _NUMBER_ONLY.fullmatch(t) is None), None)
                if len(tokens) == 5 and bad is not None:
                    what = "a NaN" if "nan" in bad.lower() else "an infinity" if "inf" in bad.lower() else _shown(bad)
                    raise EvalError(f"{path}:{number}: expected a finite decimal number, found {what} in {_shown(line)}")
                raise EvalError(f"{path}:{number}: expected 5 numbers 'x y w h score', found {_shown(line)}")
    values = np.array(joined.split(), np.float64).reshape(-1, 5)
    if not np.isfinite(values).all():  # a number too large for float64, such as 1e999
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise EvalError(f"{path}:{row + 3}: expected a finite number, found {_shown(body[row].split()[column])} (beyond float64)")
    return values


def _read_bounded(path: str, root: str) -> bytes:
    """The bytes of a prediction file: a regular file inside `root`, at most MAX_FILE_BYTES."""
    try:
        if os.path.islink(path):
            real = os.path.realpath(path)
            if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
                raise EvalError(f"{path}: a link leading out of {root} (to {real})")
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise EvalError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise EvalError(f"{path}: {info.st_size:,} bytes, over the {MAX_FILE_BYTES // 2**20} MiB a prediction file may hold")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise EvalError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise EvalError(f"{path}: over the {MAX_FILE_BYTES // 2**20} MiB a prediction file may hold")
    return data


def read_predictions(directory: str, truth: GroundTruth, images: Iterable[ImageKey] | None = None) -> dict[ImageKey, np.ndarray]:
    """The detections of DIR/<event>/<name>.txt for each image (default: every image of the
    ground truth), float64 [K, 5] each. Raises EvalError on a missing file, a .txt file under
    DIR that is no image of the ground truth, or a malformed file (see the module docstring)."""
    known = truth.index
    wanted = list(truth.images if images is None else images)
    stray = []
    for parent, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith(".txt"):
                continue
            relative = os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, "/").split("/")
            key = (relative[0], name[:-4]) if len(relative) == 2 else None
            if key not in known:
                stray.append(os.path.join(parent, name))
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise EvalError(
            f"{stray[0]}: not an image of the ground truth (WIDER val: DIR/<event>/<name>.txt for its "
            f"{len(known):,} images){more}; are these another split's predictions?"
        )
    paths = {key: os.path.join(directory, key[0], key[1] + ".txt") for key in wanted}
    missing = [path for path in paths.values() if not os.path.lexists(path)]
    if missing:
        raise EvalError(
            f"{missing[0]}: no such file: {len(missing):,} of the {len(wanted):,} images have no prediction "
            f"file (each needs one, with count 0 when nothing is detected)"
        )
    return {key: parse_prediction_file(_read_bounded(path, directory), path, key[1]) for key, path in paths.items()}


# -- the evaluation --------------------------------------------------------------------------------


def overlaps(detections: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """IoU [K, N] of `x y w h` boxes by the release's +1 pixel convention (module docstring)."""
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
        return " ".join(f"{subset} {_four(self.ap[subset])}" for subset in SUBSETS)

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


def _four(ap: float | None) -> str:
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


# -- a build's val split (what training reports) -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One image of a build as the evaluation takes it: its filename as annotated, its source
    size in pixels, and its detections float64 [K, 5] `x y w h score` in source pixels, the
    numbers its prediction file holds (`train.wider.as_written`)."""

    filename: str
    width: int
    height: int
    detections: np.ndarray


def grid_ceilings(truth: GroundTruth, images: list[SourceImage], build) -> dict:
    """Per subset, the share of its faces (over `images`) that own a grid cell at the build's
    sizes: faces clipped to the image and placed on the canvas as the build places them
    (`build`: a reader.core.config.BuildConfig), encoded by the build's rule
    (`reader.core.targets.encode_faces`: invalid, degenerate and too-small faces are no
    targets, the larger face takes a shared cell). No detection from the grid can recall the
    others, so a model's recall, and its AP, on the subset stay at or under this. 1.0 for a
    subset without faces there (as `train.metrics.recall_ceiling`)."""
    from reader.core import boxes as box_formats
    from reader.core import targets
    from train.metrics import recall_ceiling

    index = truth.index
    owned_counted = dict.fromkeys(SUBSETS, 0)
    counted_all = dict.fromkeys(SUBSETS, 0)
    for image in images:
        i = index[image_key(image.filename)]
        xyxy = box_formats.xywh_to_clipped_xyxy(truth.boxes[i], image.width, image.height)
        stored = np.flatnonzero(~box_formats.is_degenerate(xyxy))
        placement = box_formats.Placement.fit(image.width, image.height, build.input_size, build.resize)
        grid = targets.encode_faces(placement.to_rel_xyxy(xyxy[stored]), truth.invalid[i][stored], placement, build.grid_size, build.min_face_px)
        owns = np.zeros(len(xyxy), bool)
        owns[stored[grid.owners[grid.owners >= 0]]] = True
        for subset in SUBSETS:
            counted = truth.counted[subset][i]
            owned_counted[subset] += int((owns & counted).sum())
            counted_all[subset] += int(counted.sum())
    # recall_ceiling's terms: faces that own a cell, and the rest, which cannot be found.
    return {s: recall_ceiling({"targets": owned_counted[s], "dropped": counted_all[s] - owned_counted[s]}) for s in SUBSETS}


def report(images: list[SourceImage], build, ground_truth: str | os.PathLike | None) -> dict:
    """WIDER Easy / Medium / Hard AP of a build's val split, for training's metrics.json.

    Present when every image of the split is an image of WIDER val (matched by event and name):
    {"easy", "medium", "hard": AP (None for a subset without faces there), "recall_ceiling":
    {subset: `grid_ceilings`}, "faces": {subset: faces counted}, "images", "ground_truth_images",
    "complete": whether every image of the ground truth was scored (only then are the figures
    WIDER's published ones: a build of part of val, or one that lost images to its errors file,
    is scored over the images it holds), "ground_truth": the folder}.
    Otherwise {"absent": one line saying why}: no ground truth, or an image WIDER val lacks.
    """
    if ground_truth is None or not os.path.isdir(ground_truth):
        return {"absent": f"no WIDER ground truth at {ground_truth} (facegrid installed without its repository)"}
    try:
        truth = load_ground_truth(ground_truth)
    except EvalError as e:
        return {"absent": str(e)}
    known = truth.index
    if not images:
        return {"absent": "val holds no image"}
    stranger = next((image.filename for image in images if image_key(image.filename) not in known), None)
    if stranger is not None:
        return {"absent": f"val is not WIDER's val: its image {stranger} is none of WIDER val's {len(known):,} images"}
    keys = [image_key(image.filename) for image in images]
    result = evaluate(truth, {key: image.detections for key, image in zip(keys, images)}, keys)
    return {
        **result.ap,
        "recall_ceiling": grid_ceilings(truth, images, build),
        "faces": result.faces,
        "images": result.images,
        "ground_truth_images": result.ground_truth_images,
        "complete": result.images == result.ground_truth_images,
        "ground_truth": os.fspath(ground_truth),
    }


def metrics_fields(wider: dict) -> dict:
    """metrics.json's top-level WIDER fields from a `report`: wider_easy, wider_medium,
    wider_hard (None when absent), wider_recall_ceiling, wider_absent (None when present)."""
    present = "absent" not in wider
    return {
        **{f"wider_{s}": wider[s] if present else None for s in SUBSETS},
        "wider_recall_ceiling": wider["recall_ceiling"] if present else None,
        "wider_absent": None if present else wider["absent"],
    }


def summary_line(metrics: dict) -> str:
    """The run summary's line for the fields of `metrics_fields`."""
    if metrics.get("wider_absent") is not None or "wider_easy" not in metrics:
        return f"WIDER Easy/Medium/Hard AP: absent: {metrics.get('wider_absent', 'not computed')}"
    ceiling = metrics["wider_recall_ceiling"]
    wider = metrics.get("val", {}).get("wider", {})
    scope = "" if wider.get("complete", True) else (
        f" (over {wider['images']:,} of WIDER val's {wider['ground_truth_images']:,} images: not comparable with published figures)"
    )
    return (
        "WIDER val AP of the best model: " + " ".join(f"{s} {_four(metrics[f'wider_{s}'])}" for s in SUBSETS)
        + "; recall ceiling of the grid: " + " ".join(f"{s} {ceiling[s]:.4f}" for s in SUBSETS) + scope
    )


def default_ground_truth_or_none() -> str | None:
    return str(DEFAULT_GROUND_TRUTH) if DEFAULT_GROUND_TRUTH.is_dir() else None


# -- outputs -------------------------------------------------------------------------------------


def plot(result: Result, path: str, title: str = "WIDER FACE val") -> None:
    """The three precision-recall curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    for subset in SUBSETS:
        keep = ~np.isnan(result.precision[subset])
        axes.plot(result.recall[subset][keep], result.precision[subset][keep], label=f"{subset} AP {_four(result.ap[subset])}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def default_ground_truth() -> str:
    """The repository's data/eval_tools/ground_truth/. Raises UsageError where it is absent."""
    if not DEFAULT_GROUND_TRUTH.is_dir():
        raise UsageError(f"no ground truth at {DEFAULT_GROUND_TRUTH} (facegrid installed without its repository): pass --ground_truth=DIR")
    return str(DEFAULT_GROUND_TRUTH)


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("predictions", None, "Folder of WIDER-layout prediction files: DIR/<event>/<name>.txt.", flag_values=fv)
    flags.DEFINE_string(
        "ground_truth", None, "Folder of wider_face_val.mat and wider_{easy,medium,hard}_val.mat (default: the repository's).", flag_values=fv
    )
    flags.DEFINE_string("json", None, "Write the APs and the precision-recall curves here.", flag_values=fv)
    flags.DEFINE_string("plot", None, "Draw the precision-recall curves here (PNG).", flag_values=fv)
    return fv


def usage() -> str:
    return f"{__doc__}\nflags:\n{_define_flags().get_help()}"


def run(argv: list[str]) -> Result:
    """argv with the program name first. Raises UsageError or EvalError."""
    fv = _define_flags()
    try:
        fv(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from None
    if fv.predictions is None:
        raise UsageError("missing required flag --predictions=DIR")
    if not os.path.isdir(fv.predictions):
        raise UsageError(f"--predictions={fv.predictions}: not a directory")
    ground_truth = fv.ground_truth or default_ground_truth()
    if not os.path.isdir(ground_truth):
        raise UsageError(f"--ground_truth={ground_truth}: not a directory")
    for path in (fv.json, fv.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{path}: its directory does not exist")
    if fv.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'facegrid[report]'")
    truth = load_ground_truth(ground_truth)
    result = evaluate(truth, read_predictions(fv.predictions, truth))
    if fv.json:
        with open(fv.json, "w") as f:
            json.dump({**result.to_json(), "predictions": fv.predictions, "ground_truth": ground_truth}, f, indent=1)
    if fv.plot:
        plot(result, fv.plot)
    return result


def main(argv: list[str] | None = None) -> int:
    """The command (argv with the program name first; default sys.argv): returns the exit status."""
    argv = sys.argv if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv[1:]):
        print(usage())
        return 0
    try:
        result = run(argv)
    except UsageError as e:
        print(f"train.wider_eval: {e}", file=sys.stderr)
        return USAGE_EXIT
    except EvalError as e:
        print(f"train.wider_eval: {e}", file=sys.stderr)
        return FAILED_EXIT
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
