"""Runs the Beam build on the checked-in fixture set and reads what it wrote."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from pipeline import cli
from reader.core import schema, tfrecord
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def run_build(annotations, images_dir, output_dir, split: str, *flags: str, runner=IN_MEMORY):
    """The real Beam build through `pipeline.cli.run`, in memory unless `runner` says otherwise."""
    return cli.run(
        [f"--annotations={annotations}", f"--images_dir={images_dir}", f"--output_dir={output_dir}", f"--split={split}", *flags, *runner]
    )


def build(output_dir, *flags: str, split: str = "val", annotations=FIXTURE_ANNOTATIONS, runner=IN_MEMORY) -> dict:
    """Builds `split` of the checked-in fixture set into output_dir; returns its manifest."""
    run_build(annotations, FIXTURE_IMAGES, output_dir, split, "--max_error_fraction=0.5", *flags, runner=runner)
    return json.loads((pathlib.Path(output_dir) / f"{split}.manifest.json").read_text())


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
        image=bytes(size * size * 3), image_format="raw", height=size, width=size, original_height=size, original_width=size,
        filename="a.jpg", sha256=sha256, boxes=np.zeros((0, 4), np.float32), attributes=np.zeros((0, len(schema.ATTRIBUTES)), np.int64),
        grid=np.zeros((grid_size, grid_size, 5), np.float32), ignore=np.zeros((grid_size, grid_size), np.float32), dropped=0,
    )
