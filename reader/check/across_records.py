"""The checks across a split's records, once every record has been checked on its own.

    CheckedRecord      one record as checked: where it is, its facts, the checks it failed
    check_placement    each record in the shard, and at the place, its filename hash gives
    check_duplicates   no filename, source sha256 or image/source_id twice; none also unusable
    check_leakage      no source image that another split holds

Each takes the records (shard order, then record order) and adds its problems to a Findings;
reader.check.split decides when each runs.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from reader.check import records as check_records
from reader.check.findings import Findings
from reader.core import layout
from reader.core.manifest import ErrorEntry

OtherKeys = dict[str, tuple[str, int, str]]  # source sha256 -> (file, record index, filename) in another split


@dataclasses.dataclass(frozen=True)
class CheckedRecord:
    """One record as checked: where it is, its facts (None if unreadable), the checks it failed."""

    file: str
    index: int
    facts: check_records.RecordFacts | None
    failed: frozenset[str]

    @property
    def where(self) -> str:
        """`file:index`, as problems name a record."""
        return f"{self.file}:{self.index}"


def check_placement(shard_files: Sequence[str], records: Sequence[CheckedRecord], findings: Findings) -> None:
    """Each readable record of the shards named `shard_files` in the shard its filename hash
    gives, and after the records before it there in filename-hash order (a misplaced record is
    not held to the order). Linear in the records: each file is walked once, however often named."""
    by_file = collections.defaultdict(list)
    for record in records:
        if record.facts is not None:
            by_file[record.file].append(record)
    for file in dict.fromkeys(shard_files):
        _, shard_index, num_shards = layout.parse_shard_name(file) or (None, None, None)
        if shard_index is None:
            continue  # the manifest check names the odd file name
        previous: CheckedRecord | None = None
        previous_key = b""
        for record in by_file[file]:
            key = layout.record_key(record.facts.filename)
            home = layout.shard_of(record.facts.filename, num_shards)
            if home != shard_index:
                findings.add(
                    "placement",
                    file,
                    record.index,
                    f"{record.facts.filename!r} belongs in shard {home} of {num_shards} by its filename hash",
                )
            elif key < previous_key:
                findings.add(
                    "placement",
                    file,
                    record.index,
                    f"out of order: the filename hash of {record.facts.filename!r} sorts before record {previous.index}'s",
                )
            if home == shard_index:
                previous, previous_key = record, key


def check_duplicates(
    records: Sequence[CheckedRecord], unusable: list[tuple[int, ErrorEntry]] | None, errors_file: str, findings: Findings
) -> None:
    """No filename or source sha256 twice among the readable records, none of their filenames
    also listed as unusable in `errors_file` (`unusable`: its (line number, entry) pairs, None
    when it was not readable), no image/source_id twice."""
    by_name = _check_same_name_or_source(records, findings)
    for number, entry in unusable or ():
        if entry.filename in by_name:
            record = by_name[entry.filename]
            findings.add(
                "duplicates",
                record.file,
                record.index,
                f"{entry.filename!r} is also listed as unusable in {errors_file} line {number}",
            )
    _check_source_ids(records, findings)


def _check_same_name_or_source(records: Sequence[CheckedRecord], findings: Findings) -> dict[str, CheckedRecord]:
    """Each readable record whose filename or source sha256 an earlier one has; returns each
    filename's first record."""
    by_name: dict[str, CheckedRecord] = {}
    by_sha: dict[str, CheckedRecord] = {}
    for record in records:
        if record.facts is None:
            continue
        name, sha = record.facts.filename, record.facts.sha256
        first_name, first_sha = by_name.get(name), by_sha.get(sha)
        if first_name is not None and first_name is first_sha:
            findings.add(
                "duplicates",
                record.file,
                record.index,
                f"duplicate of {first_name.where}: same filename {name!r} and source sha256",
            )
        elif first_name is not None:
            findings.add(
                "duplicates",
                record.file,
                record.index,
                f"filename {name!r} also at {first_name.where}, with another source sha256",
            )
        elif first_sha is not None:
            findings.add(
                "duplicates",
                record.file,
                record.index,
                f"source sha256 {sha} also at {first_sha.where} ({first_sha.facts.filename!r}), here as {name!r}",
            )
        by_name.setdefault(name, record)
        by_sha.setdefault(sha, record)
    return by_name


def _check_source_ids(records: Sequence[CheckedRecord], findings: Findings) -> None:
    """No image/source_id twice under different filenames: TF Model Garden needs them unique,
    and two filenames may hash alike (the same filename twice is a duplicate said already)."""
    records = list(records)
    for position, first in check_records.source_id_duplicates(r.facts for r in records):
        record, earlier = records[position], records[first]
        if record.facts.filename != earlier.facts.filename:
            findings.add(
                "duplicates",
                record.file,
                record.index,
                f"image/source_id {record.facts.source_id} also at {earlier.where} "
                f"({earlier.facts.filename!r}), here for {record.facts.filename!r}",
            )


def check_leakage(records: Sequence[CheckedRecord], other_keys: OtherKeys, findings: Findings) -> None:
    """No readable record's source sha256 among `other_keys`, the other splits' records."""
    for record in records:
        if record.facts is not None and record.facts.sha256 in other_keys:
            file, index, filename = other_keys[record.facts.sha256]
            findings.add(
                "leakage",
                record.file,
                record.index,
                f"source image {record.facts.filename!r} (sha256 {record.facts.sha256[:16]}...) is also in "
                f"{file}:{index} as {filename!r}",
            )
