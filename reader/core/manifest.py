"""A split's manifest, `{split}.manifest.json`: what a build promised, written and read here.

    config         the build config (reader.core.config)
    counts         COUNT_KEYS, bound by COUNT_LAWS (DESIGN.md, "Nothing vanishes")
    shards         one ShardEntry each: file, records, bytes, sha256
    errors_file    the build's errors file: one ErrorEntry per line
The build writes it with `manifest_json` as the commit point of a build (reader.core.layout);
the readers, the checker and training read it with `load`. No Beam, no TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from reader.core import files, layout, schema
from reader.core.config import BuildConfig

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
    """One shard as the manifest lists it: its file name, records, size in bytes and sha256."""

    file: str
    records: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return {"file": self.file, "records": self.records, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: dict) -> ShardEntry:
        """Raises KeyError, TypeError or ValueError for an entry that is not one."""
        return cls(raw["file"], int(raw["records"]), int(raw["bytes"]), raw["sha256"])


@dataclasses.dataclass(frozen=True)
class ErrorEntry:
    """One image that did not become a record: a line of the build's errors file.

    filename: as the annotation file names it; line: the annotation file's line (1-based) where
    its block starts; reason: one of DESIGN.md's closed set; detail: for people; faces: how many
    faces the annotation gave it (counted as faces_in_errors).
    """

    filename: str
    line: int
    reason: str
    detail: str
    faces: int

    def to_json_line(self) -> str:
        """The line, without its newline: sorted keys, UTF-8 kept as written."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json_line(cls, line: str) -> ErrorEntry:
        """Raises ValueError naming the fields when `line` is not one entry."""
        try:
            raw = json.loads(line)
        except ValueError:
            raw = None
        fields = dataclasses.fields(cls)
        if not isinstance(raw, dict) or any(not isinstance(raw.get(f.name), _ERROR_TYPES[f.name]) for f in fields):
            raise ValueError(f"expected a JSON object with {', '.join(f.name for f in fields)}, found {line[:80]!r}")
        return cls(**{f.name: raw[f.name] for f in fields})


_ERROR_TYPES = {"filename": str, "line": int, "reason": str, "detail": str, "faces": int}


def errors_file_bytes(entries) -> bytes:
    """The errors file holding `entries`, in the order given, one line each."""
    return "".join(entry.to_json_line() + "\n" for entry in entries).encode("utf-8")


def manifest_json(split: str, build: str, config: BuildConfig, counts: dict, errors: list[ErrorEntry], shards: list[ShardEntry]) -> dict:
    """The manifest of a build, as the build commits it (keys in this order)."""
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "split": split,
        "build": build,
        "config": config.to_json(),
        "counts": {key: int(counts[key]) for key in COUNT_KEYS},
        "error_reasons": dict(sorted(collections.Counter(e.reason for e in errors).items())),
        "errors_file": layout.errors_name(split, build),
        "record_keys": sorted(schema.FEATURES_BY_KEY),  # what every record holds (TFDS reads builds that say so)
        "shards": [entry.to_json() for entry in shards],
    }


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What `{split}.manifest.json` says. `data_dir` is where it was read from."""

    data_dir: str
    split: str
    config: BuildConfig
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
        """The errors file of this build, as the manifest names it (builds before build ids
        named none: theirs is `{split}.errors.jsonl`)."""
        named = self.raw.get("errors_file")
        return named if isinstance(named, str) and named else layout.errors_name(self.split)

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def shard_paths(self) -> list[str]:
        return [files.join(self.data_dir, s.file) for s in self.shards]


def is_plain_name(name) -> bool:
    """A file name inside the data directory: no directory part."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def missing_shard(path: str, split: str) -> str:
    """The message for a shard the manifest lists and the directory lacks."""
    return (f"{path}: missing: {layout.manifest_name(split)} lists this shard, the directory does not hold it "
            f"(removed by a build that committed since? python -m reader.check names what is wrong)")


def load(data_dir: str, split: str, *, salvage_config: bool = False) -> Manifest:
    """Reads `data_dir/{split}.manifest.json`; raises ManifestError saying what is wrong.
    salvage_config: take a damaged config block's usable settings (the defaults for the rest)
    instead of refusing it: the checker does, to check the records anyway and say what is wrong."""
    path = files.join(data_dir, layout.manifest_name(split))
    try:
        raw = json.loads(files.read_bytes(path, files.MANIFEST))
    except files.RefusedFile as e:  # a FIFO, a device, a link out of data_dir, too large: never read
        raise ManifestError(str(e)) from None
    except Exception as e:  # tf.errors.NotFoundError and friends have no common stdlib base
        if isinstance(e, FileNotFoundError) or type(e).__name__ == "NotFoundError":
            from reader.core import manifest_hint  # the splits and folders there are, for the message

            raise ManifestError(f"{path}: {manifest_hint.missing(data_dir, split)}") from None
        raise ManifestError(f"{path}: unreadable manifest: {str(e).removeprefix(path + ': ')}") from None
    return from_raw(raw, data_dir, path, salvage_config=salvage_config)


def from_raw(raw, data_dir: str, path: str, *, salvage_config: bool = False) -> Manifest:
    """The Manifest a decoded manifest.json holds (read by whatever means: the build reads it
    through Beam's filesystems); `path` names it in errors. Raises ManifestError."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    if raw.get("schema_version") != schema.SCHEMA_VERSION:
        raise ManifestError(f"{path}: expected schema_version {schema.SCHEMA_VERSION}, found {raw.get('schema_version')!r}")
    try:
        shards = tuple(ShardEntry.from_json(s) for s in raw["shards"])
        raw_config, counts = raw["config"], dict(raw["counts"])
        split = raw["split"]
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: expected keys split, config, counts and shards with file/records/bytes/sha256: {e!r}") from None
    try:
        config = BuildConfig.salvage(raw_config) if salvage_config else BuildConfig.from_json(raw_config)
    except ValueError as e:
        raise ManifestError(f"{path}: {e}") from None
    built = Manifest(data_dir, split, config, counts, shards, raw)
    for position, entry in enumerate(shards):
        # A name with a directory part would have the readers open a file outside data_dir.
        if not is_plain_name(entry.file):
            raise ManifestError(f"{path}: shards[{position}].file: expected a file name in the data directory, found {entry.file!r}")
        if entry.records < 0:
            raise ManifestError(f"{path}: shards[{position}].records: expected a count >= 0, found {entry.records}")
    return built
