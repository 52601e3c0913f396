import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reader.core import boxes, targets
from reader.core.boxes import Placement


def _xyxy_from_xywh_px(xywh, width, height):
    x, y, w, h = xywh
    return [x / width, y / height, (x + w) / width, (y + h) / height]


def test_worked_example_from_design():
    # A 1024 x 768 image with one face at x=449 y=330 w=122 h=149 (WIDER's first train image).
    box = np.array([_xyxy_from_xywh_px((449, 330, 122, 149), 1024, 768)], np.float32)
    encoded = targets.encode(box, [True], 7)
    cx, cy = (449 + 61) / 1024, (330 + 74.5) / 768  # 0.498, 0.527
    row, col = 3, 3  # floor(0.527 * 7) = 3, floor(0.498 * 7) = 3
    np.testing.assert_allclose(
        encoded.grid[row, col], [149 / 768, 122 / 1024, cy * 7 - row, cx * 7 - col, 1], rtol=1e-6, atol=1e-6
    )
    assert encoded.grid[..., 4].sum() == 1 and encoded.dropped == 0 and encoded.ignore.sum() == 0
    assert encoded.owners[row, col] == 0 and encoded.targets == 1


def test_centre_not_top_left_corner_picks_the_cell():
    # The seed article put this face in the cell of its top-left corner (0, 0); its centre is in (1, 1).
    box = np.array([[0.1, 0.1, 0.3, 0.3]], np.float32)
    grid = targets.encode(box, [True], 7).grid
    assert grid[1, 1, 4] == 1 and grid[0, 0, 4] == 0


def test_centre_on_the_far_edge_stays_in_the_last_cell():
    box = np.array([[0.9, 0.9, 1.0, 1.0], [0.99, 0.0, 1.0, 0.02]], np.float32)
    row, col = targets.cells(np.array([[1.0, 1.0, 1.0, 1.0]]), 7)
    assert (row[0], col[0]) == (6, 6)
    grid = targets.encode(box, [True, True], 7).grid
    assert grid[6, 6, 4] == 1 and grid[0, 6, 4] == 1


def test_larger_face_wins_a_shared_cell_and_the_loser_is_dropped():
    small = [0.02, 0.02, 0.08, 0.08]
    large = [0.0, 0.0, 0.12, 0.12]
    encoded = targets.encode(np.array([small, large], np.float32), [True, True], 7)
    assert encoded.owners[0, 0] == 1 and encoded.dropped == 1
    np.testing.assert_allclose(encoded.grid[0, 0, :2], [0.12, 0.12], rtol=1e-6)


def test_tie_goes_to_the_face_listed_first():
    a = [0.01, 0.01, 0.05, 0.05]
    b = [0.05, 0.05, 0.09, 0.09]  # same area, same cell
    areas = [16, 16]
    assert targets.encode(np.array([a, b], np.float32), [True, True], 7, areas).owners[0, 0] == 0
    assert targets.encode(np.array([b, a], np.float32), [True, True], 7, areas).owners[0, 0] == 0


def test_equal_faces_tie_exactly_despite_float32_coordinates():
    # Two 10 x 10 px faces in one cell of a 1024 x 768 source: their float32 canvas areas differ
    # in the last bits, their source areas do not.
    placement = Placement.fit(1024, 768, 224, "stretch")
    xyxy = np.array([[0, 0, 10, 10], [3, 5, 13, 15]], np.float64)
    rel = placement.to_rel_xyxy(xyxy)
    canvas_areas = (rel[:, 2] - rel[:, 0]).astype(np.float64) * (rel[:, 3] - rel[:, 1])
    assert canvas_areas[0] != canvas_areas[1]
    np.testing.assert_array_equal(placement.source_areas(rel), [100, 100])
    for order in ([0, 1], [1, 0]):
        encoded = targets.encode_faces(rel[order], np.zeros(2), placement, 7, 0)
        assert encoded.owners[0, 0] == 0 and encoded.dropped == 1


def test_kept_out_faces_mark_ignore_unless_a_target_holds_the_cell():
    invalid_alone = [0.5, 0.5, 0.55, 0.55]  # cell (3, 3)
    invalid_shared = [0.0, 0.0, 0.05, 0.05]  # cell (0, 0)
    target = [0.0, 0.0, 0.1, 0.1]  # cell (0, 0)
    encoded = targets.encode(np.array([invalid_alone, invalid_shared, target], np.float32), [False, False, True], 7)
    assert encoded.ignore[3, 3] == 1 and encoded.ignore[0, 0] == 0 and encoded.ignore.sum() == 1
    assert encoded.grid[0, 0, 4] == 1 and encoded.grid[3, 3, 4] == 0
    assert encoded.dropped == 0  # kept-out faces are never dropped: they are ignored


def test_target_mask_invalid_and_small_faces():
    rel = np.array([[0, 0, 0.1, 0.1], [0, 0, 0.1, 0.1], [0, 0, 0.02, 0.5]], np.float32)
    # 0.02 * 224 = 4.48 px wide: under a min_face_px of 5
    np.testing.assert_array_equal(targets.target_mask(rel, [0, 1, 0], 5, 224), [True, False, False])
    np.testing.assert_array_equal(targets.target_mask(rel, [0, 1, 0], 0, 224), [True, False, True])


def test_empty_image_has_an_empty_grid():
    encoded = targets.encode(np.zeros((0, 4), np.float32), np.zeros(0, bool), 7)
    assert encoded.grid.shape == (7, 7, 5) and not encoded.grid.any() and encoded.dropped == 0


def test_encode_rejects_mismatched_flags():
    with pytest.raises(ValueError, match="is_target has 1 entries for 2 boxes"):
        targets.encode(np.zeros((2, 4)), [True], 7)


# Boxes in [0, 1] with positive size, as the build stores them.
_coord = st.floats(0, 1, allow_nan=False, width=32)
_box = st.tuples(_coord, _coord, _coord, _coord).filter(lambda b: b[0] < b[2] and b[1] < b[3])


def _normalize(raw):
    return np.array(raw, np.float32).reshape(-1, 4)


@settings(max_examples=200, deadline=None)
@given(st.lists(_box, min_size=0, max_size=30), st.integers(1, 9))
def test_decode_encode_gives_back_every_cell_owner(raw, grid_size):
    rel = _normalize(raw)
    encoded = targets.encode(rel, np.ones(len(rel), bool), grid_size)
    decoded, scores = targets.decode(encoded.grid)
    owners = encoded.owners[encoded.owners >= 0]  # row-major, as decode yields them
    np.testing.assert_allclose(decoded, rel[owners], atol=2e-6)
    assert np.all(scores == 1)
    assert encoded.targets + encoded.dropped == len(rel)


@settings(max_examples=200, deadline=None)
@given(st.lists(_box, min_size=1, max_size=1), st.integers(1, 9))
def test_a_lone_face_round_trips(raw, grid_size):
    rel = _normalize(raw)
    decoded, _ = targets.decode(targets.encode(rel, [True], grid_size).grid)
    np.testing.assert_allclose(decoded, rel, atol=2e-6)


def _off_cell_edges(rel, grid_size):
    centres = np.concatenate([(rel[:, 0] + rel[:, 2]) / 2, (rel[:, 1] + rel[:, 3]) / 2]) * grid_size
    return np.all(np.abs(centres - np.round(centres)) > 1e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(_box, min_size=0, max_size=12, unique=True), st.integers(1, 9))
def test_flipping_the_image_flips_the_grid(raw, grid_size):
    rel = _normalize(raw)
    assume(_off_cell_edges(rel, grid_size))  # a centre on a cell edge belongs to the cell on its right; the mirror's to its left
    is_target = np.arange(len(rel)) % 3 != 2
    original = targets.encode(rel, is_target, grid_size)
    flipped = targets.encode(boxes.flip_rel_xyxy(rel), is_target, grid_size)
    mirrored = original.grid[:, ::-1].copy()
    mirrored[..., targets.X] = np.where(mirrored[..., targets.OBJ] > 0, 1 - mirrored[..., targets.X], 0)
    if (np.diff(np.sort((rel[:, 2] - rel[:, 0]) * (rel[:, 3] - rel[:, 1]))) != 0).all():
        # Without area ties the same face wins each cell either way.
        np.testing.assert_allclose(flipped.grid, mirrored, atol=2e-6)
    np.testing.assert_array_equal(flipped.ignore, original.ignore[:, ::-1])
    assert flipped.dropped == original.dropped
