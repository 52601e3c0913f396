"""Grid targets: encode faces into an S x S x 5 grid and decode a grid back into boxes.

Pure NumPy: no I/O, no TensorFlow. The build encodes from the boxes exactly as stored
(float32 `rel_xyxy`), so the checker and the flip augmentation recompute identical targets
from a record alone.

For a face with centre (cx, cy) and size (w, h), all normalized to the canvas:
    col = min(floor(cx * S), S - 1)      row = min(floor(cy * S), S - 1)
    grid[row, col] = (h, w, cy * S - row, cx * S - col, 1)
Only target faces get a cell. When two share one, the larger area wins and a tie goes to the
face listed first; the losers are counted as dropped. Areas compete in source pixels (recovered
exactly from the stored boxes, see `Placement.source_areas`), so float32 rounding never breaks
a tie. Faces kept out of the targets (invalid,
or too small) mark their cell in `ignore` unless a target holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from reader.core.boxes import Placement

CHANNELS = ("h", "w", "y", "x", "obj")
NUM_CHANNELS = len(CHANNELS)  # the grid's depth: target/grid holds S * S * NUM_CHANNELS values
H, W, Y, X, OBJ = range(NUM_CHANNELS)


@dataclasses.dataclass(frozen=True)
class GridTargets:
    """grid: float32 [S, S, 5] in CHANNELS order; ignore: float32 [S, S] of 0/1;
    dropped: target faces that lost their cell; owners: int [S, S], the index of the face
    that owns each cell or -1; is_target: bool [N], the faces that competed for cells."""

    grid: np.ndarray
    ignore: np.ndarray
    dropped: int
    owners: np.ndarray
    is_target: np.ndarray

    @property
    def targets(self) -> int:
        return int((self.owners >= 0).sum())

    @property
    def ignored(self) -> int:
        """Faces stored but kept out of the targets."""
        return int((~self.is_target).sum())


def target_mask(boxes: np.ndarray, invalid: np.ndarray, min_face_px: float, input_size: int) -> np.ndarray:
    """True for faces that are targets: not invalid and at least `min_face_px` on both sides.

    boxes: rel_xyxy [N, 4]; invalid: [N] of 0/1; sizes measured on the `input_size` canvas.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * input_size
    return (np.asarray(invalid).reshape(-1) == 0) & (sides >= min_face_px)


def cells(boxes: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, col) of the cell holding each box centre, int arrays [N]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    col = np.clip(np.floor(cx * grid_size), 0, grid_size - 1).astype(np.int64)
    row = np.clip(np.floor(cy * grid_size), 0, grid_size - 1).astype(np.int64)
    return row, col


def encode(boxes: np.ndarray, is_target: np.ndarray, grid_size: int, areas: np.ndarray | None = None) -> GridTargets:
    """Encodes rel_xyxy boxes [N, 4] into grid targets.

    is_target: bool [N], False for faces stored but kept out of the targets.
    areas: [N], what faces sharing a cell compare (larger wins); the canvas areas by default.
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    is_target = np.asarray(is_target, dtype=bool).reshape(-1)
    if len(is_target) != len(boxes):
        raise ValueError(f"is_target has {len(is_target)} entries for {len(boxes)} boxes")
    s = grid_size
    row, col = cells(boxes, s)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    areas = width * height if areas is None else np.asarray(areas).reshape(-1)

    grid = np.zeros((s, s, NUM_CHANNELS), np.float32)
    owners = np.full((s, s), -1, np.int64)
    candidates = np.flatnonzero(is_target)
    # Largest area first; the stable sort keeps the listed order among equal areas.
    order = candidates[np.argsort(-areas[candidates], kind="stable")]
    # First come, first served, so the winners are the first of each cell in that order.
    order_cells = row[order] * s + col[order]
    _, first = np.unique(order_cells, return_index=True)
    winners = order[first]
    r, c = row[winners], col[winners]
    owners[r, c] = winners
    cy, cx = (boxes[winners, 1] + boxes[winners, 3]) / 2, (boxes[winners, 0] + boxes[winners, 2]) / 2
    grid[r, c] = np.stack([height[winners], width[winners], cy * s - r, cx * s - c, np.ones(len(winners))], axis=1)

    ignore = np.zeros((s, s), np.float32)
    kept_out = ~is_target
    ignore[row[kept_out], col[kept_out]] = 1.0
    ignore[owners >= 0] = 0.0
    return GridTargets(grid, ignore, int(len(candidates) - (owners >= 0).sum()), owners, is_target)


def encode_faces(boxes: np.ndarray, invalid: np.ndarray, placement: Placement, grid_size: int, min_face_px: float) -> GridTargets:
    """The targets of one record, by the build's rule: what the build stores and the checker
    and the flip augmentation recompute.

    boxes: stored rel_xyxy [N, 4]; invalid: the WIDER flag [N]; placement: where the source
    lies on the canvas (it gives source-pixel areas); min_face_px: on the canvas.
    """
    is_target = target_mask(boxes, invalid, min_face_px, placement.size)
    return encode(boxes, is_target, grid_size, placement.source_areas(boxes))


def decode(grid: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Boxes from a grid [S, S, 5] (targets or predictions): rel_xyxy [K, 4] and scores [K].

    Every cell whose obj >= threshold gives one box, in row-major cell order.
    """
    grid = np.asarray(grid, dtype=np.float64)
    s = grid.shape[0]
    rows, cols = np.nonzero(grid[..., OBJ] >= threshold)
    cell = grid[rows, cols]
    cy, cx = (rows + cell[:, Y]) / s, (cols + cell[:, X]) / s
    half_h, half_w = cell[:, H] / 2, cell[:, W] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return boxes.astype(np.float32), cell[:, OBJ].astype(np.float32)


def finite_problem(features: Mapping[str, np.ndarray], keys: Iterable[str]) -> str | None:
    """`target/grid: expected finite numbers, found nan (value 17 of 245)` for the first of `keys`
    (of a parsed record, reader.core.schema.parse_features) holding a value that is not a finite
    number: training would learn NaN from it. None when none does."""
    for key in keys:
        values = np.asarray(features.get(key, ()))
        if (bad := ~np.isfinite(values)).any():
            return f"{key}: expected finite numbers, found {values.flat[int(np.argmax(bad))]} (value {int(np.argmax(bad))} of {values.size})"
    return None
