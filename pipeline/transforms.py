"""The Beam job's composite transforms, one job each.

    WriteShards        begin -> one ShardWritten per shard index (written under the build's id,
                                empty when no image landed in it), carrying the errors-file lines
                                of its images that could not be used and the annotation file's
                                totals; the images an earlier build prepared are reused
                                (pipeline.reuse)
Those go to pipeline.finalize, which commits the build. BeginBuildFn, run first, draws the build
id and writes its lease; every other step gets the BuildHandle as a side input.

The graph asks of a runner only what every Beam runner does, Beam's DaskRunner included (see
docs/DESIGN.md, "Runners"): every ParDo has one output (a shard's errors travel in its
ShardWritten, never on a second tagged output a runner could mix with the first), and nothing
is counted by runner metrics alone (the commit adds up the ShardWritten it receives). The shards
are the elements of `Create(range(num_shards))`, spread by a Reshuffle, so that every runner can
place them on as many workers as it has (the Dask runner splits a Create, never a grouping).
Each shard's writer reads the annotation file itself, once per worker process and build
(AnnotationsByShard), and takes its own images from it: no step hands the annotations to the
writers, neither a grouping (which the Dask runner would not split) nor a side input (which it
computes again inside every task that reads it).

Image bytes never cross a shuffle: each shard's writer reads and prepares its images a few at a
time on threads and writes them in hash order. So peak memory does not grow with the dataset
beyond the annotations each worker process holds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import annotations as annotation_formats
from pipeline import commit, images, records, reuse, sources, worker_setup
from pipeline.annotations import ImageAnnotation
from pipeline.build_report import plural
from pipeline.hashing_writer import WRITE_BYTES, HashingWriter
from pipeline.prefetch import prefetch
from pipeline.shard_progress import progress_of
from reader.core import layout, storage, tfrecord
from reader.core.config import BuildConfig
from reader.core.manifest import ErrorEntry, ShardEntry
from reader.core.targets import NUM_CHANNELS

_LOG = logging.getLogger(__name__)
NAMESPACE = "facegrid"
IMAGE_THREADS = 8  # images in flight per shard writer: both cores here, 8 reads in flight on gs://
IMAGES_PER_TASK = 8  # images a thread takes at once (prefetch), fewer where records are large:
HELD_RECORD_BYTES = 32 * 2**20  # records done and waiting their turn, at most (threads + 1) chunks


@dataclasses.dataclass(frozen=True)
class ShardWritten:
    """One shard written under its final name, not yet committed: its manifest entry, its
    position among the shards, the counts of the images that went into it and the errors-file
    lines of those that could not be used (in the order of the shard's images)."""

    index: int
    entry: ShardEntry
    counts: dict[str, int]
    reused: int = 0  # records whose image came from the earlier build (pipeline.reuse)
    reuse_failures: tuple[str, ...] = ()  # earlier records found but not taken, and why
    errors: tuple[ErrorEntry, ...] = ()  # the errors-file lines of its unusable images
    sources: tuple[tuple[str, str, int], ...] = ()  # (source sha256, filename, annotation line) of each record
    # The annotation file as this shard's writer read it: its totals and the sha256 of its bytes.
    annotated: dict[str, int] = dataclasses.field(default_factory=dict)
    annotations_sha256: str = ""


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


@dataclasses.dataclass(eq=False)
class AnnotationsByShard:
    """The annotation file as one worker process's shard writers take it: each shard's images
    in the file's order, the file's totals and the sha256 of its bytes (the commit refuses a
    build whose writers read different files)."""

    by_shard: dict[int, list[ImageAnnotation]]
    totals: dict[str, int]  # {"images_annotated": n, "faces_annotated": n}
    sha256: str

    @classmethod
    def read(cls, path: str, list_format: str, num_shards: int) -> AnnotationsByShard:
        """Reads and parses the annotation file at a local, gs:// or s3:// path; raises
        AnnotationError on a malformed file."""
        with storage.open_input(path) as raw:
            data = raw.read()
        by_shard: dict[int, list[ImageAnnotation]] = collections.defaultdict(list)
        images = faces = 0
        for annotation in annotation_formats.parse(io.BytesIO(data), path, list_format):
            by_shard[layout.shard_of(annotation.filename, num_shards)].append(annotation)
            images, faces = images + 1, faces + len(annotation.faces)
        return cls(dict(by_shard), {"images_annotated": images, "faces_annotated": faces}, hashlib.sha256(data).hexdigest())


class BeginBuildFn(beam.DoFn):
    """None -> the BuildHandle of this run: its id drawn (unless given) and its lease written,
    before any other file of the build."""

    def __init__(self, output: commit.OutputSpec):
        super().__init__()
        self._output = output

    def process(self, _):
        yield commit.begin(self._output)


class WriteShardFn(beam.DoFn):
    """Shard index, BuildHandle -> ShardWritten, with the errors-file lines of the shard's
    unusable images and the annotation file's totals.

    The shard's images are those of the annotation file that land in it (layout.shard_of). The
    file is read and parsed once per worker process and build, by the first of its shard
    writers to need it; the others of that process share it (Beam's Shared).

    Up to `threads` images of the shard are read and prepared at once, on a thread pool, and
    written in hash order as they come back. Threads pay twice: Pillow releases the GIL while it
    decodes, resizes and encodes, so one worker process keeps several cores busy, and reads from
    gs:// or s3:// wait side by side. Counters are incremented on the bundle's own thread, where
    Beam attributes them, once the shard is written (the errors' reasons as they come). The
    shard goes straight to its final name, which carries the build id: no reader follows it
    until the build commits, and a retried bundle writes the same bytes.
    A shard no image landed in is written empty.
    """

    def __init__(
        self,
        images_dir: str,
        config: BuildConfig,
        threads: int,
        annotations: str = "",
        list_format: str = "boxes",
        num_shards: int = 1,
    ):
        super().__init__()
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._images_dir, self._config, self._threads = images_dir, config, threads
        self._annotations, self._list_format, self._num_shards = annotations, list_format, num_shards
        self._shared = shared.Shared()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, thread_name_prefix="facegrid-image")
        self._counters = {key: _counter(key) for key in records.COUNT_KEYS}
        self._reasons = {reason: _counter(f"errors_{reason}") for reason in images.REASONS}
        self._reuse_counters = {key: _counter(key) for key in ("images_reused", "images_prepared")}

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _framed_record(
        self, annotation: ImageAnnotation, earlier: reuse.ReuseIndex | None, earlier_records: reuse.EarlierRecords
    ) -> tuple[bytes, records.Counts, bool, str | None, str]:
        """Runs on the pool: the image's record, framed for the shard, its counts, whether its
        image was the earlier build's, why an earlier image found was not taken, and the
        source's sha256."""
        data = sources.read_source(self._images_dir, annotation.filename)
        sha256 = hashlib.sha256(data).hexdigest()
        prepared, failure = None, None
        where = earlier.locations.get(sha256) if earlier is not None else None
        if where is not None:
            try:  # its pixels only: the rest of the record is made here, from this build's inputs
                prepared = reuse.take(where, sha256, data, self._config, earlier_records)
            except reuse.NotReusable as e:
                failure = f"{annotation.filename}: prepared again: {e}"
        record, image_counts = records.make_record(annotation, data, self._config, prepared, sha256)
        return tfrecord.encode_record(record.serialize()), image_counts, prepared is not None, failure, sha256

    def _read_annotations(self, build: commit.BuildHandle) -> AnnotationsByShard:
        """The annotation file, read once per process and build: a later build, even of the
        same id, reads it again."""

        def read():
            return AnnotationsByShard.read(self._annotations, self._list_format, self._num_shards)

        return self._shared.acquire(read, tag=(build.build, self._annotations, self._list_format, self._num_shards))

    def process(self, index: int, build: commit.BuildHandle, earlier: reuse.ReuseIndex | None = None):
        annotations = self._read_annotations(build)
        mine = annotations.by_shard.get(index, [])
        ordered = sorted(mine, key=lambda a: layout.record_key(a.filename))
        name = build.shard_name(index)
        counts = records.Counts()
        reused, failures, errors, written = 0, [], [], []
        shown = progress_of(build, annotations.totals["images_annotated"])
        build.heartbeat()
        with build.create(name) as file, reuse.EarlierRecords() as earlier_records:
            f = HashingWriter(file, WRITE_BYTES)
            framed_record = functools.partial(self._framed_record, earlier=earlier, earlier_records=earlier_records)
            for annotation, result in prefetch(
                framed_record, ordered, self._pool, self._threads, self._images_per_task(len(ordered))
            ):
                build.heartbeat()
                shown.advance()
                try:
                    if isinstance(result, Exception):
                        raise result
                    framed, image_counts, was_reused, failure, sha256 = result
                except images.UnusableImage as e:
                    self._reasons[e.reason].inc()
                    counts.update(errors=1, faces_in_errors=len(annotation.faces))
                    errors.append(ErrorEntry(annotation.filename, annotation.line, e.reason, e.detail, len(annotation.faces)))
                    continue
                reused += was_reused
                failures += [failure] if failure else []
                f.write(framed)
                counts.update(image_counts)
                written.append((sha256, annotation.filename, annotation.line))
            f.flush()
        # once a shard: per image, the counters cost as much as reusing it
        self._count(records.Counts(counts, images_annotated=len(mine), faces_annotated=sum(len(a.faces) for a in mine)))
        self._reuse_counters["images_reused"].inc(reused)
        self._reuse_counters["images_prepared"].inc(counts["records"] + counts["errors"] - reused)
        level = logging.DEBUG if shown.is_bar else logging.INFO
        _LOG.log(level, "%s: %s, %d unusable, %.1f MB", name, plural(counts["records"], "record"), counts["errors"], f.size / 1e6)
        entry = ShardEntry(name, counts["records"], f.size, f.digest.hexdigest())
        yield ShardWritten(
            index,
            entry,
            counts.as_dict(),
            reused,
            tuple(failures),
            tuple(errors),
            tuple(written),
            annotations.totals,
            annotations.sha256,
        )

    def _images_per_task(self, images: int) -> int:
        """Images a thread takes at once from a shard of `images`: IMAGES_PER_TASK, or fewer
        where the shard has too few to keep every thread busy, or where that many records (each
        at most a raw image and its targets) in every thread's chunk and one more would hold
        over HELD_RECORD_BYTES."""
        config = self._config
        # The image, the grid and ignore, and 4 KB for the rest (a few hundred bytes without faces).
        record_bytes = config.input_size**2 * 3 + config.grid_size**2 * (NUM_CHANNELS + 1) * 4 + 4096
        fair_share = -(-images // self._threads)  # a shard's few images spread over every thread
        return max(1, min(IMAGES_PER_TASK, fair_share, HELD_RECORD_BYTES // (record_bytes * (self._threads + 1))))

    def _count(self, counts: records.Counts) -> None:
        for key, value in counts.items():
            if value:
                self._counters[key].inc(value)


class WriteShards(beam.PTransform):
    """Begin, BuildHandle (singleton) -> one ShardWritten per shard index, every shard written
    (empty when no image landed in it), each writer taking its images from the annotation file
    at `annotations` (of `list_format`). The writers show the build's progress
    (pipeline.shard_progress). `settings`: the storage settings the writers read and write with
    (pipeline.worker_setup).
    """

    def __init__(
        self,
        images_dir: str,
        num_shards: int,
        config: BuildConfig,
        build,
        annotations: str,
        list_format: str = "boxes",
        threads: int = IMAGE_THREADS,
        earlier=None,
        settings: dict | None = None,
    ):
        super().__init__()
        fn = WriteShardFn(images_dir, config, threads, annotations, list_format, num_shards)
        self._write = worker_setup.Configured(fn, settings)
        self._num_shards, self._build, self._earlier = num_shards, build, earlier

    def expand(self, pbegin):
        return (
            pbegin
            | "ShardIndices" >> beam.Create(range(self._num_shards))
            | "SpreadShards" >> beam.Reshuffle()
            | "PrepareAndWrite" >> beam.ParDo(self._write, **self._side_inputs())
        )

    def _side_inputs(self) -> dict:
        side = {"build": beam.pvalue.AsSingleton(self._build)}
        if self._earlier is not None:  # the images an earlier build prepared (pipeline.reuse)
            side["earlier"] = beam.pvalue.AsSingleton(self._earlier)
        return side
