"""The tests' one small-build factory: runs the real Beam build (in memory) on the checked-in
fixture set or on a recipe's generated sources (tests/support/sources.py), and reads back what it
wrote. tests/support/build_edits.py copies and breaks builds.

The session fixtures of tests/conftest.py are `make_build`s: `built_val` (HARD_CASES, 46 images in
3 JPEG shards), `built_val_raw` (12 of them in 2 raw shards), `good_build` (CHECKER_CASES, 10
records in 3 shards), `tiny_build` (LEARNABLE, 24 train images in 2 shards, 8 val in 1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from pipeline import cli
from reader.core import manifest, schema, tfrecord
from tests.support import sources
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def run_build(annotations, images_dir, output_dir, split: str, *flags: str, runner=IN_MEMORY):
    """The real Beam build through `pipeline.cli.run`, in memory unless `runner` says otherwise."""
    return cli.run(
        [
            f"--annotations={annotations}",
            f"--images_dir={images_dir}",
            f"--output_dir={output_dir}",
            f"--split={split}",
            *flags,
            *runner,
        ]
    )


def build(output_dir, *flags: str, split: str = "val", annotations=FIXTURE_ANNOTATIONS, runner=IN_MEMORY) -> dict:
    """Builds `split` of the checked-in fixture set into output_dir; returns its manifest."""
    run_build(annotations, FIXTURE_IMAGES, output_dir, split, "--max_error_fraction=0.5", *flags, runner=runner)
    return json.loads((pathlib.Path(output_dir) / f"{split}.manifest.json").read_text())


def make_build(
    root: str | os.PathLike,
    recipe: sources.Recipe,
    splits: dict[str, tuple[int, int]],
    *,
    seed: int = 0,
    image_format: str = "jpeg",
) -> pathlib.Path:
    """Writes each split's sources under root/source (`splits`: {split: (num_images, num_shards)},
    the k-th split drawn with seed + k) and builds them into root/shards; returns that data_dir."""
    root = pathlib.Path(root)
    data_dir = root / "shards"
    for k, (split, (num_images, num_shards)) in enumerate(splits.items()):
        annotations, images_dir = sources.write_source(root / "source", recipe, split, num_images, seed + k)
        run_build(
            annotations,
            images_dir,
            data_dir,
            split,
            f"--num_shards={num_shards}",
            f"--image_format={image_format}",
            *recipe.flags,
        )
    return data_dir


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


def read_back(data_dir: str | os.PathLike, split: str = "val") -> Build:
    """The records of a build, read without TensorFlow, in shard then file order."""
    m = manifest.load(str(data_dir), split)
    records, locations = [], []
    for entry, path in zip(m.shards, m.shard_paths()):
        with open(path, "rb") as f:
            for span, data in tfrecord.iter_records(f, entry.file):
                records.append(schema.Record.parse(data))
                locations.append((entry.file, span.index))
    return Build(str(data_dir), split, tuple(records), tuple(locations))


def read_shard(path) -> list[schema.Record]:
    with open(path, "rb") as f:
        return [schema.Record.parse(data) for _, data in tfrecord.iter_records(f, str(path))]


def read_split(output_dir, manifest: dict) -> dict[str, list[schema.Record]]:
    """{shard file: its records in order} for every shard of the manifest."""
    return {s["file"]: read_shard(pathlib.Path(output_dir) / s["file"]) for s in manifest["shards"]}


def files(output_dir) -> dict[str, bytes]:
    """Every file of the directory (hidden ones included) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(output_dir).iterdir())}


def without_build_ids(found: dict[str, bytes]) -> dict[str, bytes]:
    """`files` with each build id (drawn at random per build) written as BUILD, in names, in
    manifests and in the TFDS files that name shards: what two builds of the same inputs must
    agree on byte for byte."""
    ids = {json.loads(data)["build"] for name, data in found.items() if name.endswith(".manifest.json")}
    result = {}
    for name, data in found.items():
        for build in ids:
            name = name.replace(build, "BUILD")
            if name.endswith(".json"):
                data = data.replace(build.encode(), b"BUILD")
        result[name] = data
    return result


def blank_record(size: int = 224, grid_size: int = 7, sha256: str = "0" * 64) -> schema.Record:
    """A record of a black raw size x size image without faces: the largest record of that
    config that no face adds to."""
    return schema.Record(
        image=bytes(size * size * 3),
        image_format="raw",
        height=size,
        width=size,
        original_height=size,
        original_width=size,
        filename="a.jpg",
        sha256=sha256,
        boxes=np.zeros((0, 4), np.float32),
        attributes=np.zeros((0, len(schema.ATTRIBUTES)), np.int64),
        grid=np.zeros((grid_size, grid_size, 5), np.float32),
        ignore=np.zeros((grid_size, grid_size), np.float32),
        dropped=0,
    )
