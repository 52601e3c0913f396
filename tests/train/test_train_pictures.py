"""train.pictures: every box shows on any background, the legend says what each colour is, and
the suggested threshold draws about as many boxes as there are faces, not one per cell."""

from __future__ import annotations

import numpy as np

from train import pictures


def _colours_on_line(picture, y: int, x0: int, x1: int) -> set[tuple]:
    return {picture.getpixel((x, y)) for x in range(x0, x1)}


def test_an_invalid_face_shows_on_grey_light_and_dark_backgrounds():
    for level in (-1.0, 0.0, 0.2, 1.0):  # black, mid grey (the old grey outline vanished there), light grey, white
        image = np.full((224, 224, 3), level, np.float32)
        box = np.array([[0.25, 0.25, 0.75, 0.75]])
        picture = pictures.draw(image, box, np.array([1]), np.zeros((0, 4)), np.zeros(0), 7, scale=2)
        assert picture.size == (448, 448 + pictures.LEGEND_HEIGHT)
        top = _colours_on_line(picture, 112, 112, 336)  # the box's top edge, where its outline runs
        assert pictures.INVALID_FACE in top and pictures.HALO in _colours_on_line(picture, 111, 112, 336) | _colours_on_line(
            picture, 110, 112, 336
        )


def test_the_legend_names_each_colour():
    picture = pictures.draw(
        np.zeros((224, 224, 3), np.float32), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0), 7, threshold=0.5
    )
    strip = picture.crop((0, 448, 448, 448 + pictures.LEGEND_HEIGHT))
    colours = set(strip.getdata())
    assert {pictures.FACE, pictures.INVALID_FACE, pictures.DETECTION} <= colours
    # The threshold's text ends inside the picture, a young model's seven digits too (it was cut off).
    picture = pictures.draw(np.zeros((224, 224, 3), np.float32), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0), 7,
                            threshold=0.0503984)  # fmt: skip
    strip = np.asarray(picture.crop((0, 448, 448, 448 + pictures.LEGEND_HEIGHT)))
    drawn = np.nonzero((strip != strip[0, 0]).any(axis=(0, 2)))[0]
    assert drawn.max() < 448 - 4


def test_the_suggested_threshold_draws_about_as_many_boxes_as_faces():
    rng = np.random.default_rng(0)
    for case in range(300):
        cells = rng.integers(49, 49 * 16)
        centre, spread = rng.uniform(0.001, 0.9), 10.0 ** rng.integers(-6, 0)
        scores = np.clip(rng.normal(centre, spread, cells), 1e-9, 1)
        faces = int(rng.integers(1, cells))
        threshold = pictures.suggested_threshold(scores, faces)
        drawn = np.count_nonzero(scores >= threshold)
        assert faces <= drawn <= max(2 * faces, np.count_nonzero(scores >= np.sort(scores)[::-1][faces - 1])), case
    # A young model: every cell within 1e-4 of the others. Two digits would draw all 392 cells.
    young = 0.0503 + np.linspace(0, 1e-4, 392)
    assert np.count_nonzero(young >= pictures.suggested_threshold(young, 48)) <= 96
    assert pictures.suggested_threshold(np.zeros(49), 3) == 0.0
