"""The detection loss on hand-made grids: what it charges and what it must not."""

import numpy as np
import pytest

from reader.core import targets
from train.loss import GridLoss, loss_terms, with_ignore

S = 7


def _targets(faces=((3, 3, (0.2, 0.1, 0.5, 0.5)),), ignored=()):
    """y_true [S, S, 6]: faces as (row, col, (h, w, y, x)), ignored cells as (row, col)."""
    grid, ignore = np.zeros((S, S, 5), np.float32), np.zeros((S, S), np.float32)
    for row, col, box in faces:
        grid[row, col] = (*box, 1.0)
    for row, col in ignored:
        ignore[row, col] = 1.0
    return np.asarray(with_ignore(grid, ignore))


def _batch(grid):
    """A single grid [S, S, C] as a batch of one; batches pass through."""
    grid = np.asarray(grid)
    return grid[None] if grid.ndim == 3 else grid


def _loss(y_true, y_pred, **kwargs):
    return float(GridLoss(**kwargs)(_batch(y_true), _batch(y_pred)))


def test_perfect_prediction_costs_nearly_nothing():
    y_true = _targets(faces=((3, 3, (0.2, 0.1, 0.5, 0.5)), (0, 6, (0.05, 0.04, 0.1, 0.9))))
    assert _loss(y_true, y_true[..., :5]) < 1e-5


def test_a_missed_face_costs_objectness_and_a_wrong_box_costs_box():
    y_true = _targets()
    missed = y_true[..., :5].copy()
    missed[3, 3, targets.OBJ] = 0.01
    terms = loss_terms(y_true[None], missed[None])
    assert float(terms["objectness"]) == pytest.approx(-np.log(0.01) / (S * S), rel=1e-4)
    assert float(terms["box"]) == pytest.approx(0.0, abs=1e-6)

    shifted = y_true[..., :5].copy()
    shifted[3, 3, targets.X] += 0.3
    shifted[3, 3, targets.H] = 0.8  # sqrt(0.8) - sqrt(0.2) = 0.4472
    terms = loss_terms(y_true[None], shifted[None])
    assert float(terms["box"]) == pytest.approx(0.09 + 0.2, rel=1e-3)


def test_box_terms_count_only_at_ground_truth_cells():
    y_true = _targets()
    y_pred = y_true[..., :5].copy()
    y_pred[0, 0, :4] = (0.9, 0.9, 0.9, 0.9)  # garbage box on an empty cell, obj still 0
    assert _loss(y_true, y_pred) < 1e-5


def test_an_ignored_cell_costs_nothing():
    y_true = _targets(ignored=((5, 1),))
    y_pred = y_true[..., :5].copy()
    clean = _loss(y_true, y_pred)
    y_pred[5, 1] = (0.7, 0.7, 0.3, 0.3, 1.0)  # confident detection of an invalid face
    assert _loss(y_true, y_pred) == pytest.approx(clean, abs=1e-6)
    without_ignore = y_true[..., :5]  # the same cell, not ignored, is charged
    assert _loss(without_ignore, y_pred) > 0.1


def test_the_loss_does_not_grow_with_batch_size():
    rng = np.random.default_rng(0)
    two_faces = _targets(faces=((1, 2, (0.3, 0.2, 0.1, 0.2)), (4, 4, (0.1, 0.1, 0.9, 0.9))), ignored=((6, 6),))
    y_true = np.stack([_targets(), two_faces])
    y_pred = rng.uniform(0.05, 0.95, (2, S, S, 5)).astype(np.float32)
    one = _loss(y_true, y_pred)
    for copies in (2, 8):
        assert _loss(np.tile(y_true, (copies, 1, 1, 1)), np.tile(y_pred, (copies, 1, 1, 1))) == pytest.approx(one, rel=1e-5)


def test_an_image_without_faces_has_a_finite_loss():
    y_true = _targets(faces=())
    y_pred = np.full((S, S, 5), 0.5, np.float32)
    assert _loss(y_true, y_pred) == pytest.approx(np.log(2), rel=1e-4)


def test_round_trips_its_config():
    loss = GridLoss.from_config(GridLoss(box_weight=2.5).get_config())
    assert loss.box_weight == 2.5
