"""A tiny train + val build for the training tests: small JPEGs with easy "faces", real Beam job.

Each image is `pipeline.synthetic.noise` with 1-3 of `synthetic.paint_faces`' cartoon faces
at random places, sizes 1/8 to 1/3 of the image, so a small network sees something learnable
within a few steps. One face in each val image is flagged invalid every third image, and one
image per split has no face at all.

The `tiny_build` fixture (tests/conftest.py) is `make_build()`: session-scoped, one per test process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from pipeline import synthetic
from tests.build_helpers import run_build


def _faces(rng: np.random.Generator, width: int, height: int, count: int) -> list[list[int]]:
    """`count` face lines (x y w h blur expression illumination invalid occlusion pose), px."""
    lines = []
    for _ in range(count):
        w = int(rng.integers(width // 8, width // 3))
        h = int(w * rng.uniform(1.1, 1.3))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        lines.append([x, y, w, h, 0, 0, 0, 0, 0, 0])
    return lines


def _pictures(split: str, num_images: int, rng: np.random.Generator) -> Iterator[synthetic.Picture]:
    for i in range(num_images):
        width, height = int(rng.choice([160, 192, 224])), int(rng.choice([128, 160, 192]))
        count = 0 if i == 0 else int(rng.integers(1, 4))
        image = synthetic.noise(width, height, rng)  # one rng stream: size, count, noise, then the faces
        faces = _faces(rng, width, height, count)
        if split == "val" and faces and i % 3 == 0:
            faces[0][7] = 1  # invalid: stored, ignored by the targets, not scored
        yield synthetic.Picture(f"{i % 2}--Event{i % 2}/{split}_{i}.jpg", faces, synthetic.jpeg(synthetic.paint_faces(image, faces)))


def write_source(root: str, split: str, num_images: int, seed: int) -> tuple[str, str]:
    """Writes images and a WIDER annotation file for one split; returns (annotations, images_dir)."""
    return synthetic.write_split(root, split, _pictures(split, num_images, np.random.default_rng(seed)))


def make_build(root: str, num_train: int = 24, num_val: int = 8, seed: int = 0) -> str:
    """Builds train and val shards under root/shards with the real Beam job, in memory."""
    data_dir = os.path.join(root, "shards")
    for split, count, shards in (("train", num_train, 2), ("val", num_val, 1)):
        annotations, images_dir = write_source(os.path.join(root, "source"), split, count, seed + (split == "val"))
        run_build(annotations, images_dir, data_dir, split, f"--num_shards={shards}")
    return data_dir



# -- builds of real WIDER val images (names and boxes of the real file, rendered pixels) ------------

WIDER_VAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "wider_face_split", "wider_face_val_bbx_gt.txt")


def wider_val_images(count: int, min_face: int = 0, max_faces: int = 1000, skip: int = 0) -> list:
    """The first `count` entries (after `skip` matches) of the real WIDER val file whose boxes lie
    inside the 1,024 px width (pipeline.sample renders every image that wide and tall enough
    for its boxes, so none is clipped), with 1..max_faces faces, every one at least min_face px
    wide. Returns pipeline.annotations.ImageAnnotation entries."""
    from pipeline import annotations

    chosen = []
    with open(WIDER_VAL, "rb") as lines:
        for entry in annotations.parse(lines, WIDER_VAL, "boxes"):
            faces = entry.faces
            if 1 <= len(faces) <= max_faces and (faces[:, 0] + faces[:, 2] <= 1024).all() and (faces[:, 2] >= min_face).all():
                if skip:
                    skip -= 1
                    continue
                chosen.append(entry)
                if len(chosen) == count:
                    break
    return chosen


def make_wider_build(root: str, entries: list, splits=("train", "val"), *flags: str) -> str:
    """Renders the images of `entries` (pipeline.sample) and builds them, as they are, into each
    of `splits` under root/shards (the real Beam job); returns that data_dir."""
    from pipeline.sample import render_images

    annotations_path = os.path.join(root, "wider_subset_bbx_gt.txt")
    os.makedirs(root, exist_ok=True)
    synthetic.write_annotations(annotations_path, [(e.filename, e.faces) for e in entries], "val")
    images_dir = os.path.join(root, "images")
    render_images(annotations_path, images_dir, processes=1)
    data_dir = os.path.join(root, "shards")
    for split in splits:
        run_build(annotations_path, images_dir, data_dir, split, "--num_shards=1", *flags)
    return data_dir
