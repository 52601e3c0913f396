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
import math
import re

from reader.core import config, files, layout, schema
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


# Bounds of the numbers a manifest holds. Counts (records, images, faces) at most 2**53 - 1, the
# integers a JSON number holds exactly everywhere; shard sizes at most 2**62 bytes. A TFRecord
# record takes at least 16 bytes of framing, so a shard of n records has at least 16 n bytes.
MAX_COUNT = 2**53 - 1
MAX_BYTES = 2**62
RECORD_FRAMING_BYTES = 16
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A missing or unreadable manifest, one of another schema version, or one holding a value
    that is not what a build writes: one line, `FILE: field: expected ..., found ...`."""


class NonFinite:
    """A number JSON cannot hold as a finite double, as a manifest had it (`NaN`, `Infinity`,
    `-Infinity`, or a literal such as `1e400` that overflows): kept as its text, so that the
    field holding it is named and refused like any other wrong value (`loads`)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __reduce__(self):
        return NonFinite, (self.text,)


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def loads(data, path: str):
    """The decoded JSON of a manifest (bytes or str) read from `path`. Numbers that are not finite
    doubles come back as `NonFinite` (Python's json would give nan and inf), so that validation
    names them; raises ManifestError for bytes that are not JSON (UTF-8), nested too deep included."""
    try:
        return json.loads(data, parse_constant=NonFinite, parse_float=_parse_float)
    except RecursionError:
        raise ManifestError(f"{path}: unreadable manifest: nested too deeply to be one") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None


@dataclasses.dataclass(frozen=True)
class Problem:
    """What is wrong with one value of a manifest: `field: expected ..., found ...`. `check`: the
    checker's check that reports it ("counts" for the sums and laws the counts break)."""

    field: str
    message: str
    check: str = "manifest"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it: its file name, records, size in bytes and sha256."""

    file: str
    records: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return {"file": self.file, "records": self.records, "bytes": self.bytes, "sha256": self.sha256}



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
        return [files.join(self.data_dir, s.file) for s in self.shards]


def is_plain_name(name) -> bool:
    """A file name inside the data directory: no directory part."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def missing_shard(path: str, split: str) -> str:
    """The message for a shard the manifest lists and the directory lacks."""
    return (f"{path}: missing: {layout.manifest_name(split)} lists this shard, the directory does not hold it "
            f"(removed by a build that committed since? python -m reader.check names what is wrong)")




def load(data_dir: str, split: str, *, salvage: bool = False) -> Manifest:
    """Reads `data_dir/{split}.manifest.json` and validates every value (`from_raw`); raises
    ManifestError saying what is wrong, in one line naming the file and the field.
    salvage: the checker's reading: take what can still be checked (see `from_raw`)."""
    path = files.join(data_dir, layout.manifest_name(split))
    try:
        with files.open_binary(path) as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest; build the split first (python -m pipeline ... --split={split})") from None
    except Exception as e:  # tf.errors.NotFoundError and friends have no common stdlib base
        if type(e).__name__ == "NotFoundError":
            raise ManifestError(f"{path}: no manifest; build the split first") from None
        raise ManifestError(f"{path}: unreadable manifest: {str(e).removeprefix(path + ': ')}") from None
    return from_raw(loads(data, path), data_dir, path, split=split, salvage=salvage)


def from_raw(raw, data_dir: str, path: str, *, split: str | None = None, salvage: bool = False) -> Manifest:
    """The Manifest a decoded manifest.json holds (decoded by `loads`, read by whatever means:
    the build reads it through Beam's filesystems); `path` names it in errors, `split` is the
    split it must say (None: any of layout.SPLITS).

    Every value is validated (`_Validator`): types (a bool is no integer), finite numbers,
    ranges, sha256 digests, shard files named once, shard records adding up to counts.records,
    the counts obeying COUNT_LAWS, the config. Raises ManifestError for the first problem, as
    `PATH: field: expected ..., found ...`.

    salvage (the checker): raise only when nothing can be checked (not an object, another
    schema_version, a shard list or entry that is not one); otherwise return the Manifest with
    its `problems`, the config's usable settings (the defaults for the rest), None for an unusable
    count, and each shard file's first entry only."""
    checked = _Validator(path, split, salvage)
    built = checked.manifest(raw, data_dir)
    if checked.problems and not salvage:
        first = checked.problems[0]
        more = len(checked.problems) - 1
        raise ManifestError(f"{path}: {first}" + (f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""))
    return built


_found = config.found_text

def _is_count(value, upper: int = MAX_COUNT) -> bool:
    return config.is_int(value) and 0 <= value <= upper


def _is_build_id(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{%d}" % layout.BUILD_ID_LENGTH, value) is not None


class _Validator:
    """Checks a decoded manifest value by value, collecting a Problem for each wrong one."""

    def __init__(self, path: str, split: str | None, salvage: bool):
        self.path, self.split, self.salvage = path, split, salvage
        self.problems: list[Problem] = []

    def add(self, field: str, message: str, check: str = "manifest") -> None:
        self.problems.append(Problem(field, message, check))

    def fatal(self, field: str, message: str) -> ManifestError:
        """The error for a problem that leaves nothing to check, salvaging or not."""
        return ManifestError(f"{self.path}: {field}: {message}")

    def manifest(self, raw, data_dir: str) -> Manifest:
        if not isinstance(raw, dict):
            raise ManifestError(f"{self.path}: expected a JSON object, found {type(raw).__name__}")
        version = raw.get("schema_version")
        if not (config.is_int(version) and version == schema.SCHEMA_VERSION):
            raise ManifestError(f"{self.path}: expected schema_version {schema.SCHEMA_VERSION}, found {_found(version)}")
        for key in ("split", "config", "counts", "shards"):
            if key not in raw:
                raise ManifestError(f"{self.path}: {key}: missing (every manifest has split, config, counts and shards)")
        split = self._split(raw["split"])
        build = self._build(raw)
        built_config = self._config(raw["config"])
        counts = self._counts(raw["counts"])
        shards = self._shards(raw["shards"])
        self._sums(counts, shards)
        self._errors(raw, counts, split, build)
        self._reuse(raw, counts)
        self._others(raw)
        self._non_finite(raw)
        return Manifest(data_dir, split, built_config, counts, shards, raw, tuple(self.problems))

    def _split(self, value) -> str:
        if self.split is not None and value != self.split:
            self.add("split", f"expected {self.split!r}, found {_found(value)}")
        elif self.split is None and value not in layout.SPLITS:
            self.add("split", f"expected one of {', '.join(layout.SPLITS)}, found {_found(value)}")
        return value if isinstance(value, str) else (self.split or "")

    def _build(self, raw) -> str | None:
        build = raw.get("build")
        if build is None:
            return None  # builds before build ids
        if not _is_build_id(build):
            self.add("build", f"expected {layout.BUILD_ID_LENGTH} lowercase hex digits, found {_found(build)}")
            return None
        return build

    def _config(self, raw) -> BuildConfig:
        for key, problem in config.problems(raw).items():  # anything but an object has none of the keys
            self.add(f"config.{key}", problem)
        return BuildConfig.salvage(raw)

    def _counts(self, raw) -> dict:
        if not isinstance(raw, dict):
            self.add("counts", f"expected a JSON object of {', '.join(COUNT_KEYS)}, found {_found(raw)}")
            raw = {}
        counts = {}
        for key in COUNT_KEYS:
            value = raw.get(key)
            if _is_count(value):
                counts[key] = value
            else:
                self.add(f"counts.{key}", f"expected an integer in [0, {MAX_COUNT}], found {_found(value) if key in raw else 'nothing'}")
                counts[key] = None
        if all(v is not None for v in counts.values()):
            for broken in count_imbalances(counts):
                self.add("counts", broken, check="counts")
        return counts

    def _shards(self, raw) -> tuple[ShardEntry, ...]:
        if not isinstance(raw, list):
            raise ManifestError(f"{self.path}: shards: expected a list of shard entries, found {_found(raw)}")
        if not raw:
            raise ManifestError(f"{self.path}: shards: expected at least one shard, found none")
        entries, first = [], {}
        for position, item in enumerate(raw):
            entry = self._shard(position, item)
            if entry.file in first:
                self.add(f"shards[{position}].file", f"expected each shard named once, found {entry.file!r} again (shards[{first[entry.file]}])")
                continue
            first[entry.file] = position
            entries.append(entry)
        return tuple(entries)

    def _shard(self, position: int, raw) -> ShardEntry:
        where = f"shards[{position}]"
        if not isinstance(raw, dict):
            raise self.fatal(where, f"expected an object with file, records, bytes and sha256, found {_found(raw)}")
        file, records, size, sha256 = (raw.get(key) for key in ("file", "records", "bytes", "sha256"))
        # A name with a directory part would have the readers open a file outside data_dir.
        if not is_plain_name(file):
            raise self.fatal(f"{where}.file", f"expected a file name in the data directory, found {_found(file)}")
        if not _is_count(records):
            raise self.fatal(f"{where}.records", f"expected an integer in [0, {MAX_COUNT}], found {_found(records)}")
        if not _is_count(size, MAX_BYTES):
            raise self.fatal(f"{where}.bytes", f"expected an integer in [0, {MAX_BYTES}], found {_found(size)}")
        if size < RECORD_FRAMING_BYTES * records:
            raise self.fatal(f"{where}.bytes", f"expected at least {RECORD_FRAMING_BYTES} bytes a record ({records} records), found {size}")
        if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
            raise self.fatal(f"{where}.sha256", f"expected 64 lowercase hex digits, found {_found(sha256)}")
        return ShardEntry(file, records, size, sha256)

    def _sums(self, counts: dict, shards: tuple[ShardEntry, ...]) -> None:
        in_entries = sum(entry.records for entry in shards)
        if counts["records"] is not None and counts["records"] != in_entries:
            self.add("counts.records", f"expected the shard entries' records, {in_entries}, found {counts['records']}", check="counts")

    def _errors(self, raw, counts: dict, split: str, build: str | None) -> None:
        if "errors_file" in raw:
            named = raw["errors_file"]
            if not is_plain_name(named):
                self.add("errors_file", f"expected a file name in the data directory, found {_found(named)}")
            elif build is not None and named != layout.errors_name(split, build):
                self.add("errors_file", f"expected {layout.errors_name(split, build)!r}, found {_found(named)}")
        if "error_reasons" not in raw:
            return
        reasons = raw["error_reasons"]
        if not isinstance(reasons, dict) or not all(_is_count(v) for v in reasons.values()):
            self.add("error_reasons", f"expected an object of reason: count (integers >= 0), found {_found(reasons)}")
        elif counts["errors"] is not None and sum(reasons.values()) != counts["errors"]:
            self.add("error_reasons", f"expected counts adding up to counts.errors {counts['errors']}, found {sum(reasons.values())}",
                     check="counts")

    def _reuse(self, raw, counts: dict) -> None:
        block = raw.get("reuse")
        if block is None:
            return
        if not isinstance(block, dict):
            self.add("reuse", f"expected an object with from, reused, prepared and notes, found {_found(block)}")
            return
        earlier = block.get("from")
        if earlier is not None and not _is_build_id(earlier):
            self.add("reuse.from", f"expected null or {layout.BUILD_ID_LENGTH} lowercase hex digits, found {_found(earlier)}")
        for key in ("reused", "prepared"):
            if not _is_count(block.get(key)):
                self.add(f"reuse.{key}", f"expected an integer in [0, {MAX_COUNT}], found {_found(block.get(key))}")
        notes = block.get("notes")
        if not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
            self.add("reuse.notes", f"expected a list of strings, found {_found(notes)}")
        reused, prepared, annotated = block.get("reused"), block.get("prepared"), counts["images_annotated"]
        if _is_count(reused) and _is_count(prepared) and annotated is not None and reused + prepared != annotated:
            self.add("reuse", f"expected reused + prepared = counts.images_annotated {annotated}, found {reused} + {prepared}",
                     check="counts")

    def _others(self, raw) -> None:
        keys = raw.get("record_keys")
        if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            self.add("record_keys", f"expected a list of feature keys, found {_found(keys)}")
        prepared = raw.get("preparation")
        if prepared is not None and not (
            isinstance(prepared, dict) and all(isinstance(v, str) or config.is_int(v) for v in prepared.values())
        ):
            self.add("preparation", f"expected an object of library: version, found {_found(prepared)}")

    def _non_finite(self, raw) -> None:
        """A number that is not a finite double anywhere else (in keys no rule above reads)."""
        named = {p.field for p in self.problems}
        stack = [("", raw)]
        while stack:
            where, value = stack.pop()
            if isinstance(value, NonFinite):
                if not any(where == n or where.startswith(n + ".") or where.startswith(n + "[") for n in named):
                    self.add(where, f"expected a finite number, found {value!r}")
            elif isinstance(value, dict):
                stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(value.items()))
            elif isinstance(value, list):
                stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
