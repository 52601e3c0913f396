"""Decoding, NMS, WIDER-protocol matching and AP, COCO's AP (pycocotools) of `train.metrics`, and
`train.validation.evaluate_split`, on hand-made boxes with known answers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader.core import boxes as box_formats
from reader.core import targets
from tests.support.fakes import GuessingModel
from train import detect, metrics, wider


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
    ev = metrics.Evaluator()
    ev.add(faces, np.linspace(1, 0.5, len(faces)), faces, np.zeros(len(faces)))
    expected = 1.0 if len(faces) else 0.0
    # Two faces that (nearly) coincide would let a detection take the other one, or both the
    # same; the generated ones rarely do.
    overlaps = box_formats.iou_rel_xyxy(faces, faces)
    coincide = bool((overlaps[~np.eye(len(faces), dtype=bool)] > 0.999).any())
    assert ev.result()["ap"] == pytest.approx(expected) or coincide


GT = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8], [0.4, 0.0, 0.5, 0.1]])
INVALID = np.array([0, 0, 1])


def test_match_follows_the_wider_rules():
    dets = np.array(
        [
            [0.1, 0.1, 0.3, 0.3],  # face 0
            [0.11, 0.1, 0.31, 0.3],  # face 0 again: duplicate
            [0.4, 0.0, 0.5, 0.1],  # the invalid face: discarded
            [0.0, 0.8, 0.1, 0.9],  # nothing
            [0.62, 0.6, 0.82, 0.8],  # face 1
        ]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = metrics.match(dets, scores, GT, INVALID)
    assert labels.tolist() == [1, 0, -1, 0, 1]


def test_average_precision_of_a_known_ranking():
    # TP, FP, TP over 2 positives: precision 1 at recall 0.5, 2/3 at recall 1 -> AP 0.5 + 1/3.
    assert metrics.average_precision([0.9, 0.8, 0.7], [1, 0, 1], 2) == pytest.approx(0.5 + 1 / 3)
    # A discarded detection changes nothing, wherever it ranks.
    assert metrics.average_precision([0.9, 0.85, 0.8, 0.7], [1, -1, 0, 1], 2) == pytest.approx(0.5 + 1 / 3)
    # Precision is made monotone: FP, TP, TP -> precision 2/3 for both recall steps.
    assert metrics.average_precision([0.9, 0.8, 0.7], [0, 1, 1], 2) == pytest.approx(2 / 3)
    assert metrics.average_precision([0.9], [1], 4) == pytest.approx(0.25)
    assert metrics.average_precision([], [], 3) == 0.0


def test_evaluator_over_images_neither_rewards_nor_punishes_invalid_faces():
    ev = metrics.Evaluator()
    ev.add(GT[[0, 2]], [0.9, 0.95], GT, INVALID)  # face 0 found; the invalid face found first
    ev.add(np.array([[0.5, 0.5, 0.6, 0.6]]), [0.8], GT[:1], [0])  # second image: a miss and an FP
    ev.add(np.zeros((0, 4)), [], np.zeros((0, 4)), [])  # an image with no face
    result = ev.result()
    assert result["positives"] == 3 and result["true_positives"] == 1 and result["discarded"] == 1
    assert result["ap"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["images"] == 3


def test_recall_ceiling_counts_faces_that_own_a_cell():
    assert metrics.recall_ceiling({"targets": 9, "dropped": 3}) == 0.75
    assert metrics.recall_ceiling({"targets": 0, "dropped": 0}) == 1.0


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_detections_are_written_in_source_pixels(tmp_path, mode):
    placement = box_formats.Placement.fit(1024, 683, 224, mode)
    xyxy = np.array([[100.0, 50.0, 300.0, 350.0], [0.0, 0.0, 1024.0, 683.0]])
    path = wider.write_detections(str(tmp_path), "e/a.jpg", placement.to_rel_xyxy(xyxy), np.float32([0.5, 0.25]), placement)
    with open(path) as f:
        name, count, *rows = f.read().splitlines()
    assert (name, count) == ("a", "2")
    np.testing.assert_allclose(
        [[float(v) for v in row.split()] for row in rows], [[100, 50, 200, 300, 0.5], [0, 0, 1024, 683, 0.25]], atol=1e-3
    )


def test_predictions_are_written_in_the_wider_layout(tmp_path):
    path = wider.write_predictions(str(tmp_path), "0--Parade/0_Parade_x_1.jpg", [[1, 2, 30.25, 40]], [0.875])
    assert path == str(tmp_path / "0--Parade" / "0_Parade_x_1.txt")
    assert (tmp_path / "0--Parade" / "0_Parade_x_1.txt").read_text() == "0_Parade_x_1\n1\n1 2 30.25 40 0.875\n"
    with pytest.raises(ValueError, match="stay inside"):
        wider.prediction_path(str(tmp_path), "../escape.jpg")


# -- COCO's AP through pycocotools, invalid faces as crowd ----------------------------------------


def px(*boxes):
    """rel_xyxy boxes from corners in pixels of the 224-px stored image."""
    return np.array(boxes, np.float64).reshape(-1, 4) / 224


def coco(*images):
    """COCO metrics of images given as (det_boxes, det_scores, gt_boxes, gt_invalid)."""
    ev = metrics.Evaluator()
    for image in images:
        ev.add(*image)
    return ev.coco_result()


FACES = px([10, 10, 18, 18], [40, 40, 60, 60], [100, 100, 160, 160])  # 8, 20 and 60 px: small, medium, large


def test_coco_perfect_predictions_score_1_at_every_iou_and_size():
    result = coco((FACES, [0.9, 0.8, 0.7], FACES, [0, 0, 0]), (FACES[:1], [0.6], FACES[:1], [0]))
    assert result["ap50"] == pytest.approx(1.0) and result["ap50_95"] == pytest.approx(1.0)
    assert result["ap50_by_size"] == pytest.approx({"small": 1.0, "medium": 1.0, "large": 1.0})
    assert result["faces_by_size"] == {"small": 2, "medium": 1, "large": 1}
    assert result["positives"] == 4 and result["detections"] == 4 and result["images"] == 2


def test_coco_crowd_faces_are_neither_rewarded_nor_punished():
    crowd = px([180, 10, 200, 30])
    gt, invalid = np.concatenate([FACES, crowd]), [0, 0, 0, 1]
    # The crowd face unmatched: not a missed face.
    assert coco((FACES, [0.9, 0.8, 0.7], gt, invalid))["ap50"] == pytest.approx(1.0)
    # A detection of the crowd face alone, ranked first: not a false positive ...
    dets = np.concatenate([crowd, FACES])
    assert coco((dets, [0.95, 0.9, 0.8, 0.7], gt, invalid))["ap50"] == pytest.approx(1.0)
    # ... as it is where the face is valid: then it is found, and a miss where there is no face.
    assert coco((dets, [0.95, 0.9, 0.8, 0.7], gt, [0, 0, 0, 0]))["ap50"] == pytest.approx(1.0)
    empty = px([180, 180, 200, 200])
    result = coco((np.concatenate([empty, FACES]), [0.95, 0.9, 0.8, 0.7], gt, invalid))
    # FP, TP, TP, TP over 3 faces: precision 3/4 at every recall once made monotone.
    assert result["ap50"] == pytest.approx(0.75)


def test_coco_crowd_regions_take_the_detections_inside_them():
    # COCO's crowd rule, unlike WIDER's: a crowd face matches at intersection / detection area,
    # so a detection inside a large invalid box is ignored although its IoU is 0.25.
    crowd = px([0, 0, 100, 100])
    inside = px([10, 10, 60, 60])
    face = px([150, 150, 200, 200])
    gt, invalid = np.concatenate([crowd, face]), [1, 0]
    assert coco((np.concatenate([inside, face]), [0.9, 0.8], gt, invalid))["ap50"] == pytest.approx(1.0)
    wider_protocol = metrics.Evaluator()
    wider_protocol.add(np.concatenate([inside, face]), [0.9, 0.8], gt, invalid)
    assert wider_protocol.result()["ap"] == pytest.approx(0.5)  # there a false positive ranked first


def test_coco_interpolates_at_101_recall_points():
    # TP, FP, TP over 2 faces: precision 1 up to recall 0.5 (51 of COCO's 101 recall points),
    # 2/3 beyond (50 points); WIDER's all-point AP of the same ranking is 0.5 + 1/3.
    gt = px([10, 10, 40, 40], [100, 100, 130, 130])
    dets = np.concatenate([gt[:1], px([160, 160, 190, 190]), gt[1:]])
    result = coco((dets, [0.9, 0.8, 0.7], gt, [0, 0]))
    assert result["ap50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # A face never found: precision 1 up to recall 2/3 (67 points), nothing beyond.
    three = np.concatenate([gt, px([60, 160, 90, 190])])
    assert coco((gt, [0.9, 0.8], three, [0, 0, 0]))["ap50"] == pytest.approx(67 / 101)


def test_coco_ap50_95_averages_over_iou_thresholds():
    face = px([20, 20, 120, 120])
    shifted = face + np.array([16, 0, 16, 0]) / 224  # IoU 84 / 116 = 0.724: matched at 0.50 ... 0.70
    result = coco((shifted, [0.9], face, [0]))
    assert result["ap50"] == pytest.approx(1.0)
    assert result["ap50_95"] == pytest.approx(0.5)  # 5 of the 10 thresholds


def test_coco_ap50_by_face_size():
    # Two faces of each size. Large: both found. Medium: one found, ranked below a false
    # positive of medium size. Small: none found.
    small, medium, large = (
        px([10, 10, 18, 18], [30, 10, 38, 18]),
        px([60, 60, 80, 80], [90, 60, 110, 80]),
        px([20, 120, 80, 180], [120, 120, 180, 180]),
    )
    gt = np.concatenate([small, medium, large])
    false_medium = px([190, 10, 210, 30])
    dets = np.concatenate([large, false_medium, medium[:1]])
    result = coco((dets, [0.9, 0.8, 0.95, 0.7], gt, np.zeros(6)))
    assert result["faces_by_size"] == {"small": 2, "medium": 2, "large": 2}
    by_size = result["ap50_by_size"]
    assert by_size["large"] == pytest.approx(1.0)
    assert by_size["medium"] == pytest.approx(51 * 0.5 / 101)  # FP then TP: precision 1/2 up to recall 1/2
    assert by_size["small"] == 0.0
    # A size without a valid face has no AP (COCO's -1), not 0.
    no_large = coco((dets[2:], [0.95, 0.7], gt[:4], np.zeros(4)))
    assert no_large["ap50_by_size"]["large"] is None and no_large["faces_by_size"]["large"] == 0
    # The buckets are sqrt(area) in stored pixels, cut at 12 and 32 (one grid cell of 224 / 7).
    assert result["size_px"] == {"small": [0.0, 12.0], "medium": [12.0, 32.0], "large": [32.0, None]}


def test_coco_without_detections_or_faces():
    result = coco((np.zeros((0, 4)), [], FACES, [0, 0, 0]))
    assert result["ap50"] == 0.0 and result["ap50_95"] == 0.0
    assert result["ap50_by_size"] == {"small": 0.0, "medium": 0.0, "large": 0.0}
    nothing = coco((FACES, [0.9, 0.8, 0.7], np.zeros((0, 4)), []))
    assert nothing["ap50"] is None and nothing["positives"] == 0
    assert coco()["ap50"] is None


def test_evaluate_split_reports_coco_metrics_of_its_detections(tiny_build):
    import reader
    from train import validation

    settings = validation.DetectSettings(score_threshold=0.01)
    result = validation.evaluate_split(GuessingModel(), tiny_build, "val", 4, settings)
    # The same detections scored directly, against the stored faces with the invalid ones as crowd.
    images = []
    for _, _, meta in reader.make_dataset(tiny_build, "val", 4, training=False, with_boxes=True):
        for boxes, invalid in zip(meta["boxes"].numpy(), meta["invalid"].numpy()):
            grid = GuessingModel().predict_on_batch(np.zeros(1))[0]
            images.append(metrics.ImageResult.of(*detect.detect(grid, 0.01, settings.iou_threshold), boxes, invalid))
    assert result["coco"] == metrics.coco_average_precision(images, 224)
    assert result["coco"]["positives"] == result["positives"] and result["coco"]["images"] == result["images"] == 8
    assert 0.0 <= result["coco"]["ap50_95"] <= result["coco"]["ap50"] <= 1.0
    assert "coco" not in validation.evaluate_split(GuessingModel(), tiny_build, "val", 4, settings, coco=False)
