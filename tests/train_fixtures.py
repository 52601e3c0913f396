"""A tiny train + val build for the training tests: small JPEGs with easy "faces", real Beam job.

Each image is grey noise with 1-3 skin-coloured ellipses (two dark eyes each) at random
places, sizes 1/8 to 1/3 of the image, so a small network sees something learnable within a
few steps. One face in each val image is flagged invalid every third image, and one image per
split has no face at all.

Import the fixture into a test module (`from train_fixtures import tiny_build`); pytest then
finds it there. The build is session-scoped: one per test process.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.annotations import format_boxes
from tests.build_helpers import run_build

SKIN = (224, 172, 140)


def _image(rng: np.random.Generator, width: int, height: int, faces: int) -> tuple[Image.Image, list[list[int]]]:
    """An RGB image and its face lines (x y w h blur expression illumination invalid occlusion pose)."""
    noise = rng.normal(90, 25, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    lines = []
    for _ in range(faces):
        w = int(rng.integers(width // 8, width // 3))
        h = int(w * rng.uniform(1.1, 1.3))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        draw.ellipse((x, y, x + w - 1, y + h - 1), fill=SKIN)
        eye = max(1, w // 8)
        for ex in (x + w // 3, x + 2 * w // 3):
            draw.ellipse((ex - eye, y + h // 3 - eye, ex + eye, y + h // 3 + eye), fill=(30, 20, 20))
        lines.append([x, y, w, h, 0, 0, 0, 0, 0, 0])
    return image, lines


def write_source(root: str, split: str, num_images: int, seed: int) -> tuple[str, str]:
    """Writes images and a WIDER annotation file for one split; returns (annotations, images_dir)."""
    rng = np.random.default_rng(seed)
    images_dir = os.path.join(root, "images")
    entries = []
    for i in range(num_images):
        event = f"{i % 2}--Event{i % 2}"
        filename = f"{event}/{split}_{i}.jpg"
        width, height = int(rng.choice([160, 192, 224])), int(rng.choice([128, 160, 192]))
        image, faces = _image(rng, width, height, 0 if i == 0 else int(rng.integers(1, 4)))
        if split == "val" and faces and i % 3 == 0:
            faces[0][7] = 1  # invalid: stored, ignored by the targets, not scored
        os.makedirs(os.path.join(images_dir, event), exist_ok=True)
        image.save(os.path.join(images_dir, filename), quality=90)
        entries.append((filename, faces))
    annotations = os.path.join(root, f"wider_face_{split}_bbx_gt.txt")
    with open(annotations, "w") as f:
        f.write(format_boxes(entries, split))
    return annotations, images_dir


def make_build(root: str, num_train: int = 24, num_val: int = 8, seed: int = 0) -> str:
    """Builds train and val shards under root/shards with the real Beam job, in memory."""
    data_dir = os.path.join(root, "shards")
    for split, count, shards in (("train", num_train, 2), ("val", num_val, 1)):
        annotations, images_dir = write_source(os.path.join(root, "source"), split, count, seed + (split == "val"))
        run_build(annotations, images_dir, data_dir, split, f"--num_shards={shards}")
    return data_dir


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> str:
    """The data_dir of a 24-image train, 8-image val build."""
    return make_build(str(tmp_path_factory.mktemp("train-build")))
