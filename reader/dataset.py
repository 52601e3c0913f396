"""`make_dataset`: a split's shards as a `tf.data.Dataset` of batches for MobileNetV2.

    dataset = reader.make_dataset("shards", "train", batch_size=32, training=True, seed=0, augment=True)
    model.fit(dataset, validation_data=reader.make_dataset("shards", "val", 32, training=False))

The pipeline, per epoch (one pass over the dataset is one epoch; Keras re-iterates it):

    shard files --(shuffled with the seed, when training)--> parallel interleave of the shards
    --> records, numbered per shard --(shuffle buffer, when training)--> damage check + parse +
    decode (+ flip), in parallel --> batch --> scale to [-1, 1], per batch --> prefetch

Evaluation (`training=False`) reads the shards one after the other, in manifest order, each in
file order, and yields every record exactly once, the last batch possibly short. Training reads
several shards at once, shuffles files and records from the seed (a new order each epoch, the
same sequence of orders for the same seed) and drops the last partial batch. The build places
records by a hash of their file name, so each shard is already a well-mixed sample and a buffer
over interleaved shards shuffles close to globally.

The dataset's length (`cardinality()`) comes from the manifest, so Keras shows progress and
needs no `steps_per_epoch`.

Damaged shards: TensorFlow reports a damaged record as a bare `DataLossError: corrupted record
at N`, without the file. Here local shards are first measured against the manifest (a size
that differs fails at once, naming the shard), and each shard is read with TensorFlow's errors
caught: a shard that ends before the count the manifest promises yields an end marker in place
of the first missing record, and the parse step fails on it with an `InvalidArgumentError`
whose message comes from a Python scan of that shard (`reader.tfrecord` framing): the shard, the
record's index, its byte offset and what is wrong ("val-00003-of-00008.tfrecord: record 17 at
byte 401923: data checksum mismatch"). With `skip_corrupt=True` the damaged records are left
out instead and counted in a `SkippedRecords`; the intact records after a bad data checksum are
still read (after a bad length the rest of the shard cannot be found, and counts as skipped).
Intact shards cost nothing for this: per record only native tf.data steps and one string
comparison run; the Python scan runs only for a shard that came up short.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading

import numpy as np
import tensorflow as tf

from reader import augment as augmentation
from reader import manifest as manifests
from reader import schema, tfrecord

AUTOTUNE = tf.data.AUTOTUNE
_READ_BUFFER = 1 << 20  # bytes buffered per open shard
_CHUNK = 64  # records per step of the skip_corrupt check
_INVALID = "image/object/invalid"
_log = logging.getLogger(__name__)


class SkippedRecords:
    """Counts the damaged records that `make_dataset(..., skip_corrupt=True)` left out.

    `count`: records skipped so far (over every epoch read); `problems`: one message per damage
    found, naming shard, record and byte offset. Safe to read while the dataset runs.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.problems: list[str] = []

    def add(self, count: int, problem: str) -> None:
        with self._lock:
            self.count += count
            self.problems.append(problem)

    def __repr__(self) -> str:
        return f"SkippedRecords(count={self.count}, problems={self.problems!r})"


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the parse step needs from the manifest, and what the element holds."""

    input_size: int
    grid_size: int
    resize: str
    min_face_px: float
    with_ignore: bool
    with_boxes: bool
    flip: bool
    dct_method: str

    @property
    def needs_faces(self) -> bool:
        return self.with_boxes or self.flip


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
    """The batches of one split, read from `data_dir` (a local path or gs://).

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
      again from the flipped boxes (see `reader.augment`).
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if augment and not training:
        raise ValueError("augment applies to training=True only: evaluation reads records as stored")
    if skipped is not None and not skip_corrupt:
        raise ValueError("skipped counts the records that skip_corrupt=True leaves out; pass skip_corrupt=True")
    manifest = manifests.load(data_dir, split)
    num_records = manifest.num_records
    drop_remainder = training if drop_remainder is None else drop_remainder
    if drop_remainder and num_records < batch_size:
        raise ValueError(f"{split} has {num_records} records, fewer than one batch of {batch_size} (drop_remainder=True)")
    if deterministic is None:
        deterministic = not training or seed is not None
    config = manifest.config
    layout = _Layout(
        input_size=int(config["input_size"]),
        grid_size=int(config["grid_size"]),
        resize=str(config.get("resize", "stretch")),
        min_face_px=float(config.get("min_face_px", 0.0)),
        with_ignore=with_ignore,
        with_boxes=with_boxes,
        flip=augment,
        dct_method=dct_method,
    )
    file_seed, record_seed, flip_seed = _seeds(seed)

    if not skip_corrupt:
        _check_sizes(manifest)
    records = _records(
        manifest,
        shuffle_files_seed=file_seed,
        training=training,
        parallel_shards=parallel_shards,
        deterministic=deterministic,
        on_damage=(skipped or SkippedRecords()) if skip_corrupt else None,
    )
    if training:
        records = records.shuffle(min(shuffle_buffer, max(num_records, 1)), seed=record_seed, reshuffle_each_iteration=True)

    # Records are batched first and parsed, decoded and scaled a batch at a time: one function
    # call per batch instead of one per record, and a vectorized parse.
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        coins = tf.data.Dataset.random(seed=flip_seed, rerandomize_each_iteration=True).batch(batch_size)
        batches = tf.data.Dataset.zip((batches, coins)).map(lambda located, coin: (*located, tf.equal(coin % 2, 1)))
    batches = batches.map(_batch_fn(manifest, layout), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if not skip_corrupt:
        count = num_records // batch_size if drop_remainder else math.ceil(num_records / batch_size)
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    return batches.prefetch(AUTOTUNE)


def _seeds(seed: int | None) -> tuple[int | None, int | None, int | None]:
    """Independent seeds for the file order, the record order and the flips."""
    if seed is None:
        return None, None, None
    files, records, flips = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    return int(files), int(records), int(flips)


# ---- records, with damage named -------------------------------------------------------------


def _check_sizes(manifest: manifests.Manifest) -> None:
    """Local shards must have the size the manifest says: a longer shard would hide records
    past the promised count, a shorter one is damaged. (Remote shards: found while reading.)"""
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        if not manifests.is_local(path):
            continue
        local = path.removeprefix("file://")
        try:
            size = os.path.getsize(local)
        except OSError as e:
            raise FileNotFoundError(f"{local}: cannot read shard: {e.strerror}") from None
        if size != entry.bytes:
            raise ValueError(
                f"{local}: {size} bytes, the manifest says {entry.bytes}: rebuilt or damaged since the manifest was "
                f"written (python -m reader.check names the problem; make_dataset(skip_corrupt=True) reads what is intact)"
            )


def _records(
    manifest: manifests.Manifest,
    *,
    shuffle_files_seed: int | None,
    training: bool,
    parallel_shards: int,
    deterministic: bool,
    on_damage: SkippedRecords | None,
) -> tf.data.Dataset:
    """(shard number, record index, serialized record) of every shard: interleaved when
    training, one shard after another otherwise. See `_shard_reader` for the damage markers."""
    paths = manifest.shard_paths()
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.range(len(paths), dtype=tf.int64),
            paths,
            tf.constant([entry.records for entry in manifest.shards], tf.int64),
        )
    )
    read = _shard_reader(on_damage)
    if not training or len(paths) == 1:
        return files.flat_map(read)
    files = files.shuffle(len(paths), seed=shuffle_files_seed, reshuffle_each_iteration=True)
    return files.interleave(
        read,
        cycle_length=min(parallel_shards, len(paths)),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )


def _shard_reader(on_damage: SkippedRecords | None):
    """(shard number, path, records the manifest promises) -> (shard, index, record) per record.

    TensorFlow's read errors are caught (`ignore_errors` ends the shard at its first damaged
    record), an empty record marks where the shard ended, and the records are numbered by
    zipping with range(promised): an intact shard never reaches the marker, a shard that came up
    short after k records yields the marker as record k. Only native tf.data steps run per record
    here (a function per element, or even per chunk of records, costs more than the reading).

    Without `on_damage`, the marker travels on and `_damage_check` fails on it. With it, records
    go in chunks through a check that swaps a marker for the intact records found after the
    damage by a Python scan of the shard, counting the damaged ones.
    """

    def read_shard(shard, path, promised):
        records = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER).ignore_errors(log_warning=False)
        records = records.concatenate(tf.data.Dataset.from_tensors(_END))
        numbered = tf.data.Dataset.zip((tf.data.Dataset.from_tensors(shard).repeat(), tf.data.Dataset.range(promised), records))
        if on_damage is None:
            return numbered
        return numbered.batch(_CHUNK).map(lambda s, i, r: _recover_chunk(s, i, r, path, promised, on_damage)).unbatch()

    return read_shard


_END = tf.constant(b"")  # no record of a build is empty: every one holds every schema key


def _recover_chunk(shard, index, records, path, promised, on_damage: SkippedRecords):
    """A chunk of (shard, index, record) whose last record may be the end marker: the marker is
    replaced by the intact records after the damage (py_function, only then)."""

    def recover(path, read, promised):
        found, problem = _rescan(path.numpy().decode(), int(read.numpy()), int(promised.numpy()), on_damage)
        return tf.constant(found, tf.string, shape=[len(found)]), tf.constant(problem)

    def replace():
        found, problem = tf.py_function(recover, [path, index[-1], promised], [tf.string, tf.string])
        ok = tf.debugging.Assert(tf.equal(problem, ""), [problem], summarize=1)
        with tf.control_dependencies([ok]):
            found = tf.reshape(found, [-1])
        n = tf.shape(found, out_type=tf.int64)[0]
        return (
            tf.concat([shard[:-1], tf.fill([n], shard[0])], 0),
            tf.concat([index[:-1], tf.fill([n], tf.constant(-1, tf.int64))], 0),
            tf.concat([records[:-1], found], 0),
        )

    ended = tf.equal(records[-1], _END)
    return tf.cond(ended, replace, lambda: (shard, index, records))


def _damage_check(manifest: manifests.Manifest):
    """(shard [B], index [B], record [B]) -> records, failing on an end marker with a message
    that names the shard, the record and its byte offset (found by a Python scan of the shard,
    only then)."""
    paths = tf.constant(manifest.shard_paths())
    promised = tf.constant([entry.records for entry in manifest.shards], tf.int64)

    def describe(path, read, promised):
        _, problem = _rescan(path.numpy().decode(), int(read.numpy()), int(promised.numpy()), None)
        return problem or f"{path.numpy().decode()}: record {int(read.numpy())} is empty: not a record of this schema"

    def fail(shard, index, records, ended):
        first = tf.argmax(tf.cast(ended, tf.int32))
        shard, index = shard[first], index[first]
        message = tf.py_function(describe, [tf.gather(paths, shard), index, tf.gather(promised, shard)], tf.string)
        ok = tf.debugging.Assert(tf.equal(message, ""), [message], summarize=1)
        with tf.control_dependencies([ok]):
            return tf.identity(records)

    def check(shard, index, records):
        ended = tf.equal(records, _END)
        return tf.cond(tf.reduce_any(ended), lambda: fail(shard, index, records, ended), lambda: records)

    return check


def _rescan(path: str, already_read: int, expected: int, on_damage: SkippedRecords | None) -> tuple[list[bytes], str]:
    """For a shard whose read came up short or long: (intact records after the first
    `already_read`, problem). The problem is "" when `on_damage` takes the damage (it is then
    counted there); otherwise it names shard, record and byte offset."""
    try:
        f = manifests.open_binary(path)
    except Exception as e:  # FileNotFoundError, tf.errors.NotFoundError, permissions
        return [], f"{path}: cannot open shard: {e}"
    intact, damage, end = [], [], 0
    with f:
        for span, data, problem in tfrecord.walk_records(f):
            if problem is not None:
                damage.append(str(tfrecord.CorruptRecordError(path, span.index, span.offset, problem)))
            elif span.index >= already_read:
                intact.append(data)
            end = span.index + 1
        found = already_read + len(intact)
    if not damage:
        if found == expected:  # a transient read error that did not come back
            return intact, ""
        message = f"{path}: holds {end} records, the manifest promises {expected}"
        if found < expected:
            message += f"; the shard ends early, after record {end - 1}"
        return ([], message) if on_damage is None or found > expected else (intact, _skip(on_damage, expected - found, message))
    if on_damage is None:
        return [], damage[0]
    if found > expected:
        return [], f"{path}: holds more intact records ({found}) than the manifest promises ({expected})"
    return intact, _skip(on_damage, expected - found, "; ".join(damage))


def _skip(on_damage: SkippedRecords, count: int, problem: str) -> str:
    _log.warning("skipping %d damaged record(s): %s", count, problem)
    on_damage.add(count, problem)
    return ""


# ---- parse, decode, flip --------------------------------------------------------------------


def _batch_fn(manifest: manifests.Manifest, layout: _Layout):
    """(shard [B], index [B], record [B] (, flip [B])) -> (images, targets (, meta)) of a batch."""
    full_spec = schema.tf_feature_spec(layout.grid_size)
    keys = [schema.ENCODED, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.GRID]
    if layout.with_ignore or layout.flip:
        keys.append(schema.IGNORE)
    if layout.needs_faces:
        keys += [*schema.BOX_KEYS, _INVALID, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH]
    if layout.with_boxes:
        keys.append(schema.FILENAME)
    spec = {key: full_spec[key] for key in keys}
    s, size = layout.grid_size, layout.input_size
    check = _damage_check(manifest)

    def decode(features):
        encoded, image_format, height, width, flip = features
        image = _decode_image(encoded, image_format, height, width, size, layout.dct_method)
        if layout.flip:
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image

    def batch_fn(shard, index, records, flip=None):
        f = tf.io.parse_example(check(shard, index, records), spec)
        images = tf.map_fn(
            decode,
            (
                f[schema.ENCODED][:, 0],
                f[schema.FORMAT][:, 0],
                f[schema.HEIGHT][:, 0],
                f[schema.WIDTH][:, 0],
                tf.zeros_like(shard, tf.bool) if flip is None else flip,
            ),
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )
        grid = tf.reshape(f[schema.GRID], [-1, s, s, 5])
        ignore = tf.reshape(f[schema.IGNORE], [-1, s, s]) if schema.IGNORE in f else None
        boxes = invalid = None
        if layout.needs_faces:
            boxes = tf.stack([f[key] for key in schema.BOX_KEYS], axis=-1)  # ragged [B, None, 4]
            invalid = f[_INVALID]
        if flip is not None:
            boxes, flipped_grid, flipped_ignore = augmentation.flip_targets_batch_tf(
                boxes, invalid, f[schema.ORIGINAL_HEIGHT][:, 0], f[schema.ORIGINAL_WIDTH][:, 0], flip,
                grid_size=s, input_size=size, resize=layout.resize, min_face_px=layout.min_face_px,
            )
            grid = tf.where(flip[:, None, None, None], flipped_grid, grid)
            ignore = tf.where(flip[:, None, None], flipped_ignore, ignore)
        targets = tf.concat([grid, ignore[..., None]], axis=-1) if layout.with_ignore else grid
        # Dequantize (MIN_COMBINED over [-1, 1]: -1 + x * 2 / 255) gives the same floats as a
        # cast, multiply and subtract, in one pass over memory instead of three: float images are
        # four times the size of the decoded ones, and three passes cost a third of the decode.
        images = tf.quantization.dequantize(tf.bitcast(images, tf.quint8), -1.0, 1.0, mode="MIN_COMBINED")
        if not layout.with_boxes:
            return images, targets
        meta = {
            "boxes": boxes,
            "invalid": invalid,
            "filename": f[schema.FILENAME][:, 0],
            "original_size": tf.concat([f[schema.ORIGINAL_HEIGHT], f[schema.ORIGINAL_WIDTH]], 1),
        }
        return images, targets, meta

    return batch_fn


def _decode_image(encoded, image_format, height, width, size: int, dct_method: str):
    """uint8 [size, size, 3] from image/encoded, as image/format says (jpeg or raw)."""

    def raw():
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.stack([height, width, 3]))

    def jpeg():
        return tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)

    image = tf.cond(tf.equal(image_format, "raw"), raw, jpeg)
    return tf.ensure_shape(image, [size, size, 3])
