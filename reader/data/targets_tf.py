"""The TF port of `reader.core.targets.encode_faces`: the grid targets of stored boxes, in
TensorFlow, for tf.data (no Python in the input pipeline, so it runs in parallel).

Each function ports one NumPy function, with the same float64 arithmetic, and the tests
(tests/reader/data/test_dataset.py) hold them equal value for value, eagerly and inside tf.data:
- `placement_tf`: `reader.core.boxes.Placement.fit` (the scaled size);
- `source_areas_tf`: `Placement.source_areas`;
- `target_mask_tf`: `reader.core.targets.target_mask`;
- `encode_tf` (one record), `encode_batch_tf` (a ragged batch): `reader.core.targets.encode`.
The flip augmentation (`reader.data.augment`) is their user.

This module imports TensorFlow only inside its functions.
"""

from __future__ import annotations

from reader.core import boxes as box_formats
from reader.core import targets


def placement_tf(source_height, source_width, size: int, resize: str):
    """(scaled_height, scaled_width) as float64 scalars: `Placement.fit` for one record."""
    import tensorflow as tf

    h, w = tf.cast(source_height, tf.float64), tf.cast(source_width, tf.float64)
    full = tf.constant(float(size), tf.float64)
    if resize == "stretch":
        return full, full
    if resize != "letterbox":
        raise ValueError(f"resize mode must be one of {box_formats.RESIZE_MODES}, got {resize!r}")
    scale = tf.minimum(full / w, full / h)
    # Python's round() and tf.round both round half to even.
    one = tf.constant(1.0, tf.float64)
    scaled_w = tf.minimum(full, tf.maximum(one, tf.round(w * scale)))
    scaled_h = tf.minimum(full, tf.maximum(one, tf.round(h * scale)))
    return scaled_h, scaled_w


def source_areas_tf(boxes, source_height, source_width, scaled_height, scaled_width, size: int):
    """`Placement.source_areas`: int64 [N] areas in source pixels of rel_xyxy boxes [N, 4]."""
    import tensorflow as tf

    rel = tf.cast(boxes, tf.float64)
    sw, sh = tf.cast(source_width, tf.float64), tf.cast(source_height, tf.float64)
    width = (rel[:, 2] - rel[:, 0]) * float(size) * sw / scaled_width
    height = (rel[:, 3] - rel[:, 1]) * float(size) * sh / scaled_height
    return tf.cast(tf.round(width), tf.int64) * tf.cast(tf.round(height), tf.int64)


def target_mask_tf(boxes, invalid, min_face_px: float, input_size: int):
    """`targets.target_mask`: bool [N]."""
    import tensorflow as tf

    rel = tf.cast(boxes, tf.float64)
    sides = tf.minimum(rel[:, 2] - rel[:, 0], rel[:, 3] - rel[:, 1]) * float(input_size)
    return tf.logical_and(tf.equal(invalid, 0), sides >= min_face_px)


def encode_tf(boxes, is_target, areas, grid_size: int):
    """`targets.encode` in TensorFlow: (grid float32 [S, S, 5], ignore float32 [S, S]).

    boxes: rel_xyxy [N, 4]; is_target: bool [N]; areas: [N], larger wins a shared cell, ties go
    to the lower index.
    """
    import tensorflow as tf

    boxes = tf.RaggedTensor.from_tensor(tf.reshape(tf.convert_to_tensor(boxes), [1, -1, 4]))
    grid, ignore = encode_batch_tf(boxes, tf.reshape(is_target, [1, -1]), tf.reshape(areas, [1, -1]), grid_size)
    return grid[0], ignore[0]


def encode_batch_tf(boxes, is_target, areas, grid_size: int):
    """`targets.encode` for a batch: (grid float32 [B, S, S, 5], ignore float32 [B, S, S]).

    boxes: ragged rel_xyxy [B, None, 4]; is_target, areas: [B, None] with the same rows (ragged,
    or dense for a batch of one). Vectorized over every face of the batch: faces are ranked by
    (image, -area, index), and each cell's owner is the competing face of lowest rank in it,
    found with one segment minimum.
    """
    import tensorflow as tf

    s = grid_size
    batch = tf.cast(boxes.nrows(), tf.int32)
    rows = tf.cast(boxes.value_rowids(), tf.int32)
    b = tf.cast(tf.reshape(boxes.flat_values, [-1, 4]), tf.float64)
    is_target = tf.reshape(is_target.flat_values if isinstance(is_target, tf.RaggedTensor) else is_target, [-1])
    areas = tf.reshape(areas.flat_values if isinstance(areas, tf.RaggedTensor) else areas, [-1])
    n = tf.shape(b)[0]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    col = tf.cast(tf.clip_by_value(tf.floor(cx * s), 0.0, s - 1.0), tf.int32)
    row = tf.cast(tf.clip_by_value(tf.floor(cy * s), 0.0, s - 1.0), tf.int32)
    cell = rows * (s * s) + row * s + col  # a cell of one image of the batch
    cells = batch * s * s

    # Stable sorts: by -area, then by image, so that within an image the listed order breaks ties.
    by_area = tf.argsort(-areas, stable=True)
    order = tf.gather(by_area, tf.argsort(tf.gather(rows, by_area), stable=True))
    rank = tf.scatter_nd(order[:, None], tf.range(n), [n])  # each face's place in that order
    segments = tf.where(is_target, cell, cells)  # faces that do not compete go to a spare segment
    best = tf.math.unsorted_segment_min(rank, segments, cells + 1)[:cells]  # int32 max when empty
    # Row n of the padded tables stands for "no owner", so empty cells gather zeros.
    owner = tf.gather(tf.concat([order, [n]], 0), tf.minimum(best, n))
    values = tf.stack(
        [
            b[:, 3] - b[:, 1],
            b[:, 2] - b[:, 0],
            cy * s - tf.cast(row, tf.float64),
            cx * s - tf.cast(col, tf.float64),
            tf.ones_like(cx),
        ],
        axis=1,
    )
    values = tf.concat([tf.cast(values, tf.float32), tf.zeros([1, targets.NUM_CHANNELS], tf.float32)], 0)
    grid = tf.reshape(tf.gather(values, owner), [-1, s, s, targets.NUM_CHANNELS])

    kept_out = tf.cast(tf.logical_not(is_target), tf.float32)
    ignore = tf.math.unsorted_segment_max(kept_out, cell, cells)  # lowest float where no face
    ignore = tf.where(tf.logical_and(ignore > 0, best >= n), 1.0, 0.0)
    return grid, tf.reshape(ignore, [-1, s, s])
