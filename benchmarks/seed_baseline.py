"""The approach facegrid replaces, rewritten for the reader benchmark so that `make bench` runs
from a clone alone.

People training on WIDER FACE commonly feed the model with a `keras.utils.Sequence` that:
- reads the annotation file at start-up and makes one example per face, not per image;
- for every example opens the original JPEG twice (once to learn its size, once decoded and
  resized to 224x224 with the nearest-neighbour filter, `load_img`'s default);
- writes that one face into a 7x7x5 grid at the cell of the box's top-left corner.
This module does the same work the same way, so its rate is that approach's rate; it is a
measuring stick, not an example (its targets are wrong in the ways facegrid exists to fix).
"""

from __future__ import annotations

import math

import keras
import numpy as np

INPUT_SIZE, GRID_SIZE = 224, 7


def face_examples(annotations_path: str) -> list[tuple[str, int, int, int, int]]:
    """(filename, x, y, w, h) per face of a `*_bbx_gt.txt` file; zero-size boxes skipped, an
    image without faces kept as one example of its placeholder box."""
    examples = []
    with open(annotations_path) as f:
        lines = iter(f.read().splitlines())
        for filename in lines:
            count = int(next(lines))
            boxes = [next(lines).split()[:4] for _ in range(max(count, 1))]
            for x, y, w, h in (map(int, box) for box in boxes):
                if count and (w == 0 or h == 0):
                    continue
                examples.append((filename, x, y, w, h))
    return examples


class FacePerExampleSequence(keras.utils.PyDataset):
    """Batches of (images [B, 224, 224, 3], grids [B, 7, 7, 5]), one face per example."""

    def __init__(self, images_dir: str, annotations_path: str, batch_size: int = 16):
        super().__init__()
        self.images_dir = images_dir.rstrip("/") + "/"
        self.examples = face_examples(annotations_path)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def __getitem__(self, index: int):
        batch = self.examples[index * self.batch_size : (index + 1) * self.batch_size]
        images = np.zeros((len(batch), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        grids = np.zeros((len(batch), GRID_SIZE, GRID_SIZE, 5), np.float32)
        for i, (filename, x, y, w, h) in enumerate(batch):
            path = self.images_dir + filename
            width, height = keras.utils.load_img(path).size  # the first full decode, for the size alone
            images[i] = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(INPUT_SIZE, INPUT_SIZE)))
            x, y = min(max(x, 0), width), min(max(y, 0), height)
            col, row = GRID_SIZE * x / width, GRID_SIZE * y / height
            r, c = min(math.floor(row), GRID_SIZE - 1), min(math.floor(col), GRID_SIZE - 1)
            grids[i, r, c] = (h / height, w / width, row - r, col - c, 1.0)
        return images, grids
