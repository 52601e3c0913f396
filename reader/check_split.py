"""Checks one split of a build directory: `check_split(data_dir, split) -> SplitCheck`.

    manifest      -> config for the record checks, the shard list, the counts
    directory     -> shard set (missing, stale, temp files)
    each shard    -> indexed here (headers only); then hashed and its records checked in worker
                     processes, in chunks, so that every core is busy whatever the shard sizes
    all records   -> placement, duplicates, leakage into other splits, counts, statistics

Library code: plain arguments in, a report out; the flags live in `reader.check`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from reader import boxes, check_records, check_shards, layout, manifest, schema
from reader.check_report import CHECKS, Problem, Report
from reader.check_stats import Statistics

RECOMPUTED_COUNTS = ("faces_stored", "targets", "dropped", "ignored")
ERROR_FIELDS = {"filename": str, "line": int, "reason": str, "detail": str, "faces": int}
INLINE_BELOW = 256  # records: fewer are checked in this process; worker start-up would cost more

Progress = Callable[[int, int], None]  # (records done, records in all)


@dataclasses.dataclass(frozen=True)
class CheckedRecord:
    """One record as checked: where it is, its facts (None if unreadable), the checks it failed."""

    file: str
    index: int
    facts: check_records.RecordFacts | None
    failed: frozenset[str]


@dataclasses.dataclass(frozen=True)
class SplitCheck:
    """The report, and what a contact sheet needs: every record checked and where shards are."""

    report: Report
    records: tuple[CheckedRecord, ...]
    config: check_records.RecordConfig
    paths: dict[str, str]  # shard file -> path
    indexes: dict[str, check_shards.ShardIndex]  # shard file -> its record spans


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def list_dir(data_dir: str) -> list[str]:
    """File names in the data directory (local, or gs:// and s3:// through tf.io.gfile)."""
    if manifest.is_local(data_dir):
        return sorted(os.listdir(data_dir.removeprefix("file://")))
    import tensorflow as tf

    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(data_dir))


class _Findings:
    """Problems, notes and skipped checks, gathered as the checks run."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.notes: dict[str, list[str]] = collections.defaultdict(list)
        self.skipped: dict[str, str] = {}

    def add(self, check: str, file: str, record: int | None, message: str) -> None:
        self.problems.append(Problem(check, file, record, message))

    def note(self, check: str, text: str) -> None:
        if text not in self.notes[check]:
            self.notes[check].append(text)


def check_split(
    data_dir: str,
    split: str,
    *,
    workers: int | None = None,
    leakage: bool = True,
    progress: Progress | None = None,
) -> SplitCheck:
    """Runs every check on `split` in `data_dir`.

    workers: processes for the record checks (None: one per available core; 1: this process).
    leakage: also read the other splits in the directory to find shared source images.
    progress: called with (records done, records in all) as work completes.
    """
    start = time.perf_counter()
    findings = _Findings()
    manifest_file = layout.manifest_name(split)
    try:
        built = manifest.load(data_dir, split)
    except manifest.ManifestError as e:
        findings.add("manifest", manifest_file, None, str(e).removeprefix(manifest.join(data_dir, manifest_file) + ": "))
        for name in CHECKS:
            if name != "manifest":
                findings.skipped[name] = "no readable manifest"
        report = _report(data_dir, split, findings, None, 0, start)
        return SplitCheck(report, (), check_records.RecordConfig(), {}, {})

    workers = workers or default_workers()
    config = _check_manifest(built, split, findings)
    present = set(list_dir(data_dir))
    listed = _check_shard_set(built, split, present, findings)
    paths = {entry.file: manifest.join(data_dir, entry.file) for entry in listed}

    indexes = {}
    for entry in listed:
        try:
            indexes[entry.file] = check_shards.index_shard(paths[entry.file], entry.file)
        except OSError as e:  # a directory of that name, no permission, ...
            findings.add("shard_files", entry.file, None, f"unreadable: {e}")
    listed = [entry for entry in listed if entry.file in indexes]
    for entry in listed:
        index = indexes[entry.file]
        if index.error is not None:
            findings.add("framing", entry.file, index.error.index,
                         f"at byte {index.error.offset}: {index.error.problem}; the records after it are not checked")
            findings.note("record_counts", "not compared for shards with broken framing")
        elif len(index.spans) != entry.records:
            findings.add("record_counts", entry.file, None,
                         f"the manifest says {entry.records} records, the shard holds {len(index.spans)}")

    others = _other_splits(data_dir, split, present) if leakage else {}
    tasks = _tasks(listed, paths, indexes, config, others, workers)
    results = _run(tasks, workers, progress)

    hashes: dict[str, check_shards.HashResult] = {}
    checked: dict[str, list[CheckedRecord]] = {entry.file: [] for entry in listed}
    other_keys: dict[str, tuple[str, int, str]] = {}
    for result in results:
        if isinstance(result, check_shards.HashResult):
            hashes[result.file] = result
        elif isinstance(result, check_shards.ChunkResult):
            for record in result.records:
                for check, message in record.problems:
                    findings.add(check, result.file, record.index, message)
                failed = frozenset(check for check, _ in record.problems)
                checked[result.file].append(CheckedRecord(result.file, record.index, record.facts, failed))
        else:
            if result.error:
                findings.note("leakage", f"{result.file} read only up to its damage ({result.error})")
            for index, sha256, filename in result.keys:
                other_keys.setdefault(sha256, (result.file, index, filename))
    records = tuple(r for entry in listed for r in sorted(checked[entry.file], key=lambda r: r.index))

    for entry in listed:
        if entry.file in hashes:
            _compare_hash(entry, hashes[entry.file], findings)
    _check_placement(listed, records, findings)
    unusable = _read_errors(data_dir, split, findings)
    _check_duplicates(records, unusable, split, findings)
    if not leakage:
        findings.skipped["leakage"] = "not asked for (--noleakage)"
    elif not others:
        findings.skipped["leakage"] = "no other split in the directory"
    else:
        findings.note("leakage", "against " + ", ".join(f"{name} ({len(files)} shards)" for name, files in others.items()))
        _check_leakage(records, other_keys, findings)
    complete = len(listed) == len(built.shards) and all(indexes[e.file].complete for e in listed)
    _check_counts(built, records, unusable, complete, findings)

    readable = [r.facts for r in records if r.facts is not None]
    stats = Statistics.compute(
        readable,
        {e.file: len(indexes[e.file].spans) for e in listed},
        {e.file: hashes[e.file].bytes for e in listed if e.file in hashes},
    )
    report = _report(data_dir, split, findings, stats, len(records), start)
    return SplitCheck(report, records, config, paths, indexes)


def _report(data_dir, split, findings: _Findings, stats, records: int, start: float) -> Report:
    notes = {check: "; ".join(texts) for check, texts in findings.notes.items()}
    return Report.make(data_dir, split, findings.problems, notes, findings.skipped, stats, records, time.perf_counter() - start)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_manifest(built: manifest.Manifest, split: str, findings: _Findings) -> check_records.RecordConfig:
    """Checks the manifest's split and config; returns the record config (defaults where the
    manifest's value is unusable, so that the records are still checked)."""
    file = layout.manifest_name(split)
    if built.split != split:
        findings.add("manifest", file, None, f"split: expected {split!r}, found {built.split!r}")
    c = built.config
    size = c.get("input_size") if _is_int(c.get("input_size")) else None
    rules = {
        "input_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "grid_size": (lambda v: _is_int(v) and 1 <= v <= (size or v), "an integer in [1, input_size]"),
        "min_face_px": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "image_format": (lambda v: v in schema.IMAGE_FORMATS, f"one of {schema.IMAGE_FORMATS}"),
        "resize": (lambda v: v in boxes.RESIZE_MODES, f"one of {boxes.RESIZE_MODES}"),
        "jpeg_quality": (lambda v: _is_int(v) and 1 <= v <= 100, "an integer in [1, 100]"),
    }
    good = {}
    for key, (ok, expected) in rules.items():
        if key not in c:
            findings.add("manifest", file, None, f"config.{key}: missing (expected {expected})")
        elif not ok(c[key]):
            findings.add("manifest", file, None, f"config.{key}: expected {expected}, found {c[key]!r}")
        else:
            good[key] = c[key]
    for key in manifest.COUNT_KEYS:
        value = built.counts.get(key)
        if not _is_int(value) or value < 0:
            findings.add("manifest", file, None, f"counts.{key}: expected an integer >= 0, found {value!r}")

    for position, entry in enumerate(built.shards):
        parsed = layout.parse_shard_name(entry.file)
        if parsed != (split, position, len(built.shards)):
            findings.add("manifest", file, None,
                         f"shards[{position}]: expected file {layout.shard_name(split, position, len(built.shards))!r}, "
                         f"found {entry.file!r}")
    if not built.shards:
        findings.add("manifest", file, None, "shards: expected at least one shard, found none")
    input_size = good.get("input_size", 224)
    grid_size = good.get("grid_size", 7)
    return check_records.RecordConfig(
        input_size=input_size,
        grid_size=grid_size if grid_size <= input_size else min(7, input_size),
        min_face_px=float(good.get("min_face_px", 0.0)),
        image_format=good.get("image_format"),
        resize=good.get("resize", "stretch"),
    )


def _check_shard_set(built: manifest.Manifest, split: str, present: set[str], findings: _Findings) -> list[manifest.ShardEntry]:
    """Missing, stale and temporary files; returns the manifest's shards that are present."""
    listed = {entry.file for entry in built.shards}
    num_shards = len(built.shards)
    for entry in built.shards:
        if entry.file not in present:
            findings.add("shard_set", entry.file, None, "missing: the manifest lists it, the directory does not hold it")
    temp_prefix = layout.temp_glob(split).rstrip("*")
    for name in sorted(present - listed):
        parsed = layout.parse_shard_name(name)
        if parsed is not None and parsed[0] == split:
            if parsed[2] != num_shards:
                findings.add("shard_set", name, None,
                             f"stale shard of a build of {parsed[2]} shards (this build has {num_shards}); not in the manifest")
            else:
                findings.add("shard_set", name, None, "not in the manifest")
        elif name.startswith(temp_prefix):
            findings.add("shard_set", name, None,
                         "temporary file of a build that did not finish; a finished build removes it")
    return [entry for entry in built.shards if entry.file in present]


def _other_splits(data_dir: str, split: str, present: set[str]) -> dict[str, list[tuple[str, str, int]]]:
    """Other splits in the directory: name -> [(path, file, records)] of their shards, from their
    manifest when it is readable, else every shard of theirs present."""
    others = {}
    for other in layout.SPLITS:
        if other == split:
            continue
        try:
            other_manifest = manifest.load(data_dir, other)
            shards = [(s.file, s.records) for s in other_manifest.shards if s.file in present]
        except manifest.ManifestError:
            shards = [(name, 0) for name in sorted(present) if (layout.parse_shard_name(name) or ("",))[0] == other]
        if shards:
            others[other] = [(manifest.join(data_dir, file), file, records) for file, records in shards]
    return others


def _tasks(listed, paths, indexes, config, others, workers: int) -> list[check_shards.Task]:
    """Whole-shard tasks first (they are the longest), then the record chunks."""
    total = sum(len(index.spans) for index in indexes.values())
    chunk = max(16, min(256, math.ceil(total / max(1, workers * 8))))
    tasks: list[check_shards.Task] = [check_shards.HashTask(paths[e.file], e.file) for e in listed]
    tasks += [check_shards.KeysTask(path, file, records) for shards in others.values() for path, file, records in shards]
    for entry in listed:
        tasks += check_shards.chunk_tasks(paths[entry.file], indexes[entry.file], config, chunk)
    return tasks


def _weight(task_or_result) -> int:
    if isinstance(task_or_result, (check_shards.ChunkTask, check_shards.KeysTask)):
        return task_or_result.records
    if isinstance(task_or_result, check_shards.ChunkResult):
        return len(task_or_result.records)
    if isinstance(task_or_result, check_shards.KeysResult):
        return len(task_or_result.keys)
    return 0


def _run(tasks: list[check_shards.Task], workers: int, progress: Progress | None) -> Iterator[check_shards.Result]:
    """Runs the tasks in `workers` processes (or inline for small jobs); yields results as they
    complete, reporting progress in records."""
    total = sum(_weight(t) for t in tasks)
    chunk_records = sum(t.records for t in tasks if isinstance(t, check_shards.ChunkTask))
    done = 0
    if progress:
        progress(0, total)
    if workers <= 1 or chunk_records < INLINE_BELOW or len(tasks) == 1:
        results: Iterable = map(check_shards.run_task, tasks)
        pool = None
    else:
        pool = _start_method().Pool(min(workers, len(tasks)))
        results = pool.imap_unordered(check_shards.run_task, tasks)
    try:
        for result in results:
            done = min(total, done + _weight(result))
            if progress:
                progress(done, total)
            yield result
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _start_method():
    """fork when it is safe, spawn otherwise.

    Forking skips each worker's interpreter start and imports (a third of a second of CPU per
    worker, a fifth of the whole check of the val split), but a forked child inherits every
    lock as it was: only a process with no other thread (no TensorFlow loaded, no test runner
    thread) may fork. Spawned workers import only numpy, Pillow and reader.
    """
    if sys.platform == "linux" and threading.active_count() == 1 and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _compare_hash(entry: manifest.ShardEntry, found: check_shards.HashResult, findings: _Findings) -> None:
    if found.bytes != entry.bytes:
        findings.add("shard_files", entry.file, None, f"size {found.bytes:,} bytes, the manifest says {entry.bytes:,}")
    if found.sha256 != entry.sha256:
        findings.add("shard_files", entry.file, None, f"sha256 {found.sha256}, the manifest says {entry.sha256}")


def _check_placement(listed, records: tuple[CheckedRecord, ...], findings: _Findings) -> None:
    by_file = collections.defaultdict(list)
    for record in records:
        if record.facts is not None:
            by_file[record.file].append(record)
    for entry in listed:
        _, shard_index, num_shards = layout.parse_shard_name(entry.file) or (None, None, None)
        if shard_index is None:
            continue  # the manifest check names the odd file name
        previous: CheckedRecord | None = None
        previous_key = b""
        for record in by_file[entry.file]:
            key = layout.record_key(record.facts.filename)
            home = layout.shard_of(record.facts.filename, num_shards)
            if home != shard_index:
                findings.add("placement", entry.file, record.index,
                             f"{record.facts.filename!r} belongs in shard {home} of {num_shards} by its filename hash")
            elif key < previous_key:
                findings.add("placement", entry.file, record.index,
                             f"out of order: the filename hash of {record.facts.filename!r} sorts before record "
                             f"{previous.index}'s")
            if home == shard_index:
                previous, previous_key = record, key


@dataclasses.dataclass(frozen=True)
class UnusableImage:
    """A line of errors.jsonl."""

    line: int
    filename: str
    reason: str
    faces: int


def _read_errors(data_dir: str, split: str, findings: _Findings) -> list[UnusableImage] | None:
    """The entries of errors.jsonl, or None when it is missing or unreadable (a counts problem)."""
    file = layout.errors_name(split)
    try:
        with manifest.open_binary(manifest.join(data_dir, file)) as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        findings.add("counts", file, None, "missing: a build always writes it (empty when every image was usable)")
        return None
    except (OSError, UnicodeDecodeError) as e:
        findings.add("counts", file, None, f"unreadable: {e}")
        return None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in ERROR_FIELDS.items()):
                raise ValueError
        except ValueError:
            findings.add("counts", file, None,
                         f"line {number}: expected a JSON object with {', '.join(ERROR_FIELDS)}, found {line[:80]!r}")
            continue
        entries.append(UnusableImage(number, entry["filename"], entry["reason"], entry["faces"]))
    return entries


def _check_duplicates(records, unusable: list[UnusableImage] | None, split: str, findings: _Findings) -> None:
    by_name: dict[str, CheckedRecord] = {}
    by_sha: dict[str, CheckedRecord] = {}
    for record in records:
        if record.facts is None:
            continue
        name, sha = record.facts.filename, record.facts.sha256
        first_name, first_sha = by_name.get(name), by_sha.get(sha)
        where = lambda r: f"{r.file}:{r.index}"  # noqa: E731
        if first_name is not None and first_name is first_sha:
            findings.add("duplicates", record.file, record.index,
                         f"duplicate of {where(first_name)}: same filename {name!r} and source sha256")
        elif first_name is not None:
            findings.add("duplicates", record.file, record.index,
                         f"filename {name!r} also at {where(first_name)}, with another source sha256")
        elif first_sha is not None:
            findings.add("duplicates", record.file, record.index,
                         f"source sha256 {sha} also at {where(first_sha)} ({first_sha.facts.filename!r}), "
                         f"here as {name!r}")
        by_name.setdefault(name, record)
        by_sha.setdefault(sha, record)
    for entry in unusable or ():
        if entry.filename in by_name:
            record = by_name[entry.filename]
            findings.add("duplicates", record.file, record.index,
                         f"{entry.filename!r} is also listed as unusable in {layout.errors_name(split)} line {entry.line}")


def _check_leakage(records, other_keys: dict[str, tuple[str, int, str]], findings: _Findings) -> None:
    for record in records:
        if record.facts is not None and record.facts.sha256 in other_keys:
            file, index, filename = other_keys[record.facts.sha256]
            findings.add("leakage", record.file, record.index,
                         f"source image {record.facts.filename!r} (sha256 {record.facts.sha256[:16]}...) is also in "
                         f"{file}:{index} as {filename!r}")


def _check_counts(built: manifest.Manifest, records, unusable, complete: bool, findings: _Findings) -> None:
    file = layout.manifest_name(built.split)
    counts = {key: built.counts.get(key) for key in manifest.COUNT_KEYS}
    if not all(_is_int(v) for v in counts.values()):
        findings.note("counts", "laws not checked: counts missing from the manifest")
    else:
        for broken in manifest.count_imbalances(counts):
            findings.add("counts", file, None, broken)
    in_entries = sum(entry.records for entry in built.shards)
    if _is_int(counts["records"]) and counts["records"] != in_entries:
        findings.add("counts", file, None, f"counts.records {counts['records']}, the shard entries add up to {in_entries}")

    readable = [r.facts for r in records if r.facts is not None]
    if complete and len(readable) == len(records):
        found = {"records": len(readable), "faces_stored": sum(f.faces for f in readable)}
        found.update({key: sum(getattr(f, key) for f in readable) for key in ("targets", "dropped", "ignored")})
        for key, value in found.items():
            if _is_int(counts[key]) and counts[key] != value:
                how = "the shards hold" if key == "records" else "recomputed from the records"
                findings.add("counts", file, None, f"counts.{key} {counts[key]}, {how} {value}")
    else:
        unreadable = len(records) - len(readable)
        findings.note("counts", "record totals not compared: "
                      + (f"{unreadable} unreadable record{'s' if unreadable != 1 else ''}" if unreadable else "shards missing or damaged"))

    if unusable is not None:
        reasons = collections.Counter(e.reason for e in unusable)
        if _is_int(counts["errors"]) and counts["errors"] != len(unusable):
            findings.add("counts", file, None,
                         f"counts.errors {counts['errors']}, {layout.errors_name(built.split)} has {len(unusable)} entries")
        faces = sum(e.faces for e in unusable)
        if _is_int(counts["faces_in_errors"]) and counts["faces_in_errors"] != faces:
            findings.add("counts", file, None,
                         f"counts.faces_in_errors {counts['faces_in_errors']}, {layout.errors_name(built.split)} adds up to {faces}")
        stated = built.raw.get("error_reasons")
        if stated is not None and stated != dict(reasons):
            findings.add("counts", file, None,
                         f"error_reasons {stated}, {layout.errors_name(built.split)} has {dict(sorted(reasons.items()))}")
