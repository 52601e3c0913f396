"""How `make_dataset` names, or skips, shards and records that disagree with the manifest.

TensorFlow's read and parse errors name neither shard nor record, so the reader keeps them off
the fast path and explains what it finds in Python, only when something is wrong:

1. When the dataset is made, `check_shards`: every shard must exist; local ones must have the
   manifest's size, sha256 (one read of each) and record count (counted from record headers).
2. While reading, `shard_reader`: each shard yields (index, (shard, record)) per record, with a
   marker where the read comes up short (a read error ends the shard) or, for shards not counted
   in 1, long. With skip_corrupt, a short shard's marker is swapped for the intact records a
   Python scan finds after the damage (`_rescan`), the damaged ones counted in `SkippedRecords`.
3. Per batch, `BatchGuard`: vectorized checks for markers, bytes that are not an Example,
   parsed values of another size and targets or boxes that are not finite numbers; a batch they flag goes to `_Describe`, whose message
   ("path: record N at byte B: problem") the batch fails with, unless it finds nothing wrong.

Inputs: a loaded `Manifest`; outputs: tf.data datasets and tensors of serialized records
(int64 index, int64 shard number, string record). Counts are records, offsets bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import tensorflow as tf

from reader.core import manifest as manifests
from reader.core import schema, storage, tfrecord

_READ_BUFFER = 1 << 20  # bytes buffered per open shard
_CHUNK = 64  # records per step of the skip_corrupt check
_END = tf.constant(b"")  # the end marker: no record of a build is empty, every one holds every schema key
_log = logging.getLogger("reader.data.dataset")  # make_dataset's logger, where its callers look for warnings


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


# ---- when the dataset is made ----------------------------------------------------------------


def check_shards(manifest: manifests.Manifest, strict: bool) -> bool:
    """Fails at once on a shard that is missing or, local, of another size (strict only) or
    record count (fewer: strict only). True when reads must be gated: some shard was not
    counted whole, so a read must itself catch one holding more than promised."""
    _check_present(manifest)
    if strict:
        _check_sizes(manifest)
    return not count_local(manifest, strict=strict)


def _check_present(manifest: manifests.Manifest) -> None:
    # TensorFlow would retry a missing file forever under ignore_errors (see `shard_reader` for one
    # that vanishes later), and block opening a FIFO: each shard is looked at by reader.core.storage's
    # rule first (a regular file of the data directory, no larger than its entry).
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        try:
            storage.check_file(path, storage.shard_bound(entry.bytes))
        except FileNotFoundError:
            raise FileNotFoundError(manifests.missing_shard(path, manifest.split)) from None


def _check_sizes(manifest: manifests.Manifest) -> None:
    """Local shards must have the size and sha256 the manifest says: a longer shard would hide
    records past the promised count, a shorter one is damaged, one of other bytes is another
    build's or was edited. Hashing reads each local shard once (0.1-0.3 s for val's 82 MB, and
    it leaves the shard in the page cache for the first epoch); remote shards are not hashed
    (that would read them twice): their size and counts are found while reading."""
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        if not storage.is_local(path):
            continue
        local = path.removeprefix("file://")
        try:
            size = os.path.getsize(local)
        except OSError as e:
            raise FileNotFoundError(f"{local}: cannot read shard: {e.strerror}") from None
        if size != entry.bytes:
            raise ValueError(manifests.other_size(local, size, entry) + "; make_dataset(skip_corrupt=True) reads what is intact")
        with open(local, "rb") as f:
            found = hashlib.file_digest(f, "sha256").hexdigest()
        if found != entry.sha256:
            with open(local, "rb") as f:
                raise tfrecord.first_damage(f, local) or ValueError(manifests.other_bytes(local, found, entry))


def count_local(manifest: manifests.Manifest, strict: bool) -> bool:
    """Counts the records of local shards from their headers (a seek past each record's data, a
    few microseconds a record) and fails at once naming a shard that holds more records than
    its entry promises, or (strict) fewer. True when every shard was counted whole: then no read
    needs to look past its promise. False for remote shards (counting would mean reading them)
    and when a shard's framing is damaged (its read names the damage)."""
    whole = True
    for entry, path in zip(manifest.shards, manifest.shard_paths()):
        if not storage.is_local(path):
            return False
        with os.fdopen(storage.open_fd(path, None), "rb", buffering=0) as f:  # unbuffered: seeks, not reads
            try:
                held = len(tfrecord.index_records(f, path))
            except tfrecord.CorruptRecordError:
                whole = False
                continue
        if held > entry.records or (strict and held < entry.records):
            raise ValueError(f"{path}: holds {held} records, the manifest promises {entry.records}")
    return whole


# ---- while reading: markers, and what skip_corrupt recovers ---------------------------------


def _marker_offset(gated: bool) -> int:
    # Gated, the two-element end takes (and loses) a gate position before the end marker passes.
    return 1 if gated else 0


def shard_reader(on_damage: SkippedRecords | None, gated: bool, native: bool = True):
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
    the dataset was made, `count_local`): the read and an end marker are zipped after
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

    native: read by TensorFlow's TFRecordDataset (local disk, gs://); False: through the
    storage layer (`records_through_storage`: s3://, which TensorFlow has no filesystem for).
    The same records either way, and a read that ends at the same place.

    Without `on_damage`, markers travel on and the batch step fails on them, naming the shard.
    With it, records go in chunks through a check that swaps an end marker for the intact records
    found after the damage by a Python scan of the shard, counting the damaged ones.
    """

    def read_shard(shard, path, promised):
        tries = tf.data.Dataset.from_tensors(shard).repeat(promised + 1)
        records = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER) if native else records_through_storage(path)
        read = tf.data.Dataset.zip((tries, records)).ignore_errors(log_warning=False)
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
        recover = _recoverer(path, promised, on_damage, marker_offset=_marker_offset(gated))
        return located.batch(_CHUNK).map(recover).unbatch()

    return read_shard


def records_through_storage(path) -> tf.data.Dataset:
    """The records of the shard `path` (a string tensor), read through reader.core.storage in
    sequential requests of `_READ_BUFFER` bytes and handed to TensorFlow `_CHUNK` at a time.
    The read ends at the first damaged record, or when the store fails, where TFRecordDataset's
    read ends under ignore_errors: `_rescan` then says what is wrong, as for any shard."""
    spec = tf.TensorSpec([None], tf.string)
    return tf.data.Dataset.from_generator(_record_chunks, args=(path,), output_signature=spec).unbatch()


def _record_chunks(path: bytes):
    path, chunk = path.decode(), []
    try:
        with storage.open_binary(path, None, readahead=_READ_BUFFER) as f:
            for _, data, problem in tfrecord.walk_records(f):
                if problem is not None:
                    break
                chunk.append(data)
                if len(chunk) == _CHUNK:
                    yield chunk
                    chunk = []
    except OSError:  # gone, or the store failed: the shard ends here, as a native read's would
        pass
    if chunk:
        yield chunk


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
            return _replace_marker(
                index,
                shard,
                records,
                tf.py_function(recover, [path, index[-1] - marker_offset, promised], [tf.string, tf.string]),
            )

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


def _rescan(path: str, already_read: int, expected: int, on_damage: SkippedRecords | None) -> tuple[list[bytes], str]:
    """For a shard whose read came up short or long: (intact records after the first
    `already_read`, problem). The problem is "" when `on_damage` takes the damage (it is then
    counted there); otherwise it names shard, record and byte offset."""
    try:
        f = storage.open_binary(path, None)
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


# ---- per batch: checks, and the message a flagged batch fails with ---------------------------


class BatchGuard:
    """The batch step's checks: each passes the records on, after failing with a message naming
    the shard and record when its test flags any and `_Describe` finds a fault (only then is
    Python called). Messages passed through TensorFlow's assertion print quotes escaped."""

    def __init__(self, manifest: manifests.Manifest, gated: bool):
        self._promised = tf.constant([entry.records for entry in manifest.shards], tf.int64)
        self._describe = _Describe(manifest, marker_offset=_marker_offset(gated))

    def framed(self, index, shard, records):
        """Markers of `shard_reader`, and bytes that do not look like an Example (which parsing
        would reject without saying which record)."""
        return self.require(_framed(records) & (index < tf.gather(self._promised, shard)), index, shard, records)

    def require(self, ok, index, shard, records):
        """records, after failing when any `ok` is False and Python finds a fault."""
        return tf.cond(tf.reduce_all(ok), lambda: tf.identity(records), lambda: self._fail(index, shard, records))

    def _fail(self, index, shard, records):
        message = tf.py_function(self._describe, [index, shard, records], tf.string)
        passed = tf.debugging.Assert(tf.equal(message, ""), [message], summarize=1)
        with tf.control_dependencies([passed]):
            return tf.identity(records)


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


class _Describe:
    """What is wrong with a batch that failed: the first record that a marker, a Python scan of
    its shard, or the record checks the checker also runs (`schema.record_problem`) find at fault, as
    `path: record N: problem`; "" when none is. Runs in a py_function, only for a failed batch."""

    def __init__(self, manifest: manifests.Manifest, marker_offset: int):
        self._offset = marker_offset  # an end marker's index less this: the records read before it
        self._paths = manifest.shard_paths()
        self._promised = [entry.records for entry in manifest.shards]
        self._config = manifest.config

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
                problem = schema.record_problem(data, self._config)
                problem = problem and f"{path}: record {i}: {problem}"
            if problem:
                return tf.constant(problem)
        return tf.constant("")
