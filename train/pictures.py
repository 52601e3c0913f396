"""One picture of a model's detections over a stored image, as train.predict and training draw
them: every box outlined in its colour over a one-pixel black halo, so that it shows on light
and dark backgrounds alike, and a legend strip below the image saying what each colour is.

    green   a face of the record that is a target
    orange  a face flagged invalid in WIDER (stored, neither target nor scored: dashed)
    red     a detection, with its objectness

And the threshold to suggest when no cell reaches the drawing threshold: the score that as many
cells reach as the pictures hold faces, so that a young model's best guesses show, not a box in
every cell.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

DETECTION = (255, 40, 40)
FACE = (40, 220, 40)
INVALID_FACE = (255, 160, 0)
HALO = (0, 0, 0)
GRID_LINE = (255, 255, 255, 50)
LEGEND_HEIGHT = 24
_LEGEND = ((FACE, "face"), (INVALID_FACE, "invalid face (not scored)"), (DETECTION, "detection"))
_DASH = 6  # pixels drawn, then as many skipped, along an invalid face's outline


def _outline(pen: ImageDraw.ImageDraw, box, colour, width: int, dashed: bool = False) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    pen.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=HALO, width=1)
    pen.rectangle([x0 - width - 1, y0 - width - 1, x1 + width + 1, y1 + width + 1], outline=HALO, width=1)
    if not dashed:
        pen.rectangle([x0 - width, y0 - width, x1 + width, y1 + width], outline=colour, width=width)
        return
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in np.arange(0, max(length, 1), 2 * _DASH):
            end = min(start + _DASH, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            pen.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0), (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)],
                     fill=colour, width=width + 1)  # fmt: skip


def _legend(picture: Image.Image, threshold: float | None) -> Image.Image:
    out = Image.new("RGB", (picture.width, picture.height + LEGEND_HEIGHT), (32, 32, 32))
    out.paste(picture, (0, 0))
    pen = ImageDraw.Draw(out)
    x, y = 6, picture.height + 6
    items = [*_LEGEND] + ([] if threshold is None else [(None, f"objectness >= {threshold:g}")])
    for colour, text in items:
        if colour is not None:
            pen.rectangle([x, y, x + 12, y + 12], outline=colour, width=2)
            x += 16
        pen.text((x, y), text, fill=(235, 235, 235))
        x += int(pen.textlength(text)) + 12
    return out


def draw(
    image: np.ndarray, gt_boxes: np.ndarray, gt_invalid: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
    grid_size: int, scale: int = 2, threshold: float | None = None,
) -> Image.Image:  # fmt: skip
    """One picture. image: float [size, size, 3] in [-1, 1]; boxes rel_xyxy [N, 4] / [K, 4];
    threshold: the objectness the detections reached, named in the legend (None: not named)."""
    pixels = np.clip(np.rint((np.asarray(image) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels).convert("RGBA")
    side = picture.width * scale
    picture = picture.resize((side, side), Image.Resampling.BILINEAR)
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    lines = ImageDraw.Draw(overlay)
    for i in range(1, grid_size):
        at = round(i * side / grid_size)
        lines.line([(at, 0), (at, side)], fill=GRID_LINE)
        lines.line([(0, at), (side, at)], fill=GRID_LINE)
    picture = Image.alpha_composite(picture, overlay).convert("RGB")
    pen = ImageDraw.Draw(picture)
    for box, invalid in zip(np.asarray(gt_boxes).reshape(-1, 4) * side, np.asarray(gt_invalid).reshape(-1)):
        _outline(pen, box, INVALID_FACE if invalid else FACE, 1, dashed=bool(invalid))
    for box, score in zip(np.asarray(det_boxes).reshape(-1, 4) * side, np.asarray(det_scores).reshape(-1)):
        _outline(pen, box, DETECTION, 2)
        label = f"{score:.2f}"
        at = (box[0], max(0.0, box[1] - 14))
        pen.rectangle(pen.textbbox(at, label), fill=DETECTION)
        pen.text(at, label, fill=(255, 255, 255))
    return _legend(picture, threshold)


def suggested_threshold(objectness: np.ndarray, faces: int) -> float:
    """A threshold that `faces` cells of `objectness` (every cell of the pictures) reach, and at
    most twice as many: the `faces`-th highest score, rounded down to the fewest significant
    digits (2 to 8) that keep it so. A young model's scores differ in the fourth digit only."""
    scores = np.sort(np.asarray(objectness, np.float64).ravel())[::-1]
    wanted = min(max(faces, 1), len(scores))
    value = float(scores[wanted - 1]) if len(scores) else 0.0
    if value <= 0:
        return 0.0
    for significant in range(2, 9):
        digits = significant - 1 - math.floor(math.log10(value))
        rounded = math.floor(value * 10**digits) / 10**digits
        if np.count_nonzero(scores >= rounded) <= 2 * wanted:
            return rounded
    return value
