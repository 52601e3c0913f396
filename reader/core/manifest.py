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

from reader.core import layout, schema, storage
from reader.core.config import BuildConfig

# isort: off
# Re-exported: the values and their rules live in manifest_values; callers import them from here.
from reader.core.manifest_values import (  # noqa: F401
    COUNT_KEYS, COUNT_LAWS, MAX_BYTES, MAX_COUNT, ManifestError, NonFinite, Problem, ShardEntry, Validator,
    count_imbalances, is_plain_name, loads,
)  # fmt: skip
# isort: on


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


def manifest_json(
    split: str, build: str, config: BuildConfig, counts: dict, errors: list[ErrorEntry], shards: list[ShardEntry]
) -> dict:
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
    problems: tuple[Problem, ...] = ()  # salvaged (the checker's load): what is wrong with it

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
        return [storage.join(self.data_dir, s.file) for s in self.shards]


def missing_shard(path: str, split: str) -> str:
    """The message for a shard the manifest lists and the directory lacks."""
    return (
        f"{path}: missing: {layout.manifest_name(split)} lists this shard, the directory does not hold it "
        f"(removed by a build that committed since? python -m reader.check names what is wrong)"
    )


def other_size(path: str, size: int, entry: ShardEntry) -> str:
    """The message for a shard whose size is not its manifest entry's."""
    return (
        f"{path}: {size} bytes, the manifest says {entry.bytes}: rebuilt or damaged since the manifest was written "
        f"(python -m reader.check names the problem)"
    )


def other_bytes(path: str, found: str, entry: ShardEntry) -> str:
    """The message for a shard whose sha256 is not its manifest entry's (same size, other bytes)."""
    return (
        f"{path}: sha256 {found}, the manifest says {entry.sha256}: rebuilt or damaged since the manifest was "
        f"written (python -m reader.check names the problem)"
    )


def no_records(data_dir: str, split: str) -> str:
    """The message for a split whose manifest lists no record: nothing to read."""
    return f"{storage.join(data_dir, layout.manifest_name(split))}: no records in {split}: its shards hold none, nothing to read"


def load(data_dir: str, split: str, *, salvage: bool = False) -> Manifest:
    """Reads `data_dir/{split}.manifest.json` and validates every value (`from_raw`); raises
    ManifestError saying what is wrong, in one line naming the file and the field.
    salvage: the checker's reading: take what can still be checked (see `from_raw`)."""
    path = storage.join(data_dir, layout.manifest_name(split))
    try:
        data = storage.read_bytes(path, storage.MANIFEST)
    except storage.RefusedFile as e:  # a FIFO, a device, a link out of data_dir, too large: never read
        raise ManifestError(str(e)) from None
    except Exception as e:  # tf.errors.NotFoundError and friends have no common stdlib base
        if isinstance(e, FileNotFoundError) or type(e).__name__ == "NotFoundError":
            from reader.core import manifest_hint  # the splits and folders there are, for the message

            raise ManifestError(f"{path}: {manifest_hint.missing(data_dir, split)}") from None
        raise ManifestError(f"{path}: unreadable manifest: {str(e).removeprefix(path + ': ')}") from None
    return from_raw(loads(data, path), data_dir, path, split=split, salvage=salvage)


def from_raw(raw, data_dir: str, path: str, *, split: str | None = None, salvage: bool = False) -> Manifest:
    """The Manifest a decoded manifest.json holds (decoded by `loads`, read by whatever means:
    the build reads it through Beam's filesystems); `path` names it in errors, `split` is the
    split it must say (None: any of layout.SPLITS).

    Every value is validated (`manifest_values.Validator`): types (a bool is no integer), finite numbers,
    ranges, sha256 digests, shard files named once, shard records adding up to counts.records,
    the counts obeying COUNT_LAWS, the config. Raises ManifestError for the first problem, as
    `PATH: field: expected ..., found ...`.

    salvage (the checker): raise only when nothing can be checked (not an object, another
    schema_version, a shard list or entry that is not one); otherwise return the Manifest with
    its `problems`, the config's usable settings (the defaults for the rest), None for an unusable
    count, and each shard file's first entry only."""
    checked = Validator(path, split)
    said_split, config, counts, shards = checked.values(raw)
    built = Manifest(data_dir, said_split, config, counts, shards, raw, tuple(checked.problems))
    if checked.problems and not salvage:
        first = checked.problems[0]
        more = len(checked.problems) - 1
        raise ManifestError(f"{path}: {first}" + (f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""))
    return built
