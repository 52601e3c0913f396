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
  (FileNotFoundError), with or without skip_corrupt; local shards are also measured against
  the manifest (a size that differs fails at once). A shard that vanishes later (a new build
  committed and removed it) ends its read and is named as missing, instead of TensorFlow
  retrying the open forever.
- Each shard must yield exactly the records its manifest entry promises. Local shards are
  counted from their record headers when the dataset is made (a seek per record, no data read):
  one holding another count fails at once (ValueError, "...: holds 310 records, the manifest
  promises 309"). While reading, the reader marks a shard that comes up short (damage:
  TensorFlow's read errors are caught, ending the shard at its first damaged record) and, where
  shards were not counted (remote ones), one that holds more; see `_shard_reader`. The batch
  step fails on a marker with an `InvalidArgumentError` whose message comes from a Python scan
  of that shard (`reader.core.tfrecord` framing): the shard, the record's index, its byte offset and
  what is wrong ("val-00003-of-00008.<build>.tfrecord: record 17 at byte 401923: data checksum
  mismatch"), or the counts.
- A record of another schema (a key missing or of another count), another grid or image size
  than the manifest's config, or bytes that are not an Example fails with the shard, record
  and problem, as the checker would say it ("...tfrecord: record 17: missing key 'target/grid'",
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

Reads local and gs:// paths (tf.io.gfile); TensorFlow 2.21 has no s3:// filesystem, so an s3://
data_dir is refused with a message saying so (`ShardSequence` reads s3://).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading

import numpy as np
import tensorflow as tf

from reader.check import records as check_records
from reader.core import manifest as manifests
from reader.core import schema, tfrecord
from reader.data import augment as augmentation

AUTOTUNE = tf.data.AUTOTUNE
READABLE_SCHEMES = ("file", "gs")  # what tf.io.gfile reads here (TensorFlow 2.21 has no s3 filesystem)
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if augment and not training:
        raise ValueError("augment applies to training=True only: evaluation reads records as stored")
    if skipped is not None and not skip_corrupt:
        raise ValueError("skipped counts the records that skip_corrupt=True leaves out; pass skip_corrupt=True")
    if manifests.scheme(data_dir) not in READABLE_SCHEMES:
        raise ValueError(
            f"{data_dir}: make_dataset reads local and gs:// directories only: TensorFlow {tf.__version__} has no "
            f"{manifests.scheme(data_dir)}:// filesystem. Use reader.ShardSequence (it reads s3://), or copy the split to "
            f"local disk; python -m reader.check checks it where it is"
        )
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

    _check_present(manifest)
    if not skip_corrupt:
        _check_sizes(manifest)
    counted = _count_local(manifest, strict=not skip_corrupt)
    records = _records(
        manifest,
        shuffle_files_seed=file_seed,
        training=training,
        parallel_shards=parallel_shards,
        deterministic=deterministic,
        on_damage=(skipped or SkippedRecords()) if skip_corrupt else None,
        gated=not counted,
    )
    if training:
        records = records.shuffle(min(shuffle_buffer, max(num_records, 1)), seed=record_seed, reshuffle_each_iteration=True)

    # Records are batched first and parsed, decoded and scaled a batch at a time: one function
    # call per batch instead of one per record, and a vectorized parse.
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        coins = tf.data.Dataset.random(seed=flip_seed, rerandomize_each_iteration=True).batch(batch_size)
        batches = tf.data.Dataset.zip((batches, coins)).map(lambda numbered, coin: (*numbered, tf.equal(coin % 2, 1)))
    batches = batches.map(_batch_fn(manifest, layout, gated=not counted), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
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


def _check_present(manifest: manifests.Manifest) -> None:
    """Every shard the manifest lists must exist (TensorFlow would retry a missing file forever
    under ignore_errors; see `_shard_reader` for one that vanishes later)."""
    for path in manifest.shard_paths():
        if not manifests.exists(path):
            raise FileNotFoundError(manifests.missing_shard(path, manifest.split))


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


def _count_local(manifest: manifests.Manifest, strict: bool) -> bool:
    """Counts the records of local shards from their headers (a seek past each record's data, a
    few microseconds a record) and fails at once naming a shard that holds more records than
    its entry promises, or (strict) fewer. True when every shard was counted whole: then no read
    needs to look past its promise. False for remote shards (counting would mean reading them)
    and when a shard's framing is damaged (its read names the damage)."""
    whole = True
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        if not manifests.is_local(path):
            return False
        with open(path.removeprefix("file://"), "rb", buffering=0) as f:  # unbuffered: seeks, not reads
            try:
                held = len(tfrecord.index_records(f, path))
            except tfrecord.CorruptRecordError:
                whole = False
                continue
        if held > entry.records or (strict and held < entry.records):
            raise ValueError(f"{path}: holds {held} records, the manifest promises {entry.records}")
    return whole


def _records(
    manifest: manifests.Manifest,
    *,
    shuffle_files_seed: int | None,
    training: bool,
    parallel_shards: int,
    deterministic: bool,
    on_damage: SkippedRecords | None,
    gated: bool,
) -> tf.data.Dataset:
    """(record index, (shard number, serialized record)) of every shard: interleaved when
    training, one shard after another otherwise. See `_shard_reader` for the markers and `gated`."""
    paths = manifest.shard_paths()
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.range(len(paths), dtype=tf.int64),
            paths,
            tf.constant([entry.records for entry in manifest.shards], tf.int64),
        )
    )
    read = _shard_reader(on_damage, gated)
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


def _shard_reader(on_damage: SkippedRecords | None, gated: bool):
    """(shard number, path, records the manifest promises) -> (index, (shard, record)) per record,
    with a marker where the shard disagrees with its promise, p:

        intact (p records)     the p records, nothing else
        short (k < p records)  the k records, then an end marker (an empty record): damage
                               (TensorFlow's read errors are caught, ending the shard at its
                               first damaged record) or an entry that overstates
        long (more than p)     (gated only) the p records, then record p itself, whose index p
                               is the marker: an entry that understates

    All with native tf.data steps per record, no function call (a function per record, or even
    per chunk of records, costs more than the reading). Not gated (shards counted whole when
    the dataset was made, `_count_local`): the read and an end marker are zipped after
    range(p), so the marker comes out as record k of a short shard and never otherwise.

    Gated (remote shards, or damaged ones): the records travel as one-element vectors, then a
    two-element end and a one-element end, zipped with a "gate" of p + 1 one-element vectors and
    unbatched. Unbatching fails on an element whose parts differ in length, and `ignore_errors`
    drops it: the two-element end never passes, and the gate ends the stream after position p.
    So after p records the end vanishes while a record past the promise passes, and a short
    shard reaches the one-element end as record k + 1 <= p. This costs a few microseconds a
    record more, small beside a remote read.

    The read itself is zipped after a finite repeat, so that an error TensorFlow repeats (a file
    that vanished: it retries the open on every call) ends the shard after p + 1 tries instead
    of spinning forever under `ignore_errors`.

    Without `on_damage`, markers travel on and the batch step fails on them, naming the shard.
    With it, records go in chunks through a check that swaps an end marker for the intact records
    found after the damage by a Python scan of the shard, counting the damaged ones.
    """

    def read_shard(shard, path, promised):
        tries = tf.data.Dataset.from_tensors(shard).repeat(promised + 1)
        read = tf.data.Dataset.zip((tries, tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER))).ignore_errors(log_warning=False)
        if gated:
            tail = tf.data.Dataset.from_tensors((tf.fill([2], shard), tf.fill([2], _END)))
            tail = tail.concatenate(tf.data.Dataset.from_tensors((tf.fill([1], shard), tf.fill([1], _END))))
            stream = read.batch(1, drop_remainder=True).concatenate(tail)
            gate = tf.data.Dataset.from_tensor_slices(tf.reshape(tf.range(promised + 1), [-1, 1]))
            located = tf.data.Dataset.zip((gate, stream)).unbatch().ignore_errors(log_warning=False)
        else:
            ended = read.concatenate(tf.data.Dataset.from_tensors((shard, _END)))
            located = tf.data.Dataset.zip((tf.data.Dataset.range(promised), ended))
        if on_damage is None:
            return located
        recover = _recoverer(path, promised, on_damage, marker_offset=1 if gated else 0)
        return located.batch(_CHUNK).map(recover).unbatch()

    return read_shard


_END = tf.constant(b"")  # no record of a build is empty: every one holds every schema key


def _recoverer(path, promised, on_damage: SkippedRecords, marker_offset: int):
    """(index, (shard, record)) of a chunk whose last record may be the end marker -> the chunk
    with the marker replaced by the intact records after the damage (py_function, only then).
    The marker's index less `marker_offset` is the number of records read before it."""

    def recover(path, read, promised):
        found, problem = _rescan(path.numpy().decode(), int(read.numpy()), int(promised.numpy()), on_damage)
        return tf.constant(found, tf.string, shape=[len(found)]), tf.constant(problem)

    def chunk(index, located):
        shard, records = located

        def replace():
            return _replace_marker(index, shard, records, tf.py_function(recover, [path, index[-1] - marker_offset, promised], [tf.string, tf.string]))

        return tf.cond(tf.equal(records[-1], _END), replace, lambda: (index, (shard, records)))

    return chunk


def _replace_marker(index, shard, records, recovered):
    """The chunk with its last record (the end marker) replaced by the recovered records, which
    get index -1; fails with the scan's problem when there is one."""
    found, problem = recovered
    ok = tf.debugging.Assert(tf.equal(problem, ""), [problem], summarize=1)
    with tf.control_dependencies([ok]):
        found = tf.reshape(found, [-1])
    n = tf.shape(found, out_type=tf.int64)[0]
    return (
        tf.concat([index[:-1], tf.fill([n], tf.constant(-1, tf.int64))], 0),
        (tf.concat([shard[:-1], tf.fill([n], shard[0])], 0), tf.concat([records[:-1], found], 0)),
    )


class _Describe:
    """What is wrong with a batch that failed: the first record that a marker, a Python scan of
    its shard, or the checker's record checks (`check_records.unreadable`) find at fault, as
    `path: record N: problem`; "" when none is. Runs in a py_function, only for a failed batch."""

    def __init__(self, manifest: manifests.Manifest, marker_offset: int):
        self._offset = marker_offset  # an end marker's index less this: the records read before it
        self._paths = manifest.shard_paths()
        self._promised = [entry.records for entry in manifest.shards]
        config = manifest.config
        self._config = check_records.RecordConfig(
            input_size=int(config["input_size"]), grid_size=int(config["grid_size"]),
            resize=str(config.get("resize", "stretch")), min_face_px=float(config.get("min_face_px", 0.0)),
        )  # fmt: skip

    def __call__(self, index, shard, records) -> tf.Tensor:
        for i, s, data in zip(index.numpy().tolist(), shard.numpy().tolist(), records.numpy().tolist()):
            path, promised = self._paths[s], self._promised[s]
            if data == b"" or i >= promised:  # a shard cut short, or one holding more than promised
                read = max(i - self._offset, 0) if data == b"" else 0
                _, problem = _rescan(path, read, promised, None)
                if not problem and data:
                    problem = f"{path}: holds more than the {promised} records the manifest promises"
                elif not problem:  # the scan finds the shard whole: the read failed, and would lose its rest
                    problem = f"{path}: reading stopped after {read} of {promised} records, though the shard reads whole now"
            else:
                problem = check_records.unreadable(data, self._config)
                problem = problem and f"{path}: record {i}: {problem}"
            if problem:
                return tf.constant(problem)
        return tf.constant("")


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


def _batch_fn(manifest: manifests.Manifest, layout: _Layout, gated: bool):
    """(index [B], (shard [B], record [B]) (, flip [B])) -> (images, targets (, meta)) of a batch.

    Before anything that would fail with a bare TensorFlow error, cheap vectorized checks look
    for what a bad record would break (see `_check`); only a batch they flag goes to Python
    (`_Describe`), which names the shard, the record and what is wrong, or finds it fine."""
    full_spec = schema.tf_feature_spec(layout.grid_size)
    keys = [schema.ENCODED, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.GRID]
    if layout.with_ignore or layout.flip:
        keys.append(schema.IGNORE)
    if layout.needs_faces:
        keys += [*schema.BOX_KEYS, _INVALID, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH]
    if layout.with_boxes:
        keys.append(schema.FILENAME)
    spec = {key: _lenient(full_spec[key]) for key in keys}
    s, size = layout.grid_size, layout.input_size
    promised = tf.constant([entry.records for entry in manifest.shards], tf.int64)
    names = tf.constant([f"{path}: record " for path in manifest.shard_paths()])
    check = _check(_Describe(manifest, marker_offset=1 if gated else 0))

    def decode(features):
        encoded, image_format, height, width, flip = features
        image = _decode_image(encoded, image_format, height, width, size, layout.dct_method)
        if layout.flip:
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image

    def batch_fn(index, located, flip=None):
        shard, records = located
        # Markers of _shard_reader, and bytes that do not look like an Example (which parsing
        # would reject without saying which record).
        records = check(_framed(records) & (index < tf.gather(promised, shard)), index, shard, records)
        # Named for the errors parsing still raises itself (a value of another kind).
        example_names = tf.strings.join([tf.gather(names, shard), tf.strings.as_string(index)])
        f = tf.io.parse_example(records, spec, example_names=example_names)
        one = {key: f[key][:, 0] for key in keys if isinstance(spec[key], tf.io.FixedLenFeature)}
        # As few ops as will do: each costs about as much per batch as reading one record.
        encoded = tf.strings.length(one[schema.ENCODED])
        fits = [
            tf.stack([one[schema.HEIGHT], one[schema.WIDTH]], 1) == size,
            ((one[schema.FORMAT] == b"jpeg") & (encoded > 0)) | (encoded == size * size * 3),
            f[schema.GRID].row_lengths() == s * s * 5,
        ]
        if schema.IGNORE in f:
            fits.append(f[schema.IGNORE].row_lengths() == s * s)
        if layout.needs_faces:  # one face count in every per-face list
            splits = [f[key].row_splits for key in (*schema.BOX_KEYS, _INVALID)]
            fits.append(tf.stack(splits[1:]) == splits[0])
        records = check(tf.stack([tf.reduce_all(fit) for fit in fits]), index, shard, records)
        with tf.control_dependencies([records]):  # nothing below runs on a batch that failed the checks
            grid = tf.reshape(f[schema.GRID].flat_values, [-1, s, s, 5])
            ignore = tf.reshape(f[schema.IGNORE].flat_values, [-1, s, s]) if schema.IGNORE in f else None
            images = tf.map_fn(
                decode,
                (
                    one[schema.ENCODED],
                    one[schema.FORMAT],
                    one[schema.HEIGHT],
                    one[schema.WIDTH],
                    tf.zeros_like(shard, tf.bool) if flip is None else flip,
                ),
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
            )
            boxes = invalid = None
            if layout.needs_faces:
                boxes = tf.stack([f[key] for key in schema.BOX_KEYS], axis=-1)  # ragged [B, None, 4]
                invalid = f[_INVALID]
        if flip is not None:
            boxes, flipped_grid, flipped_ignore = augmentation.flip_targets_batch_tf(
                boxes, invalid, one[schema.ORIGINAL_HEIGHT], one[schema.ORIGINAL_WIDTH], flip,
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
            "filename": one[schema.FILENAME],
            "original_size": tf.stack([one[schema.ORIGINAL_HEIGHT], one[schema.ORIGINAL_WIDTH]], 1),
        }
        return images, targets, meta

    return batch_fn


def _lenient(feature):
    """The parse spec of one key, made not to fail on a record that lacks the key or holds another
    count of values (the checks of `_batch_fn` catch those, naming the record): one-value keys
    get a default no record of a build holds, the grid and ignore lists become ragged."""
    if isinstance(feature, tf.io.FixedLenFeature) and feature.shape == [1] and feature.dtype in (tf.string, tf.int64):
        return tf.io.FixedLenFeature([1], feature.dtype, default_value=b"" if feature.dtype == tf.string else -1)
    if isinstance(feature, tf.io.FixedLenFeature):
        return tf.io.RaggedFeature(feature.dtype)
    return feature


def _framed(records):
    """[B] bool: the record looks like a serialized Example, Example{1: Features}, whose length
    prefix agrees with the record's size. A cheap test (a dozen ops per batch) that lets through
    no truncated, padded, empty or foreign bytes, which parsing would reject without naming the
    record; damage deeper inside an Example still fails parsing unnamed."""
    head = tf.cast(tf.io.decode_raw(records, tf.uint8, fixed_length=6), tf.int32)  # the first 6 bytes, zero-padded
    varint = head[:, 1:]
    used = tf.math.cumprod(varint // 0x80, axis=1, exclusive=True)  # 1 up to the varint's last byte
    length = tf.linalg.matvec(used * (varint % 0x80), _VARINT_WEIGHTS)
    return (head[:, 0] == 0x0A) & (length + tf.reduce_sum(used, 1) + 1 == tf.strings.length(records))


_VARINT_WEIGHTS = tf.constant([1 << (7 * i) for i in range(4)] + [0], tf.int32)  # records < 256 MiB: 4 bytes


def _check(describe):
    """(ok [B], index, shard, records) -> records, after failing with `describe`'s message when
    any ok is False and Python finds a fault (only then is Python called)."""

    def fail(index, shard, records):
        message = tf.py_function(describe, [index, shard, records], tf.string)
        passed = tf.debugging.Assert(tf.equal(message, ""), [message], summarize=1)
        with tf.control_dependencies([passed]):
            return tf.identity(records)

    def check(ok, index, shard, records):
        return tf.cond(tf.reduce_all(ok), lambda: tf.identity(records), lambda: fail(index, shard, records))

    return check


def _decode_image(encoded, image_format, height, width, size: int, dct_method: str):
    """uint8 [size, size, 3] from image/encoded, as image/format says (jpeg or raw)."""

    def raw():
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.stack([height, width, 3]))

    def jpeg():
        return tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)

    image = tf.cond(tf.equal(image_format, "raw"), raw, jpeg)
    return tf.ensure_shape(image, [size, size, 3])
