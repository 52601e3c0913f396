"""`make_dataset`: a split's shards as a `tf.data.Dataset` of batches for MobileNetV2.

    dataset = reader.make_dataset("shards", "train", batch_size=32, training=True, seed=0, augment=True)
    model.fit(dataset, validation_data=reader.make_dataset("shards", "val", 32, training=False), shuffle=False)

The pipeline, per epoch (one pass over the dataset is one epoch; Keras re-iterates it):

    shard files --(shuffled with the seed, when training)--> parallel interleave of the shards
    --> records, numbered per shard --(shuffle buffer, when training)--> checks + parse +
    decode (+ flip), in parallel --> batch --> scale to [-1, 1], per batch --> prefetch

Evaluation (`training=False`) reads the shards one after the other, in manifest order, each in
file order, and yields every record exactly once, the last batch possibly short. Training reads
several shards at once, shuffles files and records from the seed (a new order each epoch, the
same sequence of orders for the same seed) and drops the last partial batch. The build places
records by a hash of their file name, so each shard is already a well-mixed sample and a buffer
over interleaved shards shuffles close to globally.

The dataset's length (`cardinality()`) comes from the manifest, so Keras shows progress and
needs no `steps_per_epoch`.

Shards that disagree with the manifest, and records that do not parse, fail with an error that
names the shard (and record); TensorFlow's own errors (`DataLossError: corrupted record at N`,
`Could not parse example input`, a failed reshape) name neither:
- A shard the manifest lists but the directory lacks fails `make_dataset` at once
  (FileNotFoundError), with or without skip_corrupt; local shards are also measured and hashed
  against the manifest (a size or sha256 that differs fails at once, naming the first damaged
  record when a scan finds one), unless skip_corrupt. A manifest holding a value no build writes
  fails `reader.core.manifest.load` (ManifestError, one line naming file and field), and a split
  whose shards hold no record fails at once (ValueError, "no records in val"). A shard that vanishes later (a new build
  committed and removed it) ends its read and is named as missing, instead of TensorFlow
  retrying the open forever.
- Each shard must yield exactly the records its manifest entry promises. Local shards are
  counted from their record headers when the dataset is made (a seek per record, no data read):
  one holding another count fails at once (ValueError, "...: holds 310 records, the manifest
  promises 309"). While reading, the reader marks a shard that comes up short (damage:
  TensorFlow's read errors are caught, ending the shard at its first damaged record) and, where
  shards were not counted (remote ones), one that holds more (`reader.data.damage`). The batch
  step fails on a marker with an `InvalidArgumentError` whose message comes from a Python scan
  of that shard (`reader.core.tfrecord` framing): the shard, the record's index, its byte offset and
  what is wrong ("val-00003-of-00008.<build>.tfrecord: record 17 at byte 401923: data checksum
  mismatch"), or the counts.
- A record of another schema (a key missing or of another count), another grid or image size
  than the manifest's config, targets or boxes that are not finite numbers, or bytes that are
  not an Example fails with the shard, record and problem, as the checker would say it ("...tfrecord: record 17: missing key 'target/grid'",
  "...: expected 320 values for the manifest's grid_size 8, found 245 (a 7x7 grid)"). A value of
  another kind fails TensorFlow's parse, which is given the record's name to say
  ("Name: ...tfrecord: record 17, Key: image/height ... Data types don't match").
With `skip_corrupt=True` damaged records are left out instead and counted in a `SkippedRecords`;
the intact records after a bad data checksum are still read (after a bad length the rest of the
shard cannot be found, and counts as skipped). A shard holding more records than promised, or
records that do not parse, still fail.

Intact shards cost little for this: per record only native tf.data steps run (no function
call); per batch, about forty vectorized ops check the markers, the framing of each Example and
the parsed lengths and sizes (a few percent of the CPU time a batch takes, most of it JPEG
decoding). Python runs only for a batch they flag. (Messages passed through TensorFlow's
assertion print quotes escaped: missing key \\'target/grid\\'.)

Reads local, gs:// and s3:// paths. Local and gs:// shards are read by TensorFlow's own
TFRecordDataset (native code, outside the GIL); TensorFlow 2.21 has no s3:// filesystem, so
s3:// shards are read through reader.core.storage (`damage.records_through_storage`): the same
records in the same order for a seed, and damage found and named the same way.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from reader.core import storage
from reader.core import manifest as manifests
from reader.data import damage, parse

# Re-exported: callers import it from here, beside make_dataset.
from reader.data.damage import SkippedRecords

AUTOTUNE = tf.data.AUTOTUNE
NATIVE_SCHEMES = ("file", "gs")  # what TensorFlow's TFRecordDataset reads itself (2.21 has no s3 filesystem)


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    training: bool,
    *,
    seed: int | None = None,
    augment: bool = False,
    with_ignore: bool = False,
    with_boxes: bool = False,
    skip_corrupt: bool = False,
    skipped: SkippedRecords | None = None,
    shuffle_buffer: int = 2048,
    parallel_shards: int = 8,
    deterministic: bool | None = None,
    drop_remainder: bool | None = None,
    dct_method: str = "",
) -> tf.data.Dataset:
    """The batches of one split, read from `data_dir` (a local path, gs:// or s3://).

    Elements (B = batch_size, S = grid size, usually 7, size = input size, usually 224):
      images  float32 [B, size, size, 3] in [-1, 1] (x / 127.5 - 1, as MobileNetV2 expects)
      targets float32 [B, S, S, 5], channels (h, w, y, x, obj); with `with_ignore=True`
              [B, S, S, 6], the `target/ignore` mask appended as channel 5 (the layout of
              `train.loss`), so `model.fit` takes the dataset as it is.
    With `with_boxes=True` a third item, a dict for evaluation (not for `model.fit`):
      "boxes"    float32 ragged [B, None, 4], the stored faces in rel_xyxy (flipped with the image)
      "invalid"  int64 ragged [B, None], WIDER's invalid flag per face
      "filename" string [B]; "original_size" int64 [B, 2], (height, width) of the source image

    training: shuffle (files and records, from `seed`), read `parallel_shards` shards at once,
      drop the last partial batch (unless `drop_remainder` says otherwise); False reads every
      record once, in manifest order.
    seed: fixes the sequence of epoch orders and flips; None draws one at random.
    augment: random horizontal flip (probability 1/2, training only); the targets are encoded
      again from the flipped boxes (see `reader.data.augment`).
    skip_corrupt: leave damaged records out instead of failing; they are counted in `skipped`
      when given, and logged. The dataset's length is then unknown (cardinality UNKNOWN), since
      an epoch may come out shorter than the manifest says.
    shuffle_buffer: records held by the shuffle buffer (serialized, about 30 KB each for JPEG).
    deterministic: whether parallel steps keep their order; default: True unless training
      without a seed.
    dct_method: `tf.io.decode_jpeg`'s; the default "" is TensorFlow's own (INTEGER_FAST, the
      fastest, off by a grey level or two on average from Pillow); INTEGER_ACCURATE gives exactly
      Pillow's pixels, what `ShardSequence` and `Record.pixels` give.
    """
    _check_arguments(data_dir, batch_size, training, augment, skip_corrupt, skipped)
    manifest = manifests.load(data_dir, split)
    if manifest.num_records == 0:
        raise ValueError(manifests.no_records(data_dir, split))
    plan = _plan(
        manifest, split, batch_size, training, seed=seed, augment=augment, skip_corrupt=skip_corrupt, skipped=skipped,
        shuffle_buffer=shuffle_buffer, parallel_shards=parallel_shards, deterministic=deterministic,
        drop_remainder=drop_remainder,
    )
    element = parse.Element(manifest.config, with_ignore=with_ignore, with_boxes=with_boxes, flip=plan.flip, dct_method=dct_method)
    gated = damage.check_shards(manifest, strict=not skip_corrupt)  # fails at once on shards that disagree
    records = _records(manifest, plan, gated)
    batches = _batches(records, plan)
    batches = batches.map(parse.batch_fn(manifest, element, gated), num_parallel_calls=AUTOTUNE, deterministic=plan.deterministic)
    if plan.length is not None:
        batches = batches.apply(tf.data.experimental.assert_cardinality(plan.length))
    return batches.prefetch(AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `training` decides, and the options it gives defaults, resolved once (`_plan`)."""

    batch_size: int
    drop_remainder: bool
    deterministic: bool  # parallel steps keep their order
    shuffle_files: bool  # a new file order each epoch, `cycle_length` shards read at once; else one after another
    cycle_length: int
    shuffle_buffer: int | None  # records held by the record shuffle; None: read order
    flip: bool
    file_seed: int | None
    record_seed: int | None
    flip_seed: int | None
    on_damage: SkippedRecords | None  # skip_corrupt: where damaged records are counted; None: they fail
    length: int | None  # batches per epoch; None (unknown) when damaged records may be left out


def _check_arguments(data_dir: str, batch_size: int, training: bool, augment: bool, skip_corrupt: bool, skipped) -> None:
    """The argument checks that need no manifest: they fail before anything is read."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if augment and not training:
        raise ValueError("augment applies to training=True only: evaluation reads records as stored")
    if skipped is not None and not skip_corrupt:
        raise ValueError("skipped counts the records that skip_corrupt=True leaves out; pass skip_corrupt=True")
    if storage.scheme(data_dir) not in storage.SCHEMES:
        raise ValueError(f"{data_dir}: make_dataset reads local, gs:// and s3:// directories only")


def _plan(
    manifest: manifests.Manifest,
    split: str,
    batch_size: int,
    training: bool,
    *,
    seed: int | None,
    augment: bool,
    skip_corrupt: bool,
    skipped: SkippedRecords | None,
    shuffle_buffer: int,
    parallel_shards: int,
    deterministic: bool | None,
    drop_remainder: bool | None,
) -> _Plan:
    """The `_Plan` of these arguments; fails when drop_remainder leaves not one batch."""
    num_records, num_shards = manifest.num_records, len(manifest.shards)
    drop_remainder = training if drop_remainder is None else drop_remainder
    if drop_remainder and num_records < batch_size:
        raise ValueError(f"{split} has {num_records} records, fewer than one batch of {batch_size} (drop_remainder=True)")
    file_seed, record_seed, flip_seed = _seeds(seed)
    if skip_corrupt:
        length = None
    else:
        length = num_records // batch_size if drop_remainder else math.ceil(num_records / batch_size)
    return _Plan(
        batch_size=batch_size,
        drop_remainder=drop_remainder,
        # Unseeded training has no order to keep, so parallel steps may hand on whatever is ready.
        deterministic=(not training or seed is not None) if deterministic is None else deterministic,
        shuffle_files=training and num_shards > 1,
        cycle_length=min(parallel_shards, num_shards),
        shuffle_buffer=min(shuffle_buffer, max(num_records, 1)) if training else None,
        flip=augment,
        file_seed=file_seed,
        record_seed=record_seed,
        flip_seed=flip_seed,
        on_damage=(skipped or SkippedRecords()) if skip_corrupt else None,
        length=length,
    )


def _seeds(seed: int | None) -> tuple[int | None, int | None, int | None]:
    """Independent seeds for the file order, the record order and the flips."""
    if seed is None:
        return None, None, None
    file_seed, record_seed, flip_seed = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    return int(file_seed), int(record_seed), int(flip_seed)


def _records(manifest: manifests.Manifest, plan: _Plan, gated: bool) -> tf.data.Dataset:
    """(record index, (shard number, serialized record)) of every shard, in the plan's order, with
    the markers of `damage.shard_reader` where a shard disagrees with its manifest entry."""
    paths = manifest.shard_paths()
    shards = tf.data.Dataset.from_tensor_slices(
        (
            tf.range(len(paths), dtype=tf.int64),
            paths,
            tf.constant([entry.records for entry in manifest.shards], tf.int64),
        )
    )
    read = damage.shard_reader(plan.on_damage, gated, native=storage.scheme(manifest.data_dir) in NATIVE_SCHEMES)
    if plan.shuffle_files:
        shards = shards.shuffle(len(paths), seed=plan.file_seed, reshuffle_each_iteration=True)
        records = shards.interleave(
            read,
            cycle_length=plan.cycle_length,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=plan.deterministic,
        )
    else:
        records = shards.flat_map(read)
    if plan.shuffle_buffer is not None:
        records = records.shuffle(plan.shuffle_buffer, seed=plan.record_seed, reshuffle_each_iteration=True)
    return records


def _batches(records: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Records in batches (index [B], (shard [B], record [B]) (, flip [B])), still serialized:
    `parse.batch_fn` then runs once per batch instead of once per record, and parses vectorized."""
    batches = records.batch(plan.batch_size, drop_remainder=plan.drop_remainder)
    if not plan.flip:
        return batches
    coins = tf.data.Dataset.random(seed=plan.flip_seed, rerandomize_each_iteration=True).batch(plan.batch_size)
    return tf.data.Dataset.zip((batches, coins)).map(lambda numbered, coin: (*numbered, tf.equal(coin % 2, 1)))
