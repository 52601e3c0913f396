"""A small good build for the checker's tests, and the tools to break copies of it.

`build` writes a tiny WIDER annotation file and JPEGs (`pipeline.synthetic.colour_field`s with a
cartoon face in every box), then builds the val split into 3 shards with the in-memory runner;
the `good_build` fixture (tests/conftest.py, session-scoped: one Beam build per test process) is
that build. The images hold what a checker must not mistake for damage:
    a crowded cell        three faces centred in one cell: two are dropped
    an invalid face       alone in its cell: that cell has ignore = 1
    a degenerate box      zero width: not stored
    an empty image        the val placeholder (`1` and an all-zero box)
    a face past the edges clipped to the image
    a missing image       not a record: one line of the errors file

The editing helpers rewrite records through reader.core.protowire and reader.core.tfrecord, and can bring
the manifest's per-shard sizes and sha256 back in line, so a fault can hide from the checksums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
from collections.abc import Callable

import numpy as np

from pipeline import synthetic
from reader.core import layout, protowire, schema, tfrecord
from tests.support.build_helpers import run_build

SPLIT = "val"
NUM_SHARDS = 3

# (filename, width, height, faces as (x, y, w, h, invalid)); None: the image file is not written.
_IMAGES = (
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


def write_source(root: pathlib.Path) -> tuple[str, str]:
    """Writes the annotation file and images under root; returns (annotations, images_dir)."""
    pictures = []
    for seed, (filename, width, height, faces) in enumerate(_IMAGES):
        lines = [[x, y, w, h, 0, 0, 0, invalid, 0, 0] for x, y, w, h, invalid in faces]
        data = None
        if filename != _MISSING:
            data = synthetic.jpeg(synthetic.paint_faces(synthetic.colour_field(width, height, np.random.default_rng(seed)), lines))
        pictures.append(synthetic.Picture(filename, lines, data))
    return synthetic.write_split(root, SPLIT, pictures)


def build(source_root: pathlib.Path, output_dir: pathlib.Path, split: str = SPLIT, num_shards: int = NUM_SHARDS) -> None:
    annotations, images = write_source(source_root)
    run_build(annotations, images, output_dir, split, f"--num_shards={num_shards}", "--max_error_fraction=0.5")


def copy_build(good: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    target = destination / "shards"
    shutil.copytree(good, target)
    return target


# -- reading and rewriting a build ----------------------------------------------------------------


def manifest_path(data_dir: pathlib.Path, split: str = SPLIT) -> pathlib.Path:
    return data_dir / layout.manifest_name(split)


def read_manifest(data_dir: pathlib.Path, split: str = SPLIT) -> dict:
    return json.loads(manifest_path(data_dir, split).read_text())


def write_manifest(data_dir: pathlib.Path, manifest: dict, split: str = SPLIT) -> None:
    manifest_path(data_dir, split).write_text(json.dumps(manifest, indent=2) + "\n")


def shard_files(data_dir: pathlib.Path, split: str = SPLIT) -> list[str]:
    return [s["file"] for s in read_manifest(data_dir, split)["shards"]]


def errors_file(data_dir: pathlib.Path, split: str = SPLIT) -> str:
    """The errors file the manifest names (builds before build ids name none: the legacy name)."""
    return read_manifest(data_dir, split).get("errors_file", layout.errors_name(split))


def build_id(data_dir: pathlib.Path, split: str = SPLIT) -> str | None:
    return read_manifest(data_dir, split).get("build")


def relayout(data_dir: pathlib.Path, build: str | None, split: str = SPLIT) -> None:
    """Renames a build's shards and errors file to the names build `build` gives them (None: the
    names of builds before build ids) and rewrites the manifest to match, whichever layout the
    pipeline wrote: tests of both layouts run whatever the pipeline writes today."""
    manifest = read_manifest(data_dir, split)
    count = len(manifest["shards"])
    for index, entry in enumerate(manifest["shards"]):
        name = layout.shard_name(split, index, count, build)
        (data_dir / entry["file"]).rename(data_dir / name)
        entry["file"] = name
    errors = layout.errors_name(split, build)
    (data_dir / errors_file(data_dir, split)).rename(data_dir / errors)
    manifest.pop("build", None)
    manifest.pop("errors_file", None)
    if build is not None:
        manifest.update(build=build, errors_file=errors)
    write_manifest(data_dir, manifest, split)


def read_records(path: pathlib.Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [data for _, data in tfrecord.iter_records(f, path.name)]


def write_records(path: pathlib.Path, records: list[bytes]) -> None:
    path.write_bytes(b"".join(tfrecord.encode_record(r) for r in records))


def count_records(manifest: dict, change: int) -> None:
    """Changes the manifest's counts of records (and so of images) by `change`, as a shard entry
    was changed: the manifest then holds to its own sums, and only the shard disagrees."""
    manifest["counts"]["records"] += change
    manifest["counts"]["images_annotated"] += change
    if manifest.get("reuse"):
        manifest["reuse"]["prepared"] += change


def refresh_manifest(data_dir: pathlib.Path, split: str = SPLIT) -> None:
    """Brings each shard entry's records, bytes and sha256 in line with the file (the counts
    block is left as it is)."""
    manifest = read_manifest(data_dir, split)
    for entry in manifest["shards"]:
        data = (data_dir / entry["file"]).read_bytes()
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        entry["records"] = len(read_records(data_dir / entry["file"]))
    write_manifest(data_dir, manifest, split)


Features = dict[str, tuple[str, object]]


def edit_record(data_dir: pathlib.Path, file: str, index: int, edit: Callable[[Features], None], refresh: bool = True) -> None:
    """Decodes record `index` of shard `file`, lets `edit` change its features in place, writes
    it back with fresh CRCs and (refresh) the manifest's checksums to match."""
    path = data_dir / file
    records = read_records(path)
    features = protowire.decode_example(records[index])
    edit(features)
    records[index] = protowire.encode_example(features)
    write_records(path, records)
    if refresh:
        refresh_manifest(data_dir)


@dataclasses.dataclass(frozen=True)
class Located:
    """A record of the build, where it is, and its features."""

    file: str
    index: int
    features: Features

    def values(self, key: str) -> np.ndarray:
        return np.asarray(self.features[key][1])


def records_of(data_dir: pathlib.Path, split: str = SPLIT) -> list[Located]:
    """Every record of the split, in shard order."""
    return [
        Located(file, index, protowire.decode_example(data))
        for file in shard_files(data_dir, split)
        for index, data in enumerate(read_records(data_dir / file))
    ]


def find(data_dir: pathlib.Path, where: Callable[[Located], bool]) -> Located:
    for record in records_of(data_dir):
        if where(record):
            return record
    raise AssertionError("no record of the fixture build matches")


def faces(record: Located) -> int:
    return len(record.values(schema.XMIN))
