"""The build's last step: the shards' counts added up and checked, then the split committed.

    Finalize   (ShardWritten, ErrorEntry, annotated totals), BuildHandle [, ReuseIndex]
               -> the manifest, once committed (pipeline.commit): the errors file and the empty
               shards written, the manifest written as the one atomic step, files of builds
               that are over removed. Safe to retry.
"""

from __future__ import annotations

import hashlib
import logging

import apache_beam as beam

from pipeline import commit, records, reuse
from pipeline.transforms import plural
from reader.core import manifest as manifests
from reader.core.config import BuildConfig
from reader.core.manifest import ShardEntry

_LOG = logging.getLogger(__name__)

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class FinalizeFn(beam.DoFn):
    """Runs once, after every shard: checks the counts and the error fraction, then commits the
    build (pipeline.commit): empty shards and the errors file written, the manifest written as
    the one atomic step, files of builds that are over removed. Safe to retry."""

    def __init__(self, config: BuildConfig, max_error_fraction: float, annotations: str = "annotations"):
        super().__init__()
        self._config, self._max_error_fraction, self._annotations = config, max_error_fraction, annotations

    def process(self, _, build: commit.BuildHandle, shards, unusable, annotated, earlier: reuse.ReuseIndex | None = None):
        counts = _added_up(build, annotated, shards)
        _refuse_one_source_twice(build, shards, self._annotations)
        errors = sorted(unusable, key=lambda e: (e.filename, e.line))
        errors_file = manifests.errors_file_bytes(errors)
        self._refuse_too_many_errors(build, counts, errors_file)
        entries, empty = _with_empty_shards(build, shards)
        manifest = manifests.manifest_json(build.split, build.build, self._config, counts, errors, entries)
        manifest["preparation"] = reuse.preparation()
        manifest["reuse"] = _reuse_record(earlier or reuse.ReuseIndex(), shards, counts)
        new_files = {build.errors_name: errors_file, **empty}
        removed = build.commit(manifest, new_files, {e.file: e.bytes for e in entries if e.file not in new_files})
        if removed:
            _LOG.info("%s: removed %d files of earlier or crashed builds", build.split, len(removed))
        yield manifest

    def _refuse_too_many_errors(self, build: commit.BuildHandle, counts: records.Counts, errors_file: bytes) -> None:
        """Raises BuildError, committing nothing, when more images are unusable than allowed."""
        fraction = counts["errors"] / max(1, counts["images_annotated"])
        if fraction <= self._max_error_fraction:
            return
        # Kept for the user to read; it names no file of the earlier build, and the next build
        # that commits removes it.
        build.write(build.errors_name, errors_file)
        build.abandon(keep=(build.errors_name,))
        raise commit.BuildError(
            f"{build.split}: {counts['errors']} of {counts['images_annotated']} images are unusable "
            f"({fraction:.2%}), over --max_error_fraction={self._max_error_fraction}; "
            f"see {build.path(build.errors_name)}. Nothing was committed: the earlier build, if any, is untouched."
        )


def _reuse_record(earlier: reuse.ReuseIndex, shards, counts: records.Counts) -> dict:
    """The manifest's `reuse` block: images reused and prepared (they add up to images_annotated),
    and why anything of the earlier build was not taken."""
    ordered = sorted(shards, key=lambda s: s.index)
    reused = sum(s.reused for s in ordered)
    failed = [failure for s in ordered for failure in s.reuse_failures]
    return earlier.record(reused, counts["images_annotated"] - reused, failed)


def _added_up(build: commit.BuildHandle, annotated: dict, shards) -> records.Counts:
    """The split's counts from the annotation totals and every shard's; abandons the build with
    BuildError when they break a law (an image lost or counted twice)."""
    counts = records.Counts(annotated)
    for shard in shards:
        counts.update(shard.counts)
    if broken := counts.imbalances():
        build.abandon()
        raise commit.BuildError(f"{build.split}: counts do not add up: {'; '.join(broken)}")
    return counts


def _refuse_one_source_twice(build: commit.BuildHandle, shards, annotations: str) -> None:
    """Abandons the build with BuildError, naming the annotation file, both lines and both names,
    when two records would hold the same source bytes: one image listed under two names (the
    checker fails such a split: `duplicates`). The first listed is named as the original."""
    first_of: dict[str, tuple[str, str, int]] = {}
    again = []
    for sha256, filename, line in sorted((s for shard in shards for s in shard.sources), key=lambda s: s[2]):  # the file's order
        if sha256 in first_of:
            again.append(((sha256, filename, line), first_of[sha256]))
        else:
            first_of[sha256] = (sha256, filename, line)
    if not again:
        return
    (sha256, filename, line), (_, first_name, first_line) = again[0]
    more = f" (and {plural(len(again) - 1, 'more image')} like it)" if len(again) > 1 else ""
    build.abandon()
    raise commit.BuildError(
        f"{build.split}: {annotations}:{line}: {filename!r} has the same bytes as {first_name!r} (line {first_line}, "
        f"sha256 {sha256[:16]}...): one image under two names{more}; list each image once. "
        "Nothing was committed: the earlier build, if any, is untouched."
    )


def _with_empty_shards(build: commit.BuildHandle, shards) -> tuple[list[ShardEntry], dict[str, bytes]]:
    """Every shard's entry in index order, and the files of the shards no image landed in
    (written empty by the commit)."""
    written = {s.index: s.entry for s in shards}
    empty = {}
    for index in range(build.output.num_shards):
        if index not in written:
            name = build.shard_name(index)
            empty[name] = b""
            written[index] = ShardEntry(name, 0, 0, _EMPTY_SHA256)
    if empty:
        _LOG.info("%s: %s of %d got no image: written empty", build.split, plural(len(empty), "shard"), build.output.num_shards)
    return [written[i] for i in range(build.output.num_shards)], empty


class Finalize(beam.PTransform):
    """(ShardWritten, ErrorEntry, annotated totals), BuildHandle -> the manifest dict, once
    committed."""

    def __init__(self, config: BuildConfig, max_error_fraction: float, build, earlier=None, annotations: str = "annotations"):
        super().__init__()
        self._fn = FinalizeFn(config, max_error_fraction, annotations)
        self._build, self._earlier = build, earlier

    def expand(self, inputs):
        shards, unusable, annotated = inputs
        return (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "Commit"
            >> beam.ParDo(
                self._fn,
                build=beam.pvalue.AsSingleton(self._build),
                shards=beam.pvalue.AsList(shards),
                unusable=beam.pvalue.AsList(unusable),
                annotated=beam.pvalue.AsSingleton(annotated),
                **({} if self._earlier is None else {"earlier": beam.pvalue.AsSingleton(self._earlier_notes())}),
            )
        )

    def _earlier_notes(self):
        """The earlier build's ReuseIndex without its locations: the commit holds no second
        copy of the index beside the shard writers'."""
        return self._earlier | "EarlierNotes" >> beam.Map(reuse.ReuseIndex.without_locations)
