"""Horizontal flip that keeps the targets true to the image, in NumPy and in TensorFlow.

Mirroring the grid's columns is not enough: a face whose centre lies on a cell boundary moves to
another column than the mirrored one, and two faces that share a cell in the flipped image need
not share it in the original, so the collision rule (larger source area wins, ties to the face
listed first) must run again. Both versions therefore flip the boxes (x -> 1 - x, see
`reader.core.boxes.flip_rel_xyxy`) and encode the grid anew from them by the build's own rule
(`reader.core.targets.encode_faces`): which faces compete (`target_mask`) and their source-pixel areas
are properties of the face, unchanged by the flip, so they are taken from the stored boxes.

- `flip_numpy`: for the Keras Sequence; calls `reader.core.targets` directly.
- `flip_targets_batch_tf` (a batch, what `make_dataset` uses) and `flip_tf` (one record): for
  tf.data, flipping with `flip_rel_xyxy_tf` (the TF port of `flip_rel_xyxy`) and encoding with
  `reader.data.targets_tf` (the TF port of `encode_faces`).

This module imports TensorFlow only inside the `_tf` functions.
"""

from __future__ import annotations

import numpy as np

from reader.core import boxes as box_formats
from reader.core import targets
from reader.data import targets_tf


def flip_numpy(
    image: np.ndarray,
    boxes: np.ndarray,
    invalid: np.ndarray,
    placement: box_formats.Placement,
    grid_size: int,
    min_face_px: float,
) -> tuple[np.ndarray, np.ndarray, targets.GridTargets]:
    """Flips one record left-right.

    image: [H, W, C]; boxes: stored rel_xyxy [N, 4]; invalid: [N] 0/1; placement: the record's
    placement on the canvas (from its original size and the build's resize mode).
    Returns (flipped image, flipped boxes, their grid targets).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    is_target = targets.target_mask(boxes, invalid, min_face_px, placement.size)
    areas = placement.source_areas(boxes)
    flipped = box_formats.flip_rel_xyxy(boxes)
    return image[:, ::-1], flipped, targets.encode(flipped, is_target, grid_size, areas)


# ---- TensorFlow --------------------------------------------------------------------------------


def flip_rel_xyxy_tf(boxes):
    """The TF port of `reader.core.boxes.flip_rel_xyxy`: rel_xyxy [N, 4] mirrored left-right."""
    import tensorflow as tf

    return tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def flip_tf(
    image, boxes, invalid, source_height, source_width, *, grid_size: int, input_size: int, resize: str, min_face_px: float
):
    """Flips one record left-right in TensorFlow: (image, boxes, grid [S, S, 5], ignore [S, S]).

    image: [H, W, C]; boxes: stored rel_xyxy float32 [N, 4]; invalid: int64 [N];
    source_height/width: the record's original size; the rest from the build's config.
    """
    import tensorflow as tf

    boxes = tf.reshape(tf.convert_to_tensor(boxes, tf.float32), [-1, 4])
    is_target = targets_tf.target_mask_tf(boxes, invalid, min_face_px, input_size)
    scaled_h, scaled_w = targets_tf.placement_tf(source_height, source_width, input_size, resize)
    areas = targets_tf.source_areas_tf(boxes, source_height, source_width, scaled_h, scaled_w, input_size)
    flipped = flip_rel_xyxy_tf(boxes)
    grid, ignore = targets_tf.encode_tf(flipped, is_target, areas, grid_size)
    return tf.reverse(image, axis=[1]), flipped, grid, ignore


def flip_targets_batch_tf(
    boxes, invalid, source_height, source_width, flip, *, grid_size: int, input_size: int, resize: str, min_face_px: float
):
    """Flips the boxes of a batch where `flip` says, and encodes their targets:
    (boxes, grid [B, S, S, 5], ignore [B, S, S]). The images are the caller's to mirror.

    boxes: ragged rel_xyxy float32 [B, None, 4]; invalid: ragged int64
    [B, None]; source_height/width: [B], the records' original sizes; flip: bool [B]. Targets
    are encoded for every record (cheap beside the images); the flipped ones are kept where
    `flip` is true, the caller's stored ones elsewhere (see `flip_tf` for one record).
    """
    import tensorflow as tf

    values = boxes.flat_values
    rows = boxes.value_rowids()
    is_target = targets_tf.target_mask_tf(values, invalid.flat_values, min_face_px, input_size)
    scaled_h, scaled_w = targets_tf.placement_tf(source_height, source_width, input_size, resize)
    areas = targets_tf.source_areas_tf(
        values,
        tf.gather(source_height, rows),
        tf.gather(source_width, rows),
        tf.gather(scaled_h, rows) if scaled_h.shape.rank else scaled_h,
        tf.gather(scaled_w, rows) if scaled_w.shape.rank else scaled_w,
        input_size,
    )
    face_flip = tf.gather(flip, rows)
    mirrored = flip_rel_xyxy_tf(values)
    values = tf.where(face_flip[:, None], mirrored, values)
    flipped_boxes = boxes.with_flat_values(values)
    grid, ignore = targets_tf.encode_batch_tf(
        flipped_boxes, boxes.with_flat_values(is_target), boxes.with_flat_values(areas), grid_size
    )
    return flipped_boxes, grid, ignore
