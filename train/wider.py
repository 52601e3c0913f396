"""Detections in the WIDER FACE evaluation layout, in source-image pixels.

One text file per image, at ROOT/<event>/<name>.txt for an image <event>/<name>.jpg:

    <name>
    <number of detections>
    x y w h score          (one line per detection; pixels of the source image, `xywh`)

which is what the official evaluation tool (eval_tools/, and its Python ports) reads. Every
number is written with the fewest digits that read back as exactly the value computed (boxes in
float64, scores in their own dtype, float32 from the model): scores rounded to a few decimals
would tie where the model's do not, and AP recomputed from the files would then differ from
the AP of metrics.json. `write_detections` takes the detections as found, `rel_xyxy` on the
canvas, back to source pixels by `reader.core.boxes.Placement.to_source_xyxy`.
"""

from __future__ import annotations

import os
import posixpath

import numpy as np

from reader.core import boxes as box_formats


def prediction_path(root: str, filename: str) -> str:
    """Where the predictions of the image `filename` (as annotated) go under `root`.

    Raises ValueError for a filename that would leave `root` (absolute, or with "..").
    """
    relative = posixpath.normpath(filename.replace("\\", "/"))
    if relative.startswith(("/", "../")) or relative == "..":
        raise ValueError(f"image filename must be relative and stay inside the output, got {filename!r}")
    event, name = posixpath.split(relative)
    return os.path.join(root, *([event] if event else []), posixpath.splitext(name)[0] + ".txt")


def exact(value: np.floating) -> str:
    """The shortest decimal that reads back as `value` in its own precision (`0.9` for float32 0.9)."""
    return np.format_float_positional(value, unique=True, trim="-")


def write_predictions(root: str, filename: str, xywh: np.ndarray, scores: np.ndarray) -> str:
    """Writes one image's detections (source-pixel `xywh` [K, 4], scores [K]); returns the path."""
    path = prediction_path(root, filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    lines = [posixpath.splitext(posixpath.basename(filename))[0], str(len(scores))]
    lines += [" ".join(exact(v) for v in (*box, score)) for box, score in zip(xywh, scores)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def source_xywh(rel_xyxy: np.ndarray, placement: box_formats.Placement) -> np.ndarray:
    """Detections on the canvas (`rel_xyxy` [K, 4]) in source pixels, `xywh` float64, clipped to
    the image (`Placement.to_source_xyxy`)."""
    return box_formats.xyxy_to_xywh(placement.to_source_xyxy(rel_xyxy))


def as_written(xywh: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float64 [K, 5] `x y w h score`: the numbers a prediction file of these detections holds,
    as a reader parsing it in float64 gets them (a float32 score's shortest decimal is not its
    float64 value: 0.9 for float32 0.9)."""
    scores = np.asarray(scores).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    values = np.array([float(exact(s)) for s in scores], np.float64)
    return np.concatenate([np.asarray(xywh, np.float64).reshape(-1, 4), values[:, None]], axis=1)


def write_detections(root: str, filename: str, rel_xyxy: np.ndarray, scores: np.ndarray, placement: box_formats.Placement) -> str:
    """Writes one image's detections given on the canvas (`rel_xyxy` [K, 4], scores [K]) in source
    pixels (`source_xywh`); returns the path."""
    return write_predictions(root, filename, source_xywh(rel_xyxy, placement), scores)
