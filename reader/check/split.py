"""Checks one split of a build directory: `check_split(data_dir, split) -> SplitCheck`.

    manifest      -> config for the record checks, the shard list, the counts (check_manifest)
    directory     -> shard set: missing shards, files of this build the manifest does not name;
                     other builds' files are noted, not failed (check_manifest)
    each shard    -> indexed here (headers only); then hashed and its records checked in worker
                     processes, in chunks, so that every core is busy whatever the shard sizes
    all records   -> placement, duplicates, leakage into other splits, counts, statistics

Library code: plain arguments in, a report out; the flags live in `reader.check`. Reads local,
gs:// and s3:// directories (reader.core.manifest); worker processes get this process's s3 settings.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from reader.check import manifest as check_manifest
from reader.check import records as check_records
from reader.check import shards as check_shards
from reader.check.manifest import UnusableImage
from reader.check.report import CHECKS, Findings, Report
from reader.check.stats import Statistics
from reader.core import layout, manifest

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
    """File names in the data directory (local, gs:// or s3://)."""
    return manifest.list_dir(data_dir)


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
    findings = Findings()
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
    config = check_manifest.check_manifest(built, split, findings)
    try:
        present = set(list_dir(data_dir))
    except OSError as e:  # gone since the manifest was read, or the store refuses to list
        findings.add("shard_set", ".", None, f"cannot list the data directory: {e}")
        present = {entry.file for entry in built.shards}  # then reading each shard says what is wrong
    listed = check_manifest.check_shard_set(built, split, present, findings)
    paths = {entry.file: manifest.join(data_dir, entry.file) for entry in listed}

    indexes = {}
    for entry in listed:
        try:
            indexes[entry.file] = check_shards.index_shard(paths[entry.file], entry.file)
        except FileNotFoundError:  # listed, then gone: removed by a build that committed since
            findings.add("shard_set", entry.file, None, "missing: removed while the check ran")
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

    others = _other_splits(data_dir, split, present, findings) if leakage else {}
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
        elif isinstance(result, check_shards.FailedTask):
            if result.kind == "keys":
                findings.note("leakage", f"{result.file} not read ({result.error})")
            else:
                findings.add("shard_files", result.file, None, f"unreadable while checking: {result.error}")
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
    unusable = check_manifest.read_errors(built, findings)
    _check_duplicates(records, unusable, built.errors_file, findings)
    if not leakage:
        findings.skipped["leakage"] = "not asked for (--noleakage)"
    elif not others:
        findings.skipped["leakage"] = "no other split in the directory"
    else:
        findings.note("leakage", "against " + ", ".join(f"{name} ({len(files)} shards)" for name, files in others.items()))
        _check_leakage(records, other_keys, findings)
    complete = len(listed) == len(built.shards) and all(indexes[e.file].complete for e in listed)
    readable = [r.facts for r in records if r.facts is not None]
    check_manifest.check_counts(built, readable, len(records) - len(readable), complete, unusable, findings)

    stats = Statistics.compute(
        readable,
        {e.file: len(indexes[e.file].spans) for e in listed},
        {e.file: hashes[e.file].bytes for e in listed if e.file in hashes},
    )
    report = _report(data_dir, split, findings, stats, len(records), start)
    return SplitCheck(report, records, config, paths, indexes)


def _report(data_dir, split, findings: Findings, stats, records: int, start: float) -> Report:
    notes = {check: "; ".join(texts) for check, texts in findings.notes.items()}
    return Report.make(data_dir, split, findings.problems, notes, findings.skipped, stats, records, time.perf_counter() - start)


def _other_splits(data_dir: str, split: str, present: set[str], findings: Findings) -> dict[str, list[tuple[str, str, int]]]:
    """Other splits in the directory: name -> [(path, file, records)] of their shards, from their
    manifest when it is readable, else every shard of theirs present. Shards their manifest
    lists that are missing are noted: leakage into them cannot be looked for."""
    others = {}
    for other in layout.SPLITS:
        if other == split:
            continue
        try:
            other_manifest = manifest.load(data_dir, other)
            shards = [(s.file, s.records) for s in other_manifest.shards if s.file in present]
            if missing := len(other_manifest.shards) - len(shards):
                findings.note("leakage", f"{missing} of {len(other_manifest.shards)} shards of {other} missing: not compared")
            listed = True
        except manifest.ManifestError:
            shards = [(name, 0) for name in sorted(present) if (layout.parse_shard_name(name) or ("",))[0] == other]
            listed = False
        if shards or listed:
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
        # Spawned workers start with default s3 settings: hand them this process's.
        pool = _start_method().Pool(min(workers, len(tasks)), initializer=manifest.configure_s3, initargs=(manifest.s3_settings(),))
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


def _compare_hash(entry: manifest.ShardEntry, found: check_shards.HashResult, findings: Findings) -> None:
    if found.bytes != entry.bytes:
        findings.add("shard_files", entry.file, None, f"size {found.bytes:,} bytes, the manifest says {entry.bytes:,}")
    if found.sha256 != entry.sha256:
        findings.add("shard_files", entry.file, None, f"sha256 {found.sha256}, the manifest says {entry.sha256}")


def _check_placement(listed, records: tuple[CheckedRecord, ...], findings: Findings) -> None:
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


def _check_duplicates(records, unusable: list[UnusableImage] | None, errors_file: str, findings: Findings) -> None:
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
                         f"{entry.filename!r} is also listed as unusable in {errors_file} line {entry.line}")
    # image/source_id must be unique for TF Model Garden: two filenames may hash alike.
    records = list(records)
    for position, first in check_records.source_id_duplicates(r.facts for r in records):
        record, earlier = records[position], records[first]
        if record.facts.filename != earlier.facts.filename:  # the same filename twice is said above
            findings.add("duplicates", record.file, record.index,
                         f"image/source_id {record.facts.source_id} also at {earlier.file}:{earlier.index} "
                         f"({earlier.facts.filename!r}), here for {record.facts.filename!r}")


def _check_leakage(records, other_keys: dict[str, tuple[str, int, str]], findings: Findings) -> None:
    for record in records:
        if record.facts is not None and record.facts.sha256 in other_keys:
            file, index, filename = other_keys[record.facts.sha256]
            findings.add("leakage", record.file, record.index,
                         f"source image {record.facts.filename!r} (sha256 {record.facts.sha256[:16]}...) is also in "
                         f"{file}:{index} as {filename!r}")
