"""Reader benchmark: how fast the shards reach training, against the decode-only limit and the
article-style Sequence that facegrid replaces.

All in one run on the val build (`BenchData`):
- `make_dataset` records/s: training=True (shuffled, interleaved, no augmentation), the same with
  the flip, and training=False (evaluation order); JPEG shards and raw shards.
- `ShardSequence` records/s: batches read by `workers` threads in order, as Keras' enqueuer
  does, and by one thread.
- the limit: `tf.io.decode_jpeg` alone over the same stored JPEG bytes (held in memory), mapped
  with the same parallelism (AUTOTUNE) and batched the same way; with the reader's default DCT
  (TensorFlow's, INTEGER_FAST) and with INTEGER_ACCURATE (Pillow's exact pixels), each compared
  with make_dataset decoding the same way.
- the baseline, benchmarks/seed_baseline.py (the article-style Sequence, rewritten here), on the
  source images: it makes one example per face, so its epoch is as long as the annotation file
  has faces. A full epoch would take
  hours, so a number of its batches are timed and its epoch time is extrapolated from that rate
  over its full length (said in the table).

Every candidate is timed in turn, `repeats` rounds after a warm-up round, and its best pass is
kept: the machine may be shared, and taking turns lets a passing load hit all candidates alike.
Records/s counts records (images).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.data import BenchData
from reader.core import storage

BATCH_SIZE = 32
SPLIT = "val"


@dataclasses.dataclass(frozen=True)
class Timing:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def _best(passes: list[Timing]) -> Timing:
    return min(passes, key=lambda t: t.seconds / max(t.records, 1))


def _dataset_pass(dataset):
    """One timed pass over a tf.data pipeline."""

    def one_pass() -> Timing:
        start, records = time.perf_counter(), 0
        for element in dataset:
            records += int(element[0].shape[0])
        return Timing(records, time.perf_counter() - start)

    return one_pass


def _sequence_pass(sequence, workers: int):
    """One timed epoch of a ShardSequence, its batches read by `workers` threads in order."""

    def one_pass() -> Timing:
        start = time.perf_counter()
        if workers <= 1:
            records = sum(len(sequence[i][0]) for i in range(len(sequence)))
        else:
            with ThreadPoolExecutor(workers) as pool:
                records = sum(len(images) for images, _ in pool.map(sequence.__getitem__, range(len(sequence))))
        seconds = time.perf_counter() - start
        sequence.on_epoch_end()
        return Timing(records, seconds)

    return one_pass


def _race(passes: dict, repeats: int) -> dict[str, Timing]:
    """Times every candidate in turn, `repeats` rounds after a warm-up round, and keeps each
    one's best pass: a passing load then hits all candidates alike rather than one of them."""
    for one_pass in passes.values():
        one_pass()
    timings: dict[str, list[Timing]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, one_pass in passes.items():
            timings[name].append(one_pass())
    return {name: _best(t) for name, t in timings.items()}


def _stored_jpegs(data_dir: str) -> list[bytes]:
    from reader.core import manifest, schema, tfrecord

    m = manifest.load(data_dir, SPLIT)
    images = []
    for entry, path in zip(m.shards, m.shard_paths()):
        with storage.open_binary(path, storage.shard_bound(entry.bytes)) as f:
            images += [schema.Record.parse(data).image for _, data in tfrecord.iter_records(f, entry.file)]
    return images


def _decode_limit(images: list[bytes], dct_method: str):
    import tensorflow as tf

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(images))
        .map(lambda data: tf.io.decode_jpeg(data, channels=3, dct_method=dct_method), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return _dataset_pass(dataset.map(lambda images: (images,)))


def _baseline(data: BenchData, batches: int) -> dict:
    """Times `batches` batches of the seed Sequence (after one warm-up batch)."""
    from benchmarks.seed_baseline import FacePerExampleSequence

    generator = FacePerExampleSequence(data.images_dir, data.annotations)
    batches = min(batches, len(generator) - 1)
    generator[0]
    start, examples = time.perf_counter(), 0
    for i in range(1, batches + 1):
        x, _ = generator[i]
        examples += len(x)
    seconds = time.perf_counter() - start
    rate = examples / seconds
    return {
        "examples_per_epoch": len(generator.examples),
        "examples_timed": examples,
        "examples_per_s": rate,
        "epoch_s_extrapolated": len(generator.examples) / rate,
    }


def run(data: BenchData, repeats: int = 3, baseline_batches: int = 12, workers: int = 2) -> dict:
    """Measures the readers on `data`; prints a table and returns the figures (records/s, s)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import reader

    figures: dict = {"batch_size": BATCH_SIZE, "cpu_count": os.cpu_count(), "repeats": repeats}
    images = _stored_jpegs(data.shards_jpeg)
    records = len(images)
    figures["records"] = records

    def dataset(shards, training, **kwargs):
        pipeline = reader.make_dataset(shards, SPLIT, BATCH_SIZE, training=training, seed=0 if training else None, **kwargs)
        return _dataset_pass(pipeline)

    candidates = {
        "decode_only_limit": (_decode_limit(images, ""), "tf.io.decode_jpeg alone, TF's default DCT (the reader's)"),
        "decode_only_limit_accurate_dct": (_decode_limit(images, "INTEGER_ACCURATE"), "tf.io.decode_jpeg alone, accurate DCT"),
        "make_dataset_train": (dataset(data.shards_jpeg, True), "training=True, no augmentation"),
        "make_dataset_train_accurate_dct": (
            dataset(data.shards_jpeg, True, dct_method="INTEGER_ACCURATE"),
            "the same, Pillow-exact pixels",
        ),
        "make_dataset_train_flip": (dataset(data.shards_jpeg, True, augment=True), "training=True, augment=True"),
        "make_dataset_eval": (dataset(data.shards_jpeg, False), "training=False"),
        "make_dataset_train_raw": (dataset(data.shards_raw, True), "raw shards"),
        "make_dataset_eval_raw": (dataset(data.shards_raw, False), "raw shards"),
    }
    sequence = reader.ShardSequence(data.shards_jpeg, SPLIT, BATCH_SIZE, shuffle=True, seed=0)
    raw_sequence = reader.ShardSequence(data.shards_raw, SPLIT, BATCH_SIZE, shuffle=True, seed=0)
    candidates["shard_sequence"] = (_sequence_pass(sequence, workers), f"shuffle=True, {workers} threads")
    candidates["shard_sequence_1_thread"] = (_sequence_pass(sequence, 1), "shuffle=True, 1 thread")
    candidates["shard_sequence_raw"] = (_sequence_pass(raw_sequence, workers), f"raw shards, {workers} threads")
    timings = _race({name: one_pass for name, (one_pass, _) in candidates.items()}, repeats)
    del images

    rows = []
    for name, (_, note) in candidates.items():
        figures[name] = round(timings[name].rate, 1)
        rows.append((name, timings[name].rate, records / timings[name].rate, note))

    baseline = _baseline(data, baseline_batches)
    figures["baseline"] = baseline
    figures["ratio_train_to_limit"] = round(figures["make_dataset_train"] / figures["decode_only_limit"], 3)
    figures["ratio_train_accurate_dct_to_accurate_limit"] = round(
        figures["make_dataset_train_accurate_dct"] / figures["decode_only_limit_accurate_dct"], 3
    )
    epoch_s = records / figures["make_dataset_train"]
    figures["make_dataset_epoch_s"] = round(epoch_s, 2)
    figures["speedup_epoch_vs_baseline"] = round(baseline["epoch_s_extrapolated"] / epoch_s, 1)

    print(
        f"\nreader benchmark: {records} records ({SPLIT}), batch {BATCH_SIZE}, {os.cpu_count()} cores, best of {repeats} rounds"
    )
    print(f"{'what':30s} {'records/s':>10s} {'epoch s':>9s}  notes")
    for name, rate, seconds, note in rows:
        print(f"{name:30s} {rate:10.0f} {seconds:9.2f}  {note}")
    print(
        f"{'seed Sequence (baseline)':30s} {baseline['examples_per_s']:10.1f} {baseline['epoch_s_extrapolated']:9.0f}  "
        f"examples/s (one per face); epoch of {baseline['examples_per_epoch']} examples extrapolated "
        f"from {baseline['examples_timed']} timed"
    )
    print(
        f"make_dataset train / decode-only limit: {figures['ratio_train_to_limit']:.2f} (goal >= 0.8); "
        f"with the accurate DCT on both sides: {figures['ratio_train_accurate_dct_to_accurate_limit']:.2f}"
    )
    print(
        f"epoch: make_dataset {epoch_s:.1f} s vs baseline {baseline['epoch_s_extrapolated']:.0f} s "
        f"= {figures['speedup_epoch_vs_baseline']:.0f}x sooner (goal >= 100x); "
        f"ShardSequence {figures['shard_sequence']:.0f} records/s (goal >= 1500)"
    )
    sys.stdout.flush()
    return figures


if __name__ == "__main__":  # python -m benchmarks.read ANNOTATIONS IMAGES_DIR SHARDS_JPEG SHARDS_RAW
    print(run(BenchData(*sys.argv[1:5])))
