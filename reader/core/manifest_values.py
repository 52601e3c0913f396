"""The values a split's manifest holds, and the rules each obeys: every number, name and digest
read from `{split}.manifest.json` is checked here before anything uses it (reader.core.manifest
reads the file and builds its Manifest from what `Validator` returns).

    loads        the manifest's JSON, numbers that are not finite doubles kept as NonFinite
    ShardEntry   one shard as the manifest lists it
    Validator    every value's type, finiteness and range, the sums, the laws -> Problems
No Beam, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

from reader.core import config, layout, schema
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

    @classmethod
    def from_json(cls, raw) -> ShardEntry:
        """The entry `raw` (a decoded shard entry) is; raises ManifestError naming the field."""
        return Validator("shard entry", None).shard_entry(0, raw)


def is_plain_name(name) -> bool:
    """A file name inside the data directory: no directory part."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


_found = config.found_text  # a found value, short and on one line


def _is_count(value, upper: int = MAX_COUNT) -> bool:
    return config.is_int(value) and 0 <= value <= upper


def _is_build_id(value) -> bool:
    return isinstance(value, str) and re.fullmatch(rf"[0-9a-f]{{{layout.BUILD_ID_LENGTH}}}", value) is not None


class Validator:
    """Checks a decoded manifest value by value, collecting a Problem for each wrong one."""

    def __init__(self, path: str, split: str | None):
        """path: names the manifest in errors; split: the one it must say (None: any)."""
        self.path, self.split = path, split
        self.problems: list[Problem] = []

    def add(self, field: str, message: str, check: str = "manifest") -> None:
        self.problems.append(Problem(field, message, check))

    def fatal(self, field: str, message: str) -> ManifestError:
        """The error for a problem that leaves nothing to check, salvaging or not."""
        return ManifestError(f"{self.path}: {field}: {message}")

    def values(self, raw) -> tuple[str, BuildConfig, dict, tuple[ShardEntry, ...]]:
        """(split, config, counts, shards) of a decoded manifest; raises ManifestError when nothing
        can be checked, adds a Problem for every other wrong value."""
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
        shards = self._shards(raw["shards"], split, build)
        self._sums(counts, shards)
        self._errors(raw, counts, split, build)
        self._reuse(raw, counts)
        self._others(raw)
        self._non_finite(raw)
        return split, built_config, counts, shards

    def _split(self, value) -> str:
        if self.split is not None and value != self.split:
            self.add("split", f"expected {self.split!r}, found {_found(value)}")
        elif self.split is None and value not in layout.SPLITS:
            self.add("split", f"expected one of {', '.join(layout.SPLITS)}, found {_found(value)}")
        if self.split is not None:
            return self.split  # the file's own split: what its names and messages go by
        return value if isinstance(value, str) else ""

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
                self.add(
                    f"counts.{key}",
                    f"expected an integer in [0, {MAX_COUNT}], found {_found(value) if key in raw else 'nothing'}",
                )
                counts[key] = None
        if all(v is not None for v in counts.values()):
            for broken in count_imbalances(counts):
                self.add("counts", broken, check="counts")
        return counts

    def _shards(self, raw, split: str, build: str | None) -> tuple[ShardEntry, ...]:
        if not isinstance(raw, list):
            raise ManifestError(f"{self.path}: shards: expected a list of shard entries, found {_found(raw)}")
        if not raw:
            raise ManifestError(f"{self.path}: shards: expected at least one shard, found none")
        entries, first = [], {}
        for position, item in enumerate(raw):
            entry = self.shard_entry(position, item)
            if entry.file in first:
                self.add(
                    f"shards[{position}].file",
                    f"expected each shard named once, found {entry.file!r} again (shards[{first[entry.file]}])",
                )
                continue
            first[entry.file] = position
            entries.append(entry)
        if len(entries) == len(raw) and split:  # named as a build names them: in order, of this count, this build's
            for position, entry in enumerate(entries):
                expected = layout.shard_name(split, position, len(entries), build)
                if entry.file != expected:
                    self.add(f"shards[{position}]", f"expected file {expected!r}, found {entry.file!r}")
        return tuple(entries)

    def shard_entry(self, position: int, raw) -> ShardEntry:
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
            raise self.fatal(
                f"{where}.bytes", f"expected at least {RECORD_FRAMING_BYTES} bytes a record ({records} records), found {size}"
            )
        if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
            raise self.fatal(f"{where}.sha256", f"expected 64 lowercase hex digits, found {_found(sha256)}")
        return ShardEntry(file, records, size, sha256)

    def _sums(self, counts: dict, shards: tuple[ShardEntry, ...]) -> None:
        in_entries = sum(entry.records for entry in shards)
        if counts["records"] is not None and counts["records"] != in_entries:
            self.add(
                "counts.records", f"expected the shard entries' records, {in_entries}, found {counts['records']}", check="counts"
            )

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
            self.add(
                "error_reasons",
                f"expected counts adding up to counts.errors {counts['errors']}, found {sum(reasons.values())}",
                check="counts",
            )

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
            self.add(
                "reuse",
                f"expected reused + prepared = counts.images_annotated {annotated}, found {reused} + {prepared}",
                check="counts",
            )

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
