"""The sources of the tests' small builds: one writer, three recipes of generated pictures.

A recipe says what a split's images and faces are (`pipeline.sample.synthetic` draws them); `write_source`
writes `num_images` of them in WIDER's layout (root/images/..., root/wider_face_split/...), the
same bytes for the same seed. tests/support/builds.py builds them with the real Beam job.

    HARD_CASES     what the readers must get right: several faces per image, two faces sharing a
                   cell (the larger wins), invalid faces (ignored, not targets), a degenerate box,
                   images without faces, box centres exactly on a cell boundary, where a flipped
                   image puts the face in another column than the mirrored one. The images are
                   `synthetic.pattern`s, asymmetric, so a horizontal flip shows in the pixels.
    CHECKER_CASES  a fixed listing of what a checker must not mistake for damage: a crowded cell
                   (three faces centred in one cell: two are dropped), an invalid face alone in its
                   cell (ignore = 1), a zero-width box (not stored), an empty image (the val
                   placeholder), a face past the edges (clipped), a missing image (a line of the
                   errors file, so its builds allow errors). `synthetic.colour_field`s with a
                   cartoon face in every box.
    LEARNABLE      `synthetic.noise` with 1-3 of `synthetic.paint_faces`' cartoon faces (1/8 to 1/3
                   of the image) that a small network learns within a few steps; the first image of
                   each split has none, and in val every third image's first face is invalid.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np

from pipeline.sample import synthetic

GRID = 7


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a split's pictures are made: pictures(split, num_images, seed), and the flags its builds need."""

    name: str
    pictures: Callable[[str, int, int], Iterator[synthetic.Picture]]
    flags: tuple[str, ...] = ()


def write_source(root: str | os.PathLike, recipe: Recipe, split: str, num_images: int, seed: int = 0) -> tuple[str, str]:
    """Writes `num_images` of the recipe's pictures and a WIDER annotation file for `split` under
    root; returns (annotations, images_dir)."""
    return synthetic.write_split(root, split, recipe.pictures(split, num_images, seed))


# -- HARD_CASES -----------------------------------------------------------------------------------


def _hard_faces(i: int, width: int, height: int, rng: np.random.Generator) -> list[list[int]]:
    """The face lines (x y w h blur expression illumination invalid occlusion pose) of image i."""
    kind = i % 6
    if kind == 0:
        return []  # no face
    if kind == 1:
        # Two faces whose centres share a cell; the second is larger and wins.
        cw, ch = width / GRID, height / GRID
        return [
            [int(2 * cw + 2), int(3 * ch + 2), max(2, int(cw / 3)), max(2, int(ch / 3)), 0, 0, 0, 0, 0, 0],
            [int(2 * cw + 1), int(3 * ch + 1), max(3, int(cw * 0.8)), max(3, int(ch * 0.8)), 1, 0, 0, 0, 1, 0],
        ]
    if kind == 2:
        # Centre exactly on the boundary between columns 3 and 4 when mirrored (width multiple of 14),
        # an invalid face, and a degenerate one.
        return [
            [width // 2 - 10, height // 4, 20, 24, 0, 0, 0, 0, 0, 0],
            [width // 7, height // 2, 12, 12, 0, 0, 0, 1, 0, 0],
            [5, 5, 0, 7, 0, 0, 0, 0, 0, 0],
        ]
    faces = []
    for _ in range(int(rng.integers(1, 9))):
        w = int(rng.integers(4, max(5, width // 3)))
        h = int(rng.integers(4, max(5, height // 3)))
        x = int(rng.integers(-3, width - 2))
        y = int(rng.integers(-3, height - 2))
        invalid = int(rng.random() < 0.15)
        faces.append([x, y, w, h, int(rng.integers(0, 3)), 0, 0, invalid, int(rng.integers(0, 3)), 0])
    return faces


def _hard_pictures(split: str, num_images: int, seed: int) -> Iterator[synthetic.Picture]:
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        event = f"{i % 3}--Event{i % 3}"
        width = int(rng.choice([140, 168, 210, 280, 330]))
        height = int(rng.choice([112, 150, 196, 260]))
        image = synthetic.jpeg(synthetic.pattern(width, height, rng), quality=92)  # before the faces: one rng stream
        yield synthetic.Picture(f"{event}/{i % 3}_Event_img_{i}.jpg", _hard_faces(i, width, height, rng), image)


HARD_CASES = Recipe("hard cases", _hard_pictures)

# -- CHECKER_CASES --------------------------------------------------------------------------------

# (filename, width, height, faces as (x, y, w, h, invalid)); the image of _MISSING is not written.
_CHECKER_LISTING = (
    ("0--Parade/0_Parade_1.jpg", 210, 210, [(10, 10, 30, 30, 0), (92, 62, 20, 20, 0), (95, 65, 10, 12, 0), (100, 70, 8, 8, 0)]),
    ("0--Parade/0_Parade_2.jpg", 210, 210, [(20, 100, 40, 40, 0), (150, 150, 20, 20, 1)]),
    ("0--Parade/0_Parade_3.jpg", 240, 180, []),
    ("12--Group/12_Group_1.jpg", 300, 200, [(50, 50, 0, 20, 0), (100, 60, 30, 40, 0)]),
    ("12--Group/12_Group_2.jpg", 210, 210, [(180, 190, 60, 60, 0), (30, 30, 50, 60, 0)]),
    ("12--Group/12_Group_3.jpg", 180, 240, [(60, 40, 50, 60, 0)]),
    ("12--Group/12_Group_4.jpg", 320, 240, [(10, 150, 40, 50, 0), (200, 30, 60, 70, 0), (260, 180, 20, 20, 0)]),
    ("13--Interview/13_Interview_1.jpg", 200, 260, [(70, 60, 70, 90, 0)]),
    ("13--Interview/13_Interview_2.jpg", 260, 200, [(20, 20, 30, 30, 0), (120, 90, 24, 30, 1)]),
    ("13--Interview/13_Interview_3.jpg", 220, 220, [(100, 100, 40, 40, 0), (10, 180, 16, 20, 0)]),
    ("13--Interview/13_Interview_missing.jpg", 0, 0, [(10, 10, 20, 20, 0), (50, 50, 20, 20, 0)]),
)
_MISSING = "13--Interview/13_Interview_missing.jpg"
CHECKER_IMAGES = len(_CHECKER_LISTING)  # one of them missing: 10 records


def _checker_pictures(split: str, num_images: int, seed: int) -> Iterator[synthetic.Picture]:
    for i, (filename, width, height, faces) in enumerate(_CHECKER_LISTING[:num_images]):
        lines = [[x, y, w, h, 0, 0, 0, invalid, 0, 0] for x, y, w, h, invalid in faces]
        data = None
        if filename != _MISSING:
            image = synthetic.colour_field(width, height, np.random.default_rng(seed + i))
            data = synthetic.jpeg(synthetic.paint_faces(image, lines))
        yield synthetic.Picture(filename, lines, data)


CHECKER_CASES = Recipe("checker cases", _checker_pictures, flags=("--max_error_fraction=0.5",))

# -- LEARNABLE ------------------------------------------------------------------------------------


def _learnable_faces(rng: np.random.Generator, width: int, height: int, count: int) -> list[list[int]]:
    """`count` face lines (x y w h blur expression illumination invalid occlusion pose), px."""
    lines = []
    for _ in range(count):
        w = int(rng.integers(width // 8, width // 3))
        h = int(w * rng.uniform(1.1, 1.3))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        lines.append([x, y, w, h, 0, 0, 0, 0, 0, 0])
    return lines


def _learnable_pictures(split: str, num_images: int, seed: int) -> Iterator[synthetic.Picture]:
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        width, height = int(rng.choice([160, 192, 224])), int(rng.choice([128, 160, 192]))
        count = 0 if i == 0 else int(rng.integers(1, 4))
        image = synthetic.noise(width, height, rng)  # one rng stream: size, count, noise, then the faces
        faces = _learnable_faces(rng, width, height, count)
        if split == "val" and faces and i % 3 == 0:
            faces[0][7] = 1  # invalid: stored, ignored by the targets, not scored
        yield synthetic.Picture(
            f"{i % 2}--Event{i % 2}/{split}_{i}.jpg", faces, synthetic.jpeg(synthetic.paint_faces(image, faces))
        )


LEARNABLE = Recipe("learnable", _learnable_pictures)
