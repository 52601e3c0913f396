"""Box formats and the placement of a source image on the stored canvas.

Two named formats, converted only at the edges:
- `xywh`: pixels of the source image, (left, top, width, height), as WIDER writes them.
- `rel_xyxy`: (xmin, ymin, xmax, ymax) normalized to [0, 1] of the stored square canvas, as the
  records store them (one list per coordinate, TensorFlow Object Detection API names).
Arrays are [N, 4]; `xyxy` without `rel_` is the same corner order in source pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RESIZE_MODES = ("stretch", "letterbox")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a W x H source lands on the `size` x `size` canvas, in canvas pixels.

    The source is scaled to `scaled_width` x `scaled_height` and pasted at (`left`, `top`);
    `stretch` fills the canvas, `letterbox` keeps the aspect ratio and centres the image.
    """

    source_width: int
    source_height: int
    size: int
    scaled_width: int
    scaled_height: int
    left: int = 0
    top: int = 0

    def __post_init__(self):
        if min(self.source_width, self.source_height, self.size) < 1:
            raise ValueError(f"sizes must be positive, got {self}")
        if self.left + self.scaled_width > self.size or self.top + self.scaled_height > self.size:
            raise ValueError(f"scaled image must fit the canvas, got {self}")

    @classmethod
    def fit(cls, source_width: int, source_height: int, size: int, mode: str) -> Placement:
        """The placement for resize mode `stretch` or `letterbox`."""
        if mode == "stretch":
            return cls(source_width, source_height, size, size, size)
        if mode != "letterbox":
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
        scale = min(size / source_width, size / source_height)
        width = min(size, max(1, round(source_width * scale)))
        height = min(size, max(1, round(source_height * scale)))
        return cls(source_width, source_height, size, width, height, (size - width) // 2, (size - height) // 2)

    def to_rel_xyxy(self, xyxy: np.ndarray) -> np.ndarray:
        """Source-pixel corners [N, 4] to canvas-normalized corners, float32."""
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        sx, sy = self.scaled_width / self.source_width, self.scaled_height / self.source_height
        scale = np.array([sx, sy, sx, sy])
        offset = np.array([self.left, self.top, self.left, self.top])
        return ((xyxy * scale + offset) / self.size).astype(np.float32)

    def to_source_xyxy(self, rel_xyxy: np.ndarray) -> np.ndarray:
        """Canvas-normalized corners [N, 4] back to source-pixel corners, float64: the inverse of
        `to_rel_xyxy`. Clipped to the source image, since on a letterboxed canvas a box (a
        detection) may reach into the bars."""
        rel = np.asarray(rel_xyxy, np.float64).reshape(-1, 4)
        sx, sy = self.scaled_width / self.source_width, self.scaled_height / self.source_height
        offset = np.array([self.left, self.top] * 2, np.float64)
        xyxy = (rel * self.size - offset) / np.array([sx, sy, sx, sy])
        return np.clip(xyxy, 0, [self.source_width, self.source_height] * 2)

    def source_areas(self, rel_xyxy: np.ndarray) -> np.ndarray:
        """Areas in source pixels of canvas-normalized boxes, int64 [N].

        Clipped WIDER boxes have whole-pixel sides, so rounding recovers them exactly from the
        stored float32 coordinates: equal faces tie exactly, whatever their position.
        """
        rel = np.asarray(rel_xyxy, dtype=np.float64).reshape(-1, 4)
        width = (rel[:, 2] - rel[:, 0]) * self.size * self.source_width / self.scaled_width
        height = (rel[:, 3] - rel[:, 1]) * self.size * self.source_height / self.scaled_height
        return np.round(width).astype(np.int64) * np.round(height).astype(np.int64)


def xywh_to_clipped_xyxy(xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """WIDER pixel boxes [N, 4] to corners clipped to the W x H image, float64 pixels."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    # A negative width or height is a degenerate box: it must not reach back past its own origin.
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 0)], axis=1)
    return np.clip(corners, 0, np.array([width, height, width, height], dtype=np.float64))


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """Corners [N, 4] to (left, top, width, height), as WIDER writes boxes; float64."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def is_degenerate(xyxy: np.ndarray) -> np.ndarray:
    """True where a box has zero (or negative) width or height."""
    xyxy = np.asarray(xyxy).reshape(-1, 4)
    return (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])


def flip_rel_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Mirrors boxes left-right: x -> 1 - x, corners swapped so that xmin <= xmax stays true.

    The one flip of boxes; tf.data uses its TF port, `reader.data.augment.flip_rel_xyxy_tf`."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1).astype(boxes.dtype)


def iou_rel_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of [N, 4] and [M, 4] corner boxes: [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
