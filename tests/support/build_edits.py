"""The tests' one set of build-editing helpers: copy a build, read and rewrite its manifest and its
records, rename its files to another build's layout.

The record editors rewrite records through reader.core.protowire and reader.core.tfrecord, and can
bring the manifest's per-shard sizes and sha256 back in line, so a fault can hide from the checksums.
Every helper takes the data_dir as a str or a path, and the split (default val).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
from collections.abc import Callable

import numpy as np

from reader.core import layout, protowire, schema, targets, tfrecord

SPLIT = "val"
NUM_SHARDS = 3  # good_build's (tests/conftest.py)


def copy_build(data_dir: str | os.PathLike, destination: str | os.PathLike) -> pathlib.Path:
    """A private copy of a build's files, as destination/shards (for tests that change them)."""
    return pathlib.Path(shutil.copytree(data_dir, pathlib.Path(destination) / "shards"))


# -- reading and rewriting a build ----------------------------------------------------------------


def manifest_path(data_dir: str | os.PathLike, split: str = SPLIT) -> pathlib.Path:
    return pathlib.Path(data_dir) / layout.manifest_name(split)


def read_manifest(data_dir: str | os.PathLike, split: str = SPLIT) -> dict:
    return json.loads(manifest_path(data_dir, split).read_text())


def write_manifest(data_dir: str | os.PathLike, manifest: dict, split: str = SPLIT) -> None:
    manifest_path(data_dir, split).write_text(json.dumps(manifest, indent=2) + "\n")


def rewrite_manifest(data_dir: str | os.PathLike, edit: Callable[[dict], object], split: str = SPLIT) -> None:
    """Applies edit(dict) to a build's manifest in place."""
    manifest = read_manifest(data_dir, split)
    edit(manifest)
    write_manifest(data_dir, manifest, split)


def shard_files(data_dir: str | os.PathLike, split: str = SPLIT) -> list[str]:
    return [s["file"] for s in read_manifest(data_dir, split)["shards"]]


def errors_file(data_dir: str | os.PathLike, split: str = SPLIT) -> str:
    """The errors file the manifest names (builds before build ids name none: the legacy name)."""
    return read_manifest(data_dir, split).get("errors_file", layout.errors_name(split))


def build_id(data_dir: str | os.PathLike, split: str = SPLIT) -> str | None:
    return read_manifest(data_dir, split).get("build")


def relayout(data_dir: str | os.PathLike, build: str | None, split: str = SPLIT) -> None:
    """Renames a build's shards and errors file to the names build `build` gives them (None: the
    names of builds before build ids) and rewrites the manifest to match, whichever layout the
    pipeline wrote: tests of both layouts run whatever the pipeline writes today."""
    data_dir = pathlib.Path(data_dir)
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


def refresh_manifest(data_dir: str | os.PathLike, split: str = SPLIT) -> None:
    """Brings each shard entry's records, bytes and sha256 in line with the file (the counts
    block is left as it is)."""
    data_dir = pathlib.Path(data_dir)
    manifest = read_manifest(data_dir, split)
    for entry in manifest["shards"]:
        data = (data_dir / entry["file"]).read_bytes()
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        entry["records"] = len(read_records(data_dir / entry["file"]))
    write_manifest(data_dir, manifest, split)


Features = dict[str, tuple[str, object]]


def edit_record(
    data_dir: str | os.PathLike, file: str, index: int, edit: Callable[[Features], None], refresh: bool = True
) -> None:
    """Decodes record `index` of shard `file`, lets `edit` change its features in place, writes
    it back with fresh CRCs and (refresh) the manifest's checksums to match."""
    data_dir = pathlib.Path(data_dir)
    path = data_dir / file
    records = read_records(path)
    features = protowire.decode_example(records[index])
    edit(features)
    records[index] = protowire.encode_example(features)
    write_records(path, records)
    if refresh:
        refresh_manifest(data_dir)


def move_target(features: Features) -> None:
    """Moves the first target cell's values to the first empty cell."""
    grid = np.asarray(features[schema.GRID][1]).reshape(7, 7, 5).copy()
    ignore = np.asarray(features[schema.IGNORE][1]).reshape(7, 7)
    full = np.argwhere(grid[..., targets.OBJ] == 1)[0]
    empty = np.argwhere((grid[..., targets.OBJ] == 0) & (ignore == 0))[0]
    grid[tuple(empty)] = grid[tuple(full)]
    grid[tuple(full)] = 0
    features[schema.GRID] = ("float", grid.ravel())


@dataclasses.dataclass(frozen=True)
class Located:
    """A record of the build, where it is, and its features."""

    file: str
    index: int
    features: Features

    def values(self, key: str) -> np.ndarray:
        return np.asarray(self.features[key][1])


def records_of(data_dir: str | os.PathLike, split: str = SPLIT) -> list[Located]:
    """Every record of the split, in shard order."""
    data_dir = pathlib.Path(data_dir)
    return [
        Located(file, index, protowire.decode_example(data))
        for file in shard_files(data_dir, split)
        for index, data in enumerate(read_records(data_dir / file))
    ]


def find(data_dir: str | os.PathLike, where: Callable[[Located], bool]) -> Located:
    for record in records_of(data_dir):
        if where(record):
            return record
    raise AssertionError("no record of the fixture build matches")


def faces(record: Located) -> int:
    return len(record.values(schema.XMIN))


def damage_record(data_dir: str | os.PathLike, number: int, split: str = SPLIT) -> tuple[str, tfrecord.RecordSpan]:
    """Flips one bit inside the data of record `number` (in manifest order) of `data_dir`, which
    its data checksum then fails (the manifest is left as it was); returns (its shard file, its span)."""
    data_dir = pathlib.Path(data_dir)
    spans = []
    for file in shard_files(data_dir, split):
        with open(data_dir / file, "rb") as f:
            spans += [(file, span) for span in tfrecord.index_records(f, file)]
    file, span = spans[number]
    with open(data_dir / file, "r+b") as f:
        f.seek(span.data_offset + 100)
        byte = f.read(1)
        f.seek(span.data_offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    return file, span


def flipped_targets(record: schema.Record, config) -> tuple[np.ndarray, targets.GridTargets]:
    """(the record's boxes flipped left-right, their targets encoded by the build's rule): what a
    reader's flip must give, worked out from reader.core alone."""
    from reader.core import boxes as box_formats

    placement = box_formats.Placement.fit(record.original_width, record.original_height, config.input_size, config.resize)
    flipped = box_formats.flip_rel_xyxy(record.boxes)
    invalid = record.attributes[:, schema.ATTRIBUTES.index("invalid")]
    is_target = targets.target_mask(record.boxes, invalid, config.min_face_px, config.input_size)
    return flipped, targets.encode(flipped, is_target, config.grid_size, placement.source_areas(record.boxes))
