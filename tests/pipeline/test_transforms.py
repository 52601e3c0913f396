"""Each composite transform alone, under TestPipeline with assert_that."""

import dataclasses
import hashlib
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import commit, finalize, records, transforms
from pipeline.annotations import parse_boxes
from pipeline.commit import OutputSpec
from pipeline.prefetch import prefetch
from pipeline.transforms import ShardWritten
from reader.core import layout, tfds_metadata
from reader.core.config import BuildConfig
from reader.core.manifest import ErrorEntry, ShardEntry
from tests.support import builds
from tests.support.builds import IN_MEMORY
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES


def _annotations():
    with open(FIXTURE_ANNOTATIONS) as f:
        return list(parse_boxes(f, str(FIXTURE_ANNOTATIONS)))


def test_annotations_by_shard_hold_every_image_in_the_file_order_with_the_totals():
    expected = [(a.filename, a.line, len(a.faces)) for a in _annotations()]
    read = transforms.AnnotationsByShard.read(str(FIXTURE_ANNOTATIONS), "boxes", 3)
    assert sorted(read.by_shard) == [0, 1, 2]
    for index, mine in read.by_shard.items():
        assert all(layout.shard_of(a.filename, 3) == index for a in mine)
        assert [a.line for a in mine] == sorted(a.line for a in mine)
    found = sorted((a.filename, a.line, len(a.faces)) for mine in read.by_shard.values() for a in mine)
    assert found == sorted(expected)
    assert read.totals == {"images_annotated": 16, "faces_annotated": 21}
    assert read.sha256 == hashlib.sha256(FIXTURE_ANNOTATIONS.read_bytes()).hexdigest()


BUILD = "0123456789ab"


def _begin(tmp_path, num_shards: int) -> commit.BuildHandle:
    return commit.begin(OutputSpec(str(tmp_path), "val", num_shards, BUILD))


def test_write_shards_splits_records_and_errors(tmp_path):
    handle = _begin(tmp_path, 2)
    with TestPipeline(argv=IN_MEMORY) as p:
        build = p | "Handle" >> beam.Create([handle])
        written = p | transforms.WriteShards(str(FIXTURE_IMAGES), 2, BuildConfig(), build, str(FIXTURE_ANNOTATIONS))
        assert_that(
            written | beam.Map(lambda s: (s.index, s.entry.file)),
            equal_to([(0, f"val-00000-of-00002.{BUILD}.tfrecord"), (1, f"val-00001-of-00002.{BUILD}.tfrecord")]),
            label="shards",
        )
        assert_that(written | beam.Map(lambda s: s.entry.records) | beam.CombineGlobally(sum), equal_to([10]), label="records")
        assert_that(
            written | beam.FlatMap(lambda s: [(e.reason, e.faces) for e in s.errors]),
            equal_to(
                [
                    ("truncated", 1),
                    ("empty", 0),
                    ("not_an_image", 2),
                    ("decompression_bomb", 1),
                    ("missing", 1),
                    ("path_escapes_images_dir", 1),
                ]
            ),
            label="errors",
        )
    # Shards go straight to names that carry the build id (no reader follows them before the
    # commit); the lease says the build is running. Nothing else, no temporary file, is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".val.{BUILD}.lease",
        f"val-00000-of-00002.{BUILD}.tfrecord",
        f"val-00001-of-00002.{BUILD}.tfrecord",
    ]


def test_a_bug_while_preparing_fails_the_build_instead_of_becoming_an_error_entry(tmp_path, monkeypatch):
    # Only UnusableImage means "this image": anything else raised on the writer's threads is a
    # defect, and must stop the bundle rather than be filed in errors.jsonl.
    def broken(annotation, *_):
        raise ZeroDivisionError(f"bug while preparing {annotation.filename}")

    monkeypatch.setattr(records, "make_record", broken)
    handle = _begin(tmp_path, 2)
    with pytest.raises(Exception, match="bug while preparing"), TestPipeline(argv=IN_MEMORY) as p:
        build = p | "Handle" >> beam.Create([handle])
        _ = p | transforms.WriteShards(str(FIXTURE_IMAGES), 2, BuildConfig(), build, str(FIXTURE_ANNOTATIONS), threads=3)
    # The shard being written was never renamed into place: only the lease is there.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".val.{BUILD}.lease"]


def test_write_shard_fn_needs_a_thread():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        transforms.WriteShardFn(str(FIXTURE_IMAGES), BuildConfig(), 0)


@pytest.mark.parametrize("threads, chunk", [(1, 1), (3, 1), (3, 4), (8, 8), (2, 50)])
def test_prefetch_hands_back_every_result_in_order_and_holds_a_bounded_number(threads, chunk):
    """The shard writer's pool takes the images `chunk` at a time: results (or the exception
    of each image, not of its chunk) come back in order, and no more than `threads` chunks
    beyond the one being handed back are ever submitted, so the records held stay bounded."""
    import concurrent.futures
    import threading

    lock, started, most_ahead = threading.Lock(), [], [0]
    yielded = []

    def work(n):
        with lock:
            started.append(n)
            most_ahead[0] = max(most_ahead[0], len(started) - len(yielded))
        if n % 7 == 3:
            raise ValueError(f"image {n}")
        return n * n

    items = list(range(101))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for item, result in prefetch(work, items, pool, threads, chunk):
            yielded.append(item)
            assert isinstance(result, ValueError) and str(result) == f"image {item}" if item % 7 == 3 else result == item * item
    assert yielded == items
    assert most_ahead[0] <= (threads + 1) * chunk


def test_prefetch_left_early_cancels_the_chunks_not_yet_started():
    import concurrent.futures
    import threading

    gate, started = threading.Event(), []

    def work(n):
        started.append(n)
        if n >= 2:
            gate.wait(10)
        return n

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        results = prefetch(work, range(100), pool, 4, 2)
        assert next(results) == (0, 0)
        results.close()  # the bundle failed: chunk (2, 3) may be running; the three after it never start
        gate.set()
    assert started in ([0, 1], [0, 1, 2, 3])


def test_images_per_task_keeps_every_thread_busy_and_the_records_held_under_the_bound():
    for size, grid in ((64, 7), (224, 7), (224, 224), (448, 14), (1024, 32), (4096, 7)):
        for threads in (1, 3, 8, 32):
            fn = transforms.WriteShardFn(str(FIXTURE_IMAGES), BuildConfig(input_size=size, grid_size=grid), threads)
            record = builds.blank_record(size, grid)  # the largest record of that config
            for images in (1, 5, 8 * threads, 10_000):
                chunk = fn._images_per_task(images)
                assert 1 <= chunk <= transforms.IMAGES_PER_TASK
                assert chunk == 1 or (threads + 1) * chunk * len(record.serialize()) <= transforms.HELD_RECORD_BYTES
                assert -(-images // chunk) >= min(threads, images)  # chunks enough for every thread
    default = transforms.WriteShardFn(str(FIXTURE_IMAGES), BuildConfig(), transforms.IMAGE_THREADS)
    assert default._images_per_task(400) == transforms.IMAGES_PER_TASK


def test_write_shards_writes_every_shard_once_even_those_no_image_lands_in(tmp_path):
    # 16 images over 40 shards: most shards get none, and each still comes out once, written empty.
    handle = _begin(tmp_path, 40)
    with TestPipeline(argv=IN_MEMORY) as p:
        build = p | "Handle" >> beam.Create([handle])
        written = p | transforms.WriteShards(str(FIXTURE_IMAGES), 40, BuildConfig(), build, str(FIXTURE_ANNOTATIONS))
        assert_that(written | beam.Map(lambda s: s.index), equal_to(list(range(40))), label="indices")
        images = (
            written
            | beam.Map(lambda s: (s.entry.records, len(s.errors)))
            | beam.CombineGlobally(lambda c: tuple(map(sum, zip(*c))))
        )
        assert_that(images, equal_to([(10, 6)]), label="images")
    empty = [p for p in tmp_path.iterdir() if p.suffix == ".tfrecord" and p.stat().st_size == 0]
    assert len(empty) >= 40 - 16 and len(list(tmp_path.glob("*.tfrecord"))) == 40


def _finalize(tmp_path, shards, annotated, max_error_fraction=0.5, num_shards=3):
    """Commits `shards` whose writers all read one annotation file, of totals `annotated`."""
    handle = commit.begin(OutputSpec(str(tmp_path), "val", num_shards, BUILD))
    shards = [
        dataclasses.replace(s, annotated=s.annotated or annotated, annotations_sha256=s.annotations_sha256 or "a" * 64)
        for s in shards
    ]
    with TestPipeline(argv=IN_MEMORY) as p:
        result = (p | "shards" >> beam.Create(shards)) | finalize.Finalize(
            BuildConfig(), max_error_fraction, p | "Handle" >> beam.Create([handle])
        )
        assert_that(result | beam.Map(lambda m: m["counts"]["records"]), equal_to([sum(s.entry.records for s in shards)]))


def _shard(tmp_path, index, records_in_it, errors=(), data=None):
    name = f"val-{index:05d}-of-00003.{BUILD}.tfrecord"
    data = b"x" * max(1, 16 * records_in_it) if data is None else data  # a record takes 16 bytes of framing at least
    (tmp_path / name).write_bytes(data)
    counts = records.Counts(
        records=records_in_it, errors=len(errors), faces_stored=records_in_it, targets=records_in_it
    ).as_dict()
    return ShardWritten(
        index, ShardEntry(name, records_in_it, len(data), hashlib.sha256(data).hexdigest()), counts, errors=tuple(errors)
    )


def test_finalize_commits_the_manifest_and_errors_file_and_removes_the_earlier_build(tmp_path):
    (tmp_path / "val-00000-of-00001.tfrecord").write_bytes(b"a shard of a build before build ids")
    (tmp_path / "val.errors.jsonl").write_bytes(b"")
    unusable = [ErrorEntry("b.jpg", 7, "missing", "no file", 0)]
    shards = [_shard(tmp_path, 0, 2, errors=unusable), _shard(tmp_path, 1, 0, data=b""), _shard(tmp_path, 2, 1)]
    annotated = {"images_annotated": 4, "faces_annotated": 3}
    _finalize(tmp_path, shards, {**annotated})
    manifest = json.loads((tmp_path / "val.manifest.json").read_text())
    assert manifest["build"] == BUILD and manifest["errors_file"] == f"val.{BUILD}.errors.jsonl"
    assert [(s["file"], s["records"], s["bytes"]) for s in manifest["shards"]] == [
        (f"val-00000-of-00003.{BUILD}.tfrecord", 2, 32),
        (f"val-00001-of-00003.{BUILD}.tfrecord", 0, 0),
        (f"val-00002-of-00003.{BUILD}.tfrecord", 1, 16),
    ]
    assert manifest["counts"]["errors"] == 1 and manifest["error_reasons"] == {"missing": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f"val-00000-of-00003.{BUILD}.tfrecord", f"val-00001-of-00003.{BUILD}.tfrecord", f"val-00002-of-00003.{BUILD}.tfrecord",
        f"val.{BUILD}.errors.jsonl", "val.manifest.json", *tfds_metadata.FILES,
    ])  # fmt: skip
    assert json.loads((tmp_path / f"val.{BUILD}.errors.jsonl").read_text())["filename"] == "b.jpg"


def test_finalize_refuses_counts_that_do_not_add_up(tmp_path):
    shards = [_shard(tmp_path, 0, 2), _shard(tmp_path, 1, 0, data=b""), _shard(tmp_path, 2, 0, data=b"")]
    with pytest.raises(Exception, match=r"counts do not add up: images_annotated 5 != records 2 \+ errors 0"):
        _finalize(tmp_path, shards, {"images_annotated": 5, "faces_annotated": 2})
    assert list(tmp_path.iterdir()) == []  # the build's files removed, its lease ended


def test_finalize_refuses_shards_whose_writers_read_different_annotation_files(tmp_path):
    # Each shard's writer reads the annotation file itself: edited while the build ran, the
    # shards would come from two versions of it, whatever the counts say.
    annotated = {"images_annotated": 3, "faces_annotated": 3}
    later = dataclasses.replace(
        _shard(tmp_path, 2, 1), annotated={"images_annotated": 4, "faces_annotated": 3}, annotations_sha256="b" * 64
    )
    shards = [_shard(tmp_path, 0, 1), _shard(tmp_path, 1, 1), later]
    with pytest.raises(
        Exception,
        match=r"val: annotations changed while the build ran: its shard writers read 2 different versions \(3 images, 4 images\)",
    ):
        _finalize(tmp_path, shards, annotated)
    assert list(tmp_path.iterdir()) == []  # the build's files removed, its lease ended


@pytest.mark.parametrize("indices, said", [((0, 2), r"missing: \[1\]"), ((0, 1, 1, 2), r"more than once: \[1\]")])
def test_finalize_refuses_a_shard_lost_or_delivered_twice_by_the_runner(tmp_path, indices, said):
    # What the commit gets is what it commits: a runner that drops or repeats a shard's result
    # (Beam's DaskRunner mixed the outputs of one step) must not make a build with a hole or a double.
    shards = [_shard(tmp_path, i, 1) for i in indices]
    images = len(indices)
    with pytest.raises(
        Exception, match=rf"not committed: the runner delivered {len(indices)} shard results for 3 shards \({said}\)"
    ):
        _finalize(tmp_path, shards, {"images_annotated": images, "faces_annotated": images})
    assert list(tmp_path.iterdir()) == []  # the build's files removed, its lease ended
