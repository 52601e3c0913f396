import numpy as np
import pytest

from reader.core import boxes
from reader.core.boxes import Placement


def test_stretch_fills_the_canvas():
    p = Placement.fit(1024, 768, 224, "stretch")
    assert (p.scaled_width, p.scaled_height, p.left, p.top) == (224, 224, 0, 0)
    np.testing.assert_allclose(p.to_rel_xyxy([[0, 0, 1024, 768], [512, 384, 768, 576]]), [[0, 0, 1, 1], [0.5, 0.5, 0.75, 0.75]])


def test_letterbox_keeps_aspect_and_centres():
    p = Placement.fit(1024, 512, 224, "letterbox")
    assert (p.scaled_width, p.scaled_height, p.left, p.top) == (224, 112, 0, 56)
    # The whole image maps to the middle band of the canvas.
    np.testing.assert_allclose(p.to_rel_xyxy([[0, 0, 1024, 512]]), [[0, 0.25, 1, 0.75]])
    tall = Placement.fit(300, 1200, 224, "letterbox")
    assert (tall.scaled_width, tall.scaled_height, tall.left, tall.top) == (56, 224, 84, 0)


def test_unknown_resize_mode_is_named():
    with pytest.raises(ValueError, match="resize mode must be one of .*got 'crop'"):
        Placement.fit(10, 10, 224, "crop")


def test_clipping_and_degenerate_boxes():
    xyxy = boxes.xywh_to_clipped_xyxy(
        [[1000, 700, 50, 100], [-10, -5, 20, 10], [10, 10, 0, 5], [10, 10, -4, 5], [1030, 5, 5, 5]], 1024, 768
    )
    np.testing.assert_array_equal(xyxy[0], [1000, 700, 1024, 768])  # past the right and bottom edges
    np.testing.assert_array_equal(xyxy[1], [0, 0, 10, 5])  # past the top-left corner
    np.testing.assert_array_equal(boxes.is_degenerate(xyxy), [False, False, True, True, True])


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_canvas_boxes_go_back_to_source_pixels(mode):
    p = Placement.fit(1024, 683, 224, mode)
    xyxy = np.array([[100.0, 50.0, 300.0, 350.0], [0.0, 0.0, 1024.0, 683.0], [1000, 600, 1024, 683]])
    back = p.to_source_xyxy(p.to_rel_xyxy(xyxy))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, xyxy, atol=1e-3)  # the stored float32 is all that is lost
    np.testing.assert_allclose(boxes.xyxy_to_xywh(back), [[100, 50, 200, 300], [0, 0, 1024, 683], [1000, 600, 24, 83]], atol=1e-3)


def test_canvas_boxes_are_clipped_to_the_source_image():
    p = Placement.fit(1024, 512, 224, "letterbox")  # the image fills the band 0.25 <= y <= 0.75
    np.testing.assert_allclose(p.to_source_xyxy([[-0.1, 0.0, 0.5, 1.0]]), [[0, 0, 512, 512]])


def test_flip_is_an_involution_and_keeps_corners_ordered():
    rel = np.array([[0.1, 0.2, 0.4, 0.5]], np.float32)
    np.testing.assert_allclose(boxes.flip_rel_xyxy(rel), [[0.6, 0.2, 0.9, 0.5]], atol=1e-7)
    np.testing.assert_allclose(boxes.flip_rel_xyxy(boxes.flip_rel_xyxy(rel)), rel, atol=1e-7)


def test_iou():
    a = np.array([[0, 0, 0.5, 0.5]])
    b = np.array([[0, 0, 0.5, 0.5], [0.25, 0, 0.75, 0.5], [0.6, 0.6, 1, 1]])
    np.testing.assert_allclose(boxes.iou_rel_xyxy(a, b), [[1, 1 / 3, 0]])


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_source_areas_recover_whole_pixels(mode):
    p = Placement.fit(1024, 683, 224, mode)
    xyxy = np.array([[0, 0, 3, 2], [1000, 600, 1024, 683], [17, 99, 517, 101]])
    np.testing.assert_array_equal(p.source_areas(p.to_rel_xyxy(xyxy)), [6, 24 * 83, 1000])
