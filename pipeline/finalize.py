"""The build's last step: the shards' counts added up and checked, then the split committed.

    Finalize   ShardWritten (one per shard, each with its errors-file lines and the annotation
               file's totals), BuildHandle [, ReuseIndex]
               -> the manifest, once committed (pipeline.commit): the errors file written, the
               manifest written as the one atomic step, files of builds that are over removed.
               Safe to retry.

The shards reach the commit as its main input, gathered into one element by a GroupByKey on a
single key: the commit is the graph's last step, it runs once every shard is written on every
runner, and what it commits is what it received. It takes no runner metrics: the counts are
the shards' own, added up and checked against the annotation file's totals (which every shard
carries, as its writer read the file: they must agree), and it refuses a set of shards that is
not exactly one of each index (a runner that lost or repeated one).
"""

from __future__ import annotations

import logging

import apache_beam as beam

from pipeline import commit, records, reuse, worker_setup
from pipeline.build_report import plural
from pipeline.transforms import ShardWritten
from reader.core import manifest as manifests
from reader.core.config import BuildConfig

_LOG = logging.getLogger(__name__)


class FinalizeFn(beam.DoFn):
    """(key, every shard's ShardWritten) -> the manifest: runs once, after every shard; checks
    the shards, the counts and the error fraction, then commits the build (pipeline.commit): the
    errors file written, the manifest written as the one atomic step, files of builds that are
    over removed. Safe to retry."""

    def __init__(self, config: BuildConfig, max_error_fraction: float, annotations: str = "annotations"):
        super().__init__()
        self._config, self._max_error_fraction, self._annotations = config, max_error_fraction, annotations

    def process(self, element, build: commit.BuildHandle, earlier: reuse.ReuseIndex | None = None):
        shards = _one_of_each(build, element[1])
        counts = _added_up(build, _annotated(build, shards, self._annotations), shards)
        _refuse_one_source_twice(build, shards, self._annotations)
        errors = sorted((e for s in shards for e in s.errors), key=lambda e: (e.filename, e.line))
        errors_file = manifests.errors_file_bytes(errors)
        self._refuse_too_many_errors(build, counts, errors_file)
        entries = [s.entry for s in shards]
        manifest = manifests.manifest_json(build.split, build.build, self._config, counts, errors, entries)
        manifest["preparation"] = reuse.preparation()
        manifest["reuse"] = _reuse_record(earlier or reuse.ReuseIndex(), shards, counts)
        new_files = {build.errors_name: errors_file}
        removed = build.commit(manifest, new_files, {e.file: e.bytes for e in entries})
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


def _one_of_each(build: commit.BuildHandle, shards) -> list[ShardWritten]:
    """The shards in index order; abandons the build with BuildError unless there is exactly one
    of each index (a runner lost a shard's result, or delivered one twice)."""
    found = sorted(shards, key=lambda s: s.index)
    indices = [s.index for s in found]
    if indices != list(range(build.output.num_shards)):
        build.abandon()
        missing = sorted(set(range(build.output.num_shards)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise commit.BuildError(
            f"{build.split}: not committed: the runner delivered {len(indices)} shard results for {build.output.num_shards} shards"
            f"{f' (missing: {missing[:5]})' if missing else ''}{f' (more than once: {repeated[:5]})' if repeated else ''}"
        )
    return found


def _annotated(build: commit.BuildHandle, shards: list[ShardWritten], annotations: str) -> dict:
    """The annotation file's totals, as every shard's writer read the file; abandons the build
    with BuildError when the writers read different bytes (the file changed during the build)."""
    read = {(s.annotations_sha256, tuple(sorted(s.annotated.items()))) for s in shards}
    if len(read) > 1:
        build.abandon()
        raise commit.BuildError(
            f"{build.split}: {annotations} changed while the build ran: its shard writers read {len(read)} different versions "
            f"({', '.join(sorted(str(dict(totals)['images_annotated']) + ' images' for _, totals in read))}). "
            "Nothing was committed: the earlier build, if any, is untouched; build again once the file stays put."
        )
    return dict(next(iter(read))[1]) if read else {}


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


class Finalize(beam.PTransform):
    """ShardWritten (one per shard), BuildHandle [, ReuseIndex] -> the manifest dict, once
    committed. `settings`: the storage settings the commit writes with
    (pipeline.worker_setup)."""

    def __init__(
        self,
        config: BuildConfig,
        max_error_fraction: float,
        build,
        earlier=None,
        settings: dict | None = None,
        annotations: str = "annotations",
    ):
        super().__init__()
        self._fn = worker_setup.Configured(FinalizeFn(config, max_error_fraction, annotations), settings)
        self._build, self._earlier = build, earlier

    def expand(self, shards):
        side = {"build": beam.pvalue.AsSingleton(self._build)}
        if self._earlier is not None:
            side["earlier"] = beam.pvalue.AsSingleton(self._earlier_notes())
        return (
            shards
            | "OneKey" >> beam.Map(lambda shard: (0, shard)).with_output_types(tuple[int, ShardWritten])
            | "Gather" >> beam.GroupByKey()
            | "Commit" >> beam.ParDo(self._fn, **side)
        )

    def _earlier_notes(self):
        """The earlier build's ReuseIndex without its locations: the commit holds no second
        copy of the index beside the shard writers'."""
        return self._earlier | "EarlierNotes" >> beam.Map(reuse.ReuseIndex.without_locations)
