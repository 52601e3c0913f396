"""`make_dataset`: a split's shards as a `tf.data.Dataset` of (images, targets) batches for
MobileNetV2, of the length its manifest gives (Keras needs no `steps_per_epoch`).

    dataset = reader.make_dataset("shards", "train", batch_size=32, training=True, seed=0, augment=True)

Per epoch: shard files (shuffled from the seed when training) -> parallel interleave -> records
numbered per shard (-> shuffle buffer when training) -> checks, parse, decode (, flip) -> batch
-> scale to [-1, 1] -> prefetch. Evaluation reads every record once, in manifest and file order.
Why the checks look the way they do: an intact shard costs only native tf.data steps per record
and about forty vectorized ops per batch; Python runs (reader.data.damage) only for a batch they
flag, so that every failure names its shard and record where TensorFlow's own errors name
neither. What the reader promises (shapes, order, what damaged or foreign input gets,
skip_corrupt, which paths it reads) is docs/DESIGN.md's: "Python API of the reader", "Bad
input", "Files the tools open". Local and gs:// shards are read by TensorFlow's TFRecordDataset;
TensorFlow 2.21 has no s3:// filesystem, so s3:// shards come through reader.core.storage
(`damage.records_through_storage`), the same records in the same order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from reader.core import manifest as manifests
from reader.core import storage
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
        manifest,
        split,
        batch_size,
        training,
        seed=seed,
        augment=augment,
        skip_corrupt=skip_corrupt,
        skipped=skipped,
        shuffle_buffer=shuffle_buffer,
        parallel_shards=parallel_shards,
        deterministic=deterministic,
        drop_remainder=drop_remainder,
    )
    element = parse.Element(
        manifest.config, with_ignore=with_ignore, with_boxes=with_boxes, flip=plan.flip, dct_method=dct_method
    )
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
    batches = num_records // batch_size if drop_remainder else math.ceil(num_records / batch_size)
    length = None if skip_corrupt else batches
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
