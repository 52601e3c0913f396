"""Decoding, NMS, WIDER-protocol matching and AP on hand-made boxes with known answers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader import boxes as box_formats
from reader import targets
from train import detect, evaluate, wider


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 0.4, 0.4], [0.02, 0.02, 0.42, 0.42], [0.5, 0.5, 0.9, 0.9], [0.02, 0.02, 0.22, 0.42]])
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    # 1 beats 0 (IoU 0.82); 3 overlaps 1 by IoU 0.5: suppressed at 0.4, kept at 0.6.
    assert detect.nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert detect.nms(boxes, scores, 0.6).tolist() == [1, 2, 3]
    assert detect.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_detect_decodes_centres_thresholds_clips_and_suppresses():
    grid = np.zeros((7, 7, 5), np.float32)
    grid[3, 3] = (0.2, 0.1, 0.5, 0.5, 0.9)  # centre (3.5 / 7, 3.5 / 7)
    grid[3, 4] = (0.2, 0.3, 0.5, 0.0, 0.6)  # the same face seen from the next cell (IoU 1/3): suppressed
    grid[0, 6] = (0.2, 0.2, 0.25, 0.75, 0.8)  # reaches past the top and right edges: clipped
    grid[6, 0] = (0.1, 0.1, 0.5, 0.5, 0.3)  # under the threshold
    boxes, scores = detect.detect(grid, score_threshold=0.5, iou_threshold=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(boxes[0], [0.5 - 0.05, 0.5 - 0.1, 0.5 + 0.05, 0.5 + 0.1], atol=1e-6)
    np.testing.assert_allclose(boxes[1], [6.75 / 7 - 0.1, 0.0, 1.0, 0.25 / 7 + 0.1], atol=1e-6)
    assert len(detect.detect(grid, 0.5, 0.3, max_detections=1)[0]) == 1


def test_detect_gives_back_encoded_targets():
    faces = np.array([[0.1, 0.1, 0.3, 0.35], [0.6, 0.5, 0.9, 0.95]], np.float32)
    grid = targets.encode(faces, np.ones(2, bool), 7).grid
    boxes, scores = detect.detect(grid, 0.5, 0.4)
    np.testing.assert_allclose(boxes, faces, atol=1e-6)
    np.testing.assert_allclose(scores, [1, 1])


def _boxes(draw_count):
    corners = st.tuples(*[st.floats(0, 1, allow_nan=False)] * 4).map(
        lambda v: (min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]) + 0.01, max(v[1], v[3]) + 0.01)
    )
    return st.lists(corners, min_size=0, max_size=draw_count).map(lambda b: np.array(b, np.float64).reshape(-1, 4))


@settings(max_examples=50, deadline=None)
@given(_boxes(12), st.floats(0.1, 0.9))
def test_nms_leaves_no_pair_above_the_threshold(boxes, threshold):
    scores = np.linspace(1, 0.1, len(boxes))
    keep = detect.nms(boxes, scores, threshold)
    overlaps = box_formats.iou_rel_xyxy(boxes[keep], boxes[keep])
    assert (overlaps[~np.eye(len(keep), dtype=bool)] <= threshold).all()
    dropped = np.setdiff1d(np.arange(len(boxes)), keep)
    if len(dropped) and len(keep):  # every dropped box overlaps some kept box too much
        assert (box_formats.iou_rel_xyxy(boxes[dropped], boxes[keep]).max(axis=1) > threshold).all()


@settings(max_examples=50, deadline=None)
@given(_boxes(8))
def test_finding_every_face_exactly_scores_ap_1(faces):
    ev = evaluate.Evaluator()
    ev.add(faces, np.linspace(1, 0.5, len(faces)), faces, np.zeros(len(faces)))
    expected = 1.0 if len(faces) else 0.0
    # Identical faces would make one detection a duplicate; the generated ones rarely coincide.
    assert ev.result()["ap"] == pytest.approx(expected) or len(np.unique(faces, axis=0)) < len(faces)


GT = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8], [0.4, 0.0, 0.5, 0.1]])
INVALID = np.array([0, 0, 1])


def test_match_follows_the_wider_rules():
    dets = np.array([
        [0.1, 0.1, 0.3, 0.3],  # face 0
        [0.11, 0.1, 0.31, 0.3],  # face 0 again: duplicate
        [0.4, 0.0, 0.5, 0.1],  # the invalid face: discarded
        [0.0, 0.8, 0.1, 0.9],  # nothing
        [0.62, 0.6, 0.82, 0.8],  # face 1
    ])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = evaluate.match(dets, scores, GT, INVALID)
    assert labels.tolist() == [1, 0, -1, 0, 1]


def test_average_precision_of_a_known_ranking():
    # TP, FP, TP over 2 positives: precision 1 at recall 0.5, 2/3 at recall 1 -> AP 0.5 + 1/3.
    assert evaluate.average_precision([0.9, 0.8, 0.7], [1, 0, 1], 2) == pytest.approx(0.5 + 1 / 3)
    # A discarded detection changes nothing, wherever it ranks.
    assert evaluate.average_precision([0.9, 0.85, 0.8, 0.7], [1, -1, 0, 1], 2) == pytest.approx(0.5 + 1 / 3)
    # Precision is made monotone: FP, TP, TP -> precision 2/3 for both recall steps.
    assert evaluate.average_precision([0.9, 0.8, 0.7], [0, 1, 1], 2) == pytest.approx(2 / 3)
    assert evaluate.average_precision([0.9], [1], 4) == pytest.approx(0.25)
    assert evaluate.average_precision([], [], 3) == 0.0


def test_evaluator_over_images_neither_rewards_nor_punishes_invalid_faces():
    ev = evaluate.Evaluator()
    ev.add(GT[[0, 2]], [0.9, 0.95], GT, INVALID)  # face 0 found; the invalid face found first
    ev.add(np.array([[0.5, 0.5, 0.6, 0.6]]), [0.8], GT[:1], [0])  # second image: a miss and an FP
    ev.add(np.zeros((0, 4)), [], np.zeros((0, 4)), [])  # an image with no face
    result = ev.result()
    assert result["positives"] == 3 and result["true_positives"] == 1 and result["discarded"] == 1
    assert result["ap"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["images"] == 3


def test_recall_ceiling_counts_faces_that_own_a_cell():
    assert evaluate.recall_ceiling({"targets": 9, "dropped": 3}) == 0.75
    assert evaluate.recall_ceiling({"targets": 0, "dropped": 0}) == 1.0


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_canvas_boxes_go_back_to_source_pixels(mode):
    placement = box_formats.Placement.fit(1024, 683, 224, mode)
    xyxy = np.array([[100.0, 50.0, 300.0, 350.0], [0.0, 0.0, 1024.0, 683.0]])
    xywh = wider.canvas_to_source(placement.to_rel_xyxy(xyxy), placement)
    np.testing.assert_allclose(xywh, [[100, 50, 200, 300], [0, 0, 1024, 683]], atol=1e-3)


def test_predictions_are_written_in_the_wider_layout(tmp_path):
    path = wider.write_predictions(str(tmp_path), "0--Parade/0_Parade_x_1.jpg", [[1, 2, 30.25, 40]], [0.875])
    assert path == str(tmp_path / "0--Parade" / "0_Parade_x_1.txt")
    assert open(path).read() == "0_Parade_x_1\n1\n1.0 2.0 30.2 40.0 0.8750\n"
    with pytest.raises(ValueError, match="stay inside"):
        wider.prediction_path(str(tmp_path), "../escape.jpg")
