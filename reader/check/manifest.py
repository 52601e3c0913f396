"""The checker's checks of what the manifest promises: its own keys, the shard set in the
directory, the errors file it names, and the counts.

The manifest is the commit point of a build (reader.core.layout): the files it names are the split.
Files it does not name are judged by the build they belong to (`layout.build_of`):
    this build's shard or errors file   a failure: the manifest lost it, or it was put there
    another build's file, a lease, a    a note, not a failure: leftovers of a crashed build or
    temporary file                      the files of a build still running; the next build
                                        that commits removes them
Builds before build ids name shards `{split}-00000-of-0000N.tfrecord` and `{split}.errors.jsonl`;
for them every other such file is this build's (there is no id to tell builds apart), so a
stale shard is a failure as it always was.
"""

from __future__ import annotations

import collections

from reader.check.findings import Findings
from reader.core import config, layout, manifest, storage
from reader.core.config import BuildConfig
from reader.core.manifest import ErrorEntry

_NOTED_NAMES = 3  # other builds' files named in the shard_set note; the rest are counted


def check_manifest(built: manifest.Manifest, split: str, findings: Findings) -> BuildConfig:
    """Reports what reading the manifest found wrong with its values (its split, build id, config,
    counts, shard names: reader.core.manifest_values; the sums go to the counts check); returns
    the record config (defaults where the manifest's value is unusable, so that the records are
    still checked)."""
    file = layout.manifest_name(split)
    for problem in built.problems:  # every value the manifest holds, validated as it was read
        if problem.check == "manifest":
            findings.add("manifest", file, None, str(problem))
    return built.config


def _valid_build(build: str) -> bool:
    try:
        layout.check_build_id(build)
    except ValueError:
        return False
    return True


def check_shard_set(built: manifest.Manifest, split: str, present: set[str], findings: Findings) -> list[manifest.ShardEntry]:
    """Missing shards, and the files in the directory that the manifest does not name (see the
    module docstring); returns the manifest's shards that are present."""
    for entry in built.shards:
        if entry.file not in present:
            findings.add("shard_set", entry.file, None, "missing: the manifest lists it, the directory does not hold it")
    mine = built.build if isinstance(built.build, str) and _valid_build(built.build) else layout.LEGACY_BUILD
    named = {entry.file for entry in built.shards} | {built.errors_file}
    others = []
    for name in sorted(present - named):
        owner = layout.build_of(name, split)
        if owner is None:
            continue  # the manifest, the index cache, other splits, other programs' files
        if owner != mine or name.startswith("."):  # leases and temporary files never belong to a committed build
            others.append(name)
            continue
        parsed = layout.parse_shard_name(name)
        if parsed is not None and parsed[2] != len(built.shards):
            what = f"a shard of a build of {parsed[2]} shards (this build has {len(built.shards)})"
        elif parsed is not None:
            what = "a shard"
        else:
            what = "an errors file"
        claim = f"carries this build's id {mine}" if mine else "has the name builds before build ids gave this split's files"
        findings.add("shard_set", name, None, f"stale: {what} that {claim}, yet the manifest does not name it")
    if others:
        shown = ", ".join(others[:_NOTED_NAMES]) + (", ..." if len(others) > _NOTED_NAMES else "")
        findings.note(
            "shard_set",
            f"{len(others)} file{'s' if len(others) != 1 else ''} of other builds, not part of this build "
            f"({shown}): leftovers of a crashed build or a build still running; the next build that commits removes them",
        )
    return [entry for entry in built.shards if entry.file in present]


def read_errors(built: manifest.Manifest, findings: Findings) -> list[tuple[int, ErrorEntry]] | None:
    """The entries of the errors file the manifest names, each with its line number in that file,
    or None when it is missing or unreadable (a counts problem)."""
    file = built.errors_file
    if not manifest.is_plain_name(file):
        findings.note("counts", "errors file not read: the manifest names no file in the data directory")
        return None
    try:
        text = storage.read_bytes(storage.join(built.data_dir, file), storage.ERRORS_FILE).decode("utf-8")
    except storage.RefusedFile as e:  # never read, never quoted: it may lead out of the data directory
        findings.add("counts", file, None, e.problem)
        return None
    except FileNotFoundError:
        findings.add(
            "counts",
            file,
            None,
            "missing: the manifest names it, and a build always writes it (empty when every image was usable)",
        )
        return None
    except (OSError, UnicodeDecodeError) as e:
        findings.add("counts", file, None, f"unreadable: {e}")
        return None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entries.append((number, ErrorEntry.from_json_line(line)))
        except ValueError as e:
            findings.add("counts", file, None, f"line {number}: {e}")
    return entries


def check_counts(built: manifest.Manifest, facts, unreadable: int, complete: bool, unusable, findings: Findings) -> None:
    """The manifest's counts against their laws, the shard entries, the records and the errors file.

    facts: the RecordFacts of every readable record; unreadable: records that could not be read;
    complete: every shard present and whole (else the record totals are not compared).
    """
    file = layout.manifest_name(built.split)
    counts = {key: built.counts.get(key) for key in manifest.COUNT_KEYS}
    for problem in built.problems:  # the laws, the shard entries' sum, error_reasons' and reuse's sums
        if problem.check == "counts":
            findings.add("counts", file, None, problem.message if problem.field == "counts" else str(problem))
    if not all(config.is_int(v) for v in counts.values()):
        findings.note("counts", "laws not checked: counts missing from the manifest")

    if complete and not unreadable:
        found = {"records": len(facts), "faces_stored": sum(f.faces for f in facts)}
        found.update({key: sum(getattr(f, key) for f in facts) for key in ("targets", "dropped", "ignored")})
        for key, value in found.items():
            if config.is_int(counts[key]) and counts[key] != value:
                how = "the shards hold" if key == "records" else "recomputed from the records"
                findings.add("counts", file, None, f"counts.{key} {counts[key]}, {how} {value}")
    else:
        findings.note(
            "counts",
            "record totals not compared: "
            + (f"{unreadable} unreadable record{'s' if unreadable != 1 else ''}" if unreadable else "shards missing or damaged"),
        )

    if unusable is not None:
        errors_file = built.errors_file
        reasons = collections.Counter(e.reason for _, e in unusable)
        if config.is_int(counts["errors"]) and counts["errors"] != len(unusable):
            findings.add("counts", file, None, f"counts.errors {counts['errors']}, {errors_file} has {len(unusable)} entries")
        faces = sum(e.faces for _, e in unusable)
        if config.is_int(counts["faces_in_errors"]) and counts["faces_in_errors"] != faces:
            findings.add(
                "counts", file, None, f"counts.faces_in_errors {counts['faces_in_errors']}, {errors_file} adds up to {faces}"
            )
        stated = built.raw.get("error_reasons")
        usable = not any(p.field == "error_reasons" for p in built.problems)
        if stated is not None and usable and stated != dict(reasons):
            findings.add("counts", file, None, f"error_reasons {stated}, {errors_file} has {dict(sorted(reasons.items()))}")
