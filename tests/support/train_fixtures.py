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
from tests.support.build_helpers import run_build


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


