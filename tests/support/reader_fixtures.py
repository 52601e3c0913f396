"""Small real builds for the reader tests: generated images, a WIDER annotation file, the Beam job.

The annotation file is made to exercise what the readers must get right: several faces per
image, two faces sharing a cell (the larger wins), invalid faces (ignored, not targets), a
degenerate box, images without faces, and box centres lying exactly on a cell boundary, where
a flipped image puts the face in another column than the mirrored one.

Images are `pipeline.synthetic.pattern`s, asymmetric, so a horizontal flip is visible in the pixels.

The fixtures `built_val` and `built_val_raw` (tests/conftest.py) are `make_build`s; session-scoped,
one per test process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator

import numpy as np

from pipeline import synthetic
from reader.core import layout, manifest, schema, tfrecord
from tests.support.build_helpers import run_build

GRID = 7


@dataclasses.dataclass(frozen=True)
class Build:
    """One built split: where it is and the records as written (read back without TensorFlow)."""

    data_dir: str
    split: str
    records: tuple[schema.Record, ...]  # in shard order, then file order
    locations: tuple[tuple[str, int], ...]  # (shard file, record index) per record

    @property
    def manifest(self) -> manifest.Manifest:
        return manifest.load(self.data_dir, self.split)

    def by_filename(self) -> dict[str, schema.Record]:
        return {r.filename: r for r in self.records}


def _faces_for(i: int, width: int, height: int, rng: np.random.Generator) -> list[list[int]]:
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


def _pictures(num_images: int, rng: np.random.Generator) -> Iterator[synthetic.Picture]:
    for i in range(num_images):
        event = f"{i % 3}--Event{i % 3}"
        width = int(rng.choice([140, 168, 210, 280, 330]))
        height = int(rng.choice([112, 150, 196, 260]))
        image = synthetic.jpeg(synthetic.pattern(width, height, rng), quality=92)  # before the faces: one rng stream
        yield synthetic.Picture(f"{event}/{i % 3}_Event_img_{i}.jpg", _faces_for(i, width, height, rng), image)


def write_source(root: str, num_images: int, seed: int = 0) -> tuple[str, str]:
    """Writes images and a WIDER val annotation file under root; returns (annotations, images_dir)."""
    return synthetic.write_split(root, "val", _pictures(num_images, np.random.default_rng(seed)))


def build(annotations: str, images_dir: str, output_dir: str, num_shards: int, image_format: str = "jpeg", split: str = "val") -> None:
    """Runs the real Beam build, in memory (fast enough for tests)."""
    run_build(annotations, images_dir, output_dir, split, f"--num_shards={num_shards}", f"--image_format={image_format}")


def read_back(data_dir: str, split: str = "val") -> Build:
    """The records of a build, read without TensorFlow, in shard then file order."""
    m = manifest.load(data_dir, split)
    records, locations = [], []
    for entry, path in zip(m.shards, m.shard_paths()):
        with open(path, "rb") as f:
            for span, data in tfrecord.iter_records(f, entry.file):
                records.append(schema.Record.parse(data))
                locations.append((entry.file, span.index))
    return Build(data_dir, split, tuple(records), tuple(locations))


def make_build(root: str, num_images: int, num_shards: int, image_format: str = "jpeg", seed: int = 0) -> Build:
    annotations, images_dir = write_source(os.path.join(root, "source"), num_images, seed)
    out = os.path.join(root, f"shards-{image_format}")
    build(annotations, images_dir, out, num_shards, image_format)
    return read_back(out)


def copy_build(source: Build, destination: str) -> str:
    """A private copy of a build's files (for tests that damage shards)."""
    shutil.copytree(source.data_dir, destination)
    return destination


def rewrite_manifest(data_dir: str, split: str, edit) -> None:
    """Applies edit(dict) to a build's manifest in place."""
    path = os.path.join(data_dir, layout.manifest_name(split))
    with open(path) as f:
        raw = json.load(f)
    edit(raw)
    with open(path, "w") as f:
        json.dump(raw, f)


NUM_IMAGES = 46  # not a multiple of the batch sizes the tests use
