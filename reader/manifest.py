"""A split's manifest: what the build promised (shards, counts, config), read without Beam.

Local paths are read with the standard library; any other scheme (gs://, s3://) through
`tf.io.gfile`, imported only then.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import BinaryIO

from reader import layout, schema


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def join(directory: str, name: str) -> str:
    return os.path.join(directory, name) if is_local(directory) else f"{directory.rstrip('/')}/{name}"


def open_binary(path: str) -> BinaryIO:
    """Opens a local or remote (gs://, s3://) file for reading bytes."""
    if is_local(path):
        return open(path.removeprefix("file://"), "rb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


# The manifest's counts and the laws they obey (DESIGN.md, "Nothing vanishes").
COUNT_KEYS = (
    "images_annotated", "records", "errors", "faces_annotated", "faces_stored",
    "degenerate", "faces_in_errors", "targets", "dropped", "ignored",
)  # fmt: skip
COUNT_LAWS = (
    ("images_annotated", ("records", "errors")),
    ("faces_annotated", ("faces_stored", "degenerate", "faces_in_errors")),
    ("faces_stored", ("targets", "dropped", "ignored")),
)


def count_imbalances(counts) -> list[str]:
    """The laws of COUNT_LAWS that `counts` break, as readable equations (empty when all hold)."""
    broken = []
    for total, parts in COUNT_LAWS:
        added = sum(counts[p] for p in parts)
        if counts[total] != added:
            broken.append(f"{total} {counts[total]} != {' + '.join(f'{p} {counts[p]}' for p in parts)} = {added}")
    return broken


class ManifestError(ValueError):
    """A missing or unreadable manifest, or one of another schema version."""


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    file: str
    records: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What `{split}.manifest.json` says. `data_dir` is where it was read from."""

    data_dir: str
    split: str
    config: dict
    counts: dict
    shards: tuple[ShardEntry, ...]
    raw: dict

    @property
    def num_records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def build(self) -> str | None:
        """The build id (None for builds before build ids: their files carry none)."""
        return self.raw.get("build")

    @property
    def errors_file(self) -> str:
        """The errors file of this build, as the manifest names it."""
        return self.raw.get("errors_file") or layout.errors_name(self.split)

    @property
    def grid_size(self) -> int:
        return int(self.config["grid_size"])

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    def shard_paths(self) -> list[str]:
        return [join(self.data_dir, s.file) for s in self.shards]


def load(data_dir: str, split: str) -> Manifest:
    """Reads `data_dir/{split}.manifest.json`; raises ManifestError saying what is wrong."""
    path = join(data_dir, layout.manifest_name(split))
    try:
        with open_binary(path) as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest; build the split first (python -m pipeline ... --split={split})") from None
    except Exception as e:  # tf.errors.NotFoundError and friends have no common stdlib base
        if type(e).__name__ == "NotFoundError":
            raise ManifestError(f"{path}: no manifest; build the split first") from None
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None
    if raw.get("schema_version") != schema.SCHEMA_VERSION:
        raise ManifestError(f"{path}: expected schema_version {schema.SCHEMA_VERSION}, found {raw.get('schema_version')!r}")
    try:
        shards = tuple(ShardEntry(s["file"], int(s["records"]), int(s["bytes"]), s["sha256"]) for s in raw["shards"])
        return Manifest(data_dir, raw["split"], dict(raw["config"]), dict(raw["counts"]), shards, raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: expected keys split, config, counts and shards with file/records/bytes/sha256: {e!r}") from None
