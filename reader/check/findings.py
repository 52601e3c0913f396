"""What the checker found: the checks, their problems, and how to show them.

Every problem names its file and, where it concerns one record, the record's index in its
shard: `val-00002-of-00008.3f2a9c01d4e7.tfrecord:17: targets: ...`. The report is shown as a
summary for people (`summary`) or as JSON for machines (`as_json`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable

from reader.check.stats import Statistics

# Every check, in the order they are reported, with what passing means.
CHECKS: dict[str, str] = {
    "manifest": "manifest readable, of schema_version 1, with its split, config, counts and shards",
    "shard_set": "every shard of the manifest present; no file of this build that the manifest does not name",
    "shard_files": "shard sizes and sha256 as the manifest says",
    "framing": "every record's length, framing and CRCs",
    "record_counts": "records per shard as the manifest says",
    "placement": "each record in the shard and at the place its filename hash gives",
    "schema": "every key of the schema, with its kind and length",
    "images": "every image decodes to input_size x input_size x 3 as image/format says",
    "ranges": "boxes, grid, ignore, dropped, labels and attributes within range; source_id, is_crowd, area and class/text as the record gives them",
    "targets": "grid, ignore and dropped equal what the boxes give",
    "duplicates": "no filename, source sha256 or source_id twice in the split",
    "leakage": "no source sha256 shared with another split in the directory",
    "counts": "manifest counts add up and match the shards and the errors file",
}
_ORDER = {name: i for i, name in enumerate(CHECKS)}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: which check found it, in which file (relative to the data directory), at
    which record index of that shard (None when it concerns a whole file)."""

    check: str
    file: str
    record: int | None
    message: str

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ValueError(f"check must be one of {list(CHECKS)}, got {self.check!r}")

    @property
    def where(self) -> str:
        return self.file if self.record is None else f"{self.file}:{self.record}"

    def __str__(self) -> str:
        return f"{self.where}: {self.check}: {self.message}"

    def sort_key(self) -> tuple:
        return _ORDER[self.check], self.file, -1 if self.record is None else self.record

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


class Findings:
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


PASS, FAIL, SKIP = "pass", "fail", "skip"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """status: pass, fail, or skip (could not run, e.g. no other split for leakage); note says
    what was left out or why it was skipped."""

    name: str
    status: str
    problems: int
    note: str = ""

    @property
    def description(self) -> str:
        return CHECKS[self.name]


@dataclasses.dataclass(frozen=True)
class Report:
    """The outcome of checking one split. seconds: wall time of the whole check."""

    data_dir: str
    split: str
    checks: tuple[CheckResult, ...]
    problems: tuple[Problem, ...]
    stats: Statistics | None
    records: int
    seconds: float

    @classmethod
    def make(
        cls,
        data_dir: str,
        split: str,
        problems: Iterable[Problem],
        notes: dict[str, str],
        skipped: dict[str, str],
        stats: Statistics | None,
        records: int,
        seconds: float,
    ) -> Report:
        """notes: per check, what it left out; skipped: per check that could not run, why."""
        problems = tuple(sorted(problems, key=Problem.sort_key))
        per_check = {name: 0 for name in CHECKS}
        for p in problems:
            per_check[p.check] += 1
        checks = []
        for name, count in per_check.items():
            if count:
                status = FAIL
            elif name in skipped:
                status = SKIP
            else:
                status = PASS
            checks.append(CheckResult(name, status, count, skipped.get(name) or notes.get(name, "")))
        return cls(data_dir, split, tuple(checks), problems, stats, records, seconds)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_json(self, max_problems: int | None = None) -> dict:
        shown = self.problems if max_problems is None else self.problems[:max_problems]
        return {
            "data_dir": self.data_dir,
            "split": self.split,
            "ok": self.ok,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "checks": [
                {"name": c.name, "status": c.status, "problems": c.problems, "description": c.description, "note": c.note}
                for c in self.checks
            ],
            "problems": [p.as_json() for p in shown],
            "problems_total": len(self.problems),
            "stats": None if self.stats is None else self.stats.as_json(),
        }

    def summary(self, max_problems: int = 20) -> str:
        """The report for people: a line per check, the first problems, the statistics, the verdict."""
        lines = [
            f"facegrid-check: split {self.split!r} in {self.data_dir}: {self.records} records checked "
            f"in {self.seconds:.1f} s ({self.records_per_second:,.0f} records/s)",
            "",
        ]
        width = max(len(name) for name in CHECKS)
        for c in self.checks:
            count = f"  {_plural(c.problems, 'problem')}" if c.problems else ""
            note = f"  ({c.note})" if c.note else ""
            lines.append(f"  {c.status.upper():4}  {c.name:{width}}  {c.description}{count}{note}")
        if self.problems:
            shown = self.problems[:max_problems]
            lines += [
                "",
                f"problems (first {len(shown)} of {len(self.problems)}):" if len(shown) < len(self.problems) else "problems:",
            ]
            lines += [f"  {p}" for p in shown]
        if self.stats is not None and self.stats.records:
            lines += ["", "statistics:"] + [f"  {line}" for line in self.stats.lines()]
        failed = [c.name for c in self.checks if c.status == FAIL]
        lines += [
            "",
            "PASS: every check passed" if self.ok else f"FAIL: {_plural(len(self.problems), 'problem')} in {', '.join(failed)}",
        ]
        return "\n".join(lines)
