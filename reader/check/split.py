"""Checks one split of a build directory: `check_split(data_dir, split) -> SplitCheck`.

`check_split` is the sequence of steps; each step is a function of this module or of the
modules it hands work to:
    manifest      -> config for the record checks, the shard list, the counts (check_manifest)
    directory     -> shard set: missing shards, files of this build the manifest does not name;
                     other builds' files are noted, not failed (check_manifest)
    each shard    -> indexed here (headers only), its framing and record count compared
    tasks         -> hashes and record checks of every shard, other splits' keys: planned and
                     run in worker processes by reader.check.runner, their results gathered here
    all records   -> shard hashes against the manifest; placement, duplicates and leakage
                     into other splits (across_records); counts (check_manifest); statistics

Library code: plain arguments in, a report out; the flags live in `reader.check`. Reads local,
gs:// and s3:// directories (reader.core.storage); worker processes get this process's storage settings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence

from reader.check import across_records, runner
from reader.check import manifest as check_manifest
from reader.check import shards as check_shards
from reader.check.across_records import CheckedRecord, OtherKeys
from reader.check.findings import CHECKS, Findings, Report
from reader.check.runner import Progress, default_workers
from reader.check.stats import Statistics
from reader.core import layout, manifest, storage
from reader.core.config import BuildConfig
from reader.core.manifest import ErrorEntry, ShardEntry

__all__ = ["CheckedRecord", "Progress", "SplitCheck", "check_split", "default_workers"]

OtherSplits = dict[str, list[tuple[str, str, int]]]  # split -> [(path, file, records)] of its shards


@dataclasses.dataclass(frozen=True)
class SplitCheck:
    """The report, and what a contact sheet needs: every record checked and where shards are."""

    report: Report
    records: tuple[CheckedRecord, ...]
    config: BuildConfig
    paths: dict[str, str]  # shard file -> path
    indexes: dict[str, check_shards.ShardIndex]  # shard file -> its record spans


@dataclasses.dataclass(frozen=True)
class _Gathered:
    """What the tasks returned: every record checked (in shard order, then record order), each
    shard's size and hash, and the other splits' keys."""

    records: tuple[CheckedRecord, ...]
    hashes: dict[str, check_shards.HashResult]
    other_keys: OtherKeys


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
    try:
        built = manifest.load(data_dir, split, salvage=True)
    except manifest.ManifestError as e:
        return _without_manifest(data_dir, split, e, findings, start)

    config = check_manifest.check_manifest(built, split, findings)
    present = _present_files(data_dir, built, findings)
    listed = check_manifest.check_shard_set(built, split, present, findings)
    paths = {entry.file: storage.join(data_dir, entry.file) for entry in listed}
    indexes = _index_shards(listed, paths, findings)
    listed = [entry for entry in listed if entry.file in indexes]
    _check_framing_and_record_counts(listed, indexes, findings)

    others = _other_splits(data_dir, split, present, findings) if leakage else {}
    workers = workers or default_workers()
    tasks = runner.plan_tasks(
        [(paths[e.file], indexes[e.file]) for e in listed],
        [shard for shards in others.values() for shard in shards],
        config,
        workers,
    )
    gathered = _gather(runner.run_tasks(tasks, workers, progress), listed, findings)

    records = gathered.records
    _compare_hashes(listed, gathered.hashes, findings)
    across_records.check_placement([e.file for e in listed], records, findings)
    unusable = check_manifest.read_errors(built, findings)
    across_records.check_duplicates(records, unusable, built.errors_file, findings)
    _check_leakage(records, leakage, others, gathered.other_keys, findings)
    _check_counts(built, listed, indexes, records, unusable, findings)
    stats = _statistics(listed, indexes, records, gathered.hashes)
    report = _report(data_dir, split, findings, stats, len(records), start)
    return SplitCheck(report, records, config, paths, indexes)


# -- the steps before the records -----------------------------------------------------------------


def _without_manifest(data_dir: str, split: str, error: manifest.ManifestError, findings: Findings, start: float) -> SplitCheck:
    """The check of a split whose manifest cannot be read: that one problem, every other check
    skipped (nothing says what the shards should hold), no records."""
    manifest_file = layout.manifest_name(split)
    findings.add("manifest", manifest_file, None, str(error).removeprefix(storage.join(data_dir, manifest_file) + ": "))
    for name in CHECKS:
        if name != "manifest":
            findings.skipped[name] = "no readable manifest"
    return SplitCheck(_report(data_dir, split, findings, None, 0, start), (), BuildConfig(), {}, {})


def _present_files(data_dir: str, built: manifest.Manifest, findings: Findings) -> set[str]:
    """The file names in `data_dir`; when it cannot be listed (a shard_set problem), the
    manifest's shards, so that reading each of them says what is wrong."""
    try:
        return set(storage.list_names(data_dir))
    except OSError as e:  # gone since the manifest was read, or the store refuses to list
        findings.add("shard_set", ".", None, f"cannot list the data directory: {e}")
        return {entry.file for entry in built.shards}


def _index_shards(listed: Sequence[ShardEntry], paths: dict[str, str], findings: Findings) -> dict[str, check_shards.ShardIndex]:
    """shard file -> its record spans, for each listed shard that can be opened; the others are
    problems (shard_set when gone, shard_files when unreadable) and left out."""
    indexes = {}
    for entry in listed:
        try:
            indexes[entry.file] = check_shards.index_shard(paths[entry.file], entry.file, entry.bytes)
        except storage.RefusedFile as e:  # a FIFO, a device, a link out of the directory, too large: never read
            findings.add("shard_files", entry.file, None, e.problem)
        except FileNotFoundError:  # listed, then gone: removed by a build that committed since
            findings.add("shard_set", entry.file, None, "missing: removed while the check ran")
        except OSError as e:  # a directory of that name, no permission, ...
            findings.add("shard_files", entry.file, None, f"unreadable: {e}")
    return indexes


def _check_framing_and_record_counts(
    listed: Sequence[ShardEntry], indexes: dict[str, check_shards.ShardIndex], findings: Findings
) -> None:
    """Per shard: where its framing breaks, else whether it holds the records the manifest says
    (a broken shard's count is unknown, so not compared)."""
    for entry in listed:
        index = indexes[entry.file]
        if index.error is not None:
            findings.add(
                "framing",
                entry.file,
                index.error.index,
                f"at byte {index.error.offset}: {index.error.problem}; the records after it are not checked",
            )
            findings.note("record_counts", "not compared for shards with broken framing")
        elif len(index.spans) != entry.records:
            findings.add(
                "record_counts",
                entry.file,
                None,
                f"the manifest says {entry.records} records, the shard holds {len(index.spans)}",
            )


def _other_splits(data_dir: str, split: str, present: set[str], findings: Findings) -> OtherSplits:
    """Other splits in the directory: name -> [(path, file, records)] of their shards, from their
    manifest when it is readable, else every shard of theirs present. Shards their manifest
    lists that are missing are noted: leakage into them cannot be looked for."""
    others = {}
    for other in layout.SPLITS:
        if other == split:
            continue
        try:
            other_manifest = manifest.load(data_dir, other, salvage=True)
            shards = [(s.file, s.records) for s in other_manifest.shards if s.file in present]
            if missing := len(other_manifest.shards) - len(shards):
                findings.note("leakage", f"{missing} of {len(other_manifest.shards)} shards of {other} missing: not compared")
            listed = True
        except manifest.ManifestError:
            shards = [(name, 0) for name in sorted(present) if (layout.parse_shard_name(name) or ("",))[0] == other]
            listed = False
        if shards or listed:
            others[other] = [(storage.join(data_dir, file), file, records) for file, records in shards]
    return others


# -- the tasks' results ---------------------------------------------------------------------------


def _gather(results: Iterable[check_shards.Result], listed: Sequence[ShardEntry], findings: Findings) -> _Gathered:
    """Sorts the tasks' results (in any order) into records, hashes and other splits' keys; the
    records' problems and the shards that could not be read go into `findings`."""
    hashes: dict[str, check_shards.HashResult] = {}
    checked: dict[str, list[CheckedRecord]] = {entry.file: [] for entry in listed}
    other_keys: OtherKeys = {}
    for result in results:
        if isinstance(result, check_shards.HashResult):
            hashes[result.file] = result
        elif isinstance(result, check_shards.ChunkResult):
            checked[result.file] += _checked_records(result, findings)
        elif isinstance(result, check_shards.FailedTask):
            _failed_task(result, findings)
        else:
            _add_other_keys(result, other_keys, findings)
    records = tuple(r for entry in listed for r in sorted(checked[entry.file], key=lambda r: r.index))
    return _Gathered(records, hashes, other_keys)


def _checked_records(result: check_shards.ChunkResult, findings: Findings) -> list[CheckedRecord]:
    """A chunk's records as checked; their problems go into `findings`."""
    checked = []
    for record in result.records:
        for check, message in record.problems:
            findings.add(check, result.file, record.index, message)
        failed = frozenset(check for check, _ in record.problems)
        checked.append(CheckedRecord(result.file, record.index, record.facts, failed))
    return checked


def _failed_task(result: check_shards.FailedTask, findings: Findings) -> None:
    """A shard that could not be read: a problem of this split's, a note of another's."""
    if result.kind == "keys":
        findings.note("leakage", f"{result.file} not read ({result.error})")
    else:
        findings.add("shard_files", result.file, None, f"unreadable while checking: {result.error}")


def _add_other_keys(result: check_shards.KeysResult, other_keys: OtherKeys, findings: Findings) -> None:
    """Adds another split's shard's keys to `other_keys` (the first place of each sha256 kept)."""
    if result.error:
        findings.note("leakage", f"{result.file} read only up to its damage ({result.error})")
    for index, sha256, filename in result.keys:
        other_keys.setdefault(sha256, (result.file, index, filename))


# -- the split-wide checks ------------------------------------------------------------------------


def _compare_hashes(listed: Sequence[ShardEntry], hashes: dict[str, check_shards.HashResult], findings: Findings) -> None:
    """Each hashed shard's size (bytes) and sha256 against the manifest's."""
    for entry in listed:
        found = hashes.get(entry.file)
        if found is None:  # unreadable: said when its task failed
            continue
        if found.bytes != entry.bytes:
            findings.add("shard_files", entry.file, None, f"size {found.bytes:,} bytes, the manifest says {entry.bytes:,}")
        if found.sha256 != entry.sha256:
            findings.add("shard_files", entry.file, None, f"sha256 {found.sha256}, the manifest says {entry.sha256}")


def _check_leakage(
    records: Sequence[CheckedRecord], asked: bool, others: OtherSplits, other_keys: OtherKeys, findings: Findings
) -> None:
    """The leakage check (across_records.check_leakage), or why it is skipped: not `asked`, or
    no other split in the directory; notes which splits it compared against."""
    if not asked:
        findings.skipped["leakage"] = "not asked for (--noleakage)"
    elif not others:
        findings.skipped["leakage"] = "no other split in the directory"
    else:
        findings.note("leakage", "against " + ", ".join(f"{name} ({len(shards)} shards)" for name, shards in others.items()))
        across_records.check_leakage(records, other_keys, findings)


def _check_counts(
    built: manifest.Manifest,
    listed: Sequence[ShardEntry],
    indexes: dict[str, check_shards.ShardIndex],
    records: Sequence[CheckedRecord],
    unusable: list[tuple[int, ErrorEntry]] | None,
    findings: Findings,
) -> None:
    """The manifest's counts against the records (check_manifest.check_counts); record totals
    are only comparable when every shard was read to its end."""
    complete = len(listed) == len(built.shards) and all(indexes[e.file].complete for e in listed)
    readable = [r.facts for r in records if r.facts is not None]
    check_manifest.check_counts(built, readable, len(records) - len(readable), complete, unusable, findings)


def _statistics(
    listed: Sequence[ShardEntry],
    indexes: dict[str, check_shards.ShardIndex],
    records: Sequence[CheckedRecord],
    hashes: dict[str, check_shards.HashResult],
) -> Statistics:
    """The dataset statistics of the readable records, with each shard's records and bytes."""
    return Statistics.compute(
        [r.facts for r in records if r.facts is not None],
        {e.file: len(indexes[e.file].spans) for e in listed},
        {e.file: hashes[e.file].bytes for e in listed if e.file in hashes},
    )


def _report(data_dir: str, split: str, findings: Findings, stats: Statistics | None, records: int, start: float) -> Report:
    """The report of what `findings` holds; `start`: time.perf_counter() when the check began."""
    notes = {check: "; ".join(texts) for check, texts in findings.notes.items()}
    return Report.make(data_dir, split, findings.problems, notes, findings.skipped, stats, records, time.perf_counter() - start)
