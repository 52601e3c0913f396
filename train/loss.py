"""The detection loss, written from the grid target definition (DESIGN.md, "Grid targets").

y_true: float32 [B, S, S, 5] targets in CHANNELS order (h, w, y, x, obj), or [B, S, S, 6] with
    the ignore mask (1 = ignored cell) appended as channel 5; see `with_ignore`.
y_pred: float32 [B, S, S, 5] in (0, 1), the model output.

    objectness = sum over non-ignored cells of BCE(obj, obj_pred) / number of non-ignored cells
    box        = sum over face cells of  (y - y')^2 + (x - x')^2 + (sqrt h - sqrt h')^2
                                        + (sqrt w - sqrt w')^2           / number of face cells
    loss       = objectness + box_weight * box

Face cells are the ground-truth cells (obj = 1), whatever the prediction says. Both terms are
means over the cells they cover in the whole batch, so the loss does not grow with batch size
and an image with many faces weighs in proportion to its faces. Sizes enter as square roots
(as in YOLO) so that an error of a few pixels costs more on a small face than on a large one.
"""

from __future__ import annotations

import keras
from keras import ops

from reader.core import targets

IGNORE_CHANNEL = len(targets.CHANNELS)
_EPSILON = 1e-7  # keeps log() finite for predictions of exactly 0 or 1


def with_ignore(grid, ignore):
    """Targets [..., S, S, 5] and ignore mask [..., S, S] to the [..., S, S, 6] y_true above."""
    return ops.concatenate([grid, ops.expand_dims(ops.cast(ignore, grid.dtype), -1)], axis=-1)


def loss_terms(y_true, y_pred) -> dict:
    """The two terms of the loss as scalars: {"objectness": ..., "box": ...}."""
    y_true = ops.convert_to_tensor(y_true, "float32")
    y_pred = ops.convert_to_tensor(y_pred, "float32")
    obj = y_true[..., targets.OBJ]
    counted = 1.0 - y_true[..., IGNORE_CHANNEL] if y_true.shape[-1] > IGNORE_CHANNEL else ops.ones_like(obj)
    p = ops.clip(y_pred[..., targets.OBJ], _EPSILON, 1.0 - _EPSILON)
    bce = -(obj * ops.log(p) + (1.0 - obj) * ops.log(1.0 - p))
    objectness = ops.sum(bce * counted) / ops.maximum(ops.sum(counted), 1.0)

    def sqrt(v):
        # The clip keeps the gradient of sqrt finite at 0 (a prediction can reach it, a target not).
        return ops.sqrt(ops.clip(v, _EPSILON, 1.0))

    errors = (
        ops.square(y_true[..., targets.Y] - y_pred[..., targets.Y])
        + ops.square(y_true[..., targets.X] - y_pred[..., targets.X])
        + ops.square(sqrt(y_true[..., targets.H]) - sqrt(y_pred[..., targets.H]))
        + ops.square(sqrt(y_true[..., targets.W]) - sqrt(y_pred[..., targets.W]))
    )
    box = ops.sum(errors * obj) / ops.maximum(ops.sum(obj), 1.0)
    return {"objectness": objectness, "box": box}


@keras.saving.register_keras_serializable(package="facegrid")
class GridLoss(keras.losses.Loss):
    """The loss of the module docstring as a Keras loss; returns one scalar per batch.

    box_weight: weight of the box term against objectness (YOLO's lambda_coord is 5).
    """

    def __init__(self, box_weight: float = 5.0, name: str = "grid_loss", **kwargs):
        # The batch mean is taken inside call(), over cells rather than images.
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)
        self.box_weight = float(box_weight)

    def call(self, y_true, y_pred):
        terms = loss_terms(y_true, y_pred)
        return terms["objectness"] + self.box_weight * terms["box"]

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight}
