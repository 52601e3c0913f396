"""The checker's work on shard files: index them, hash them, check their records.

The checker indexes each shard in its own process (headers only, seeking past the data), then
hands out three kinds of task, each a picklable tuple run by `run_task` in a worker process:
    HashTask    a whole shard -> its size in bytes and sha256
    ChunkTask   a run of consecutive records of one shard -> per record, its facts and problems
                (data checksum, then `check_records.check_record`)
    KeysTask    a shard of another split -> (record index, source sha256, filename) per record,
                for the leakage check
Workers open files themselves, so only paths and spans cross the process boundary, and they
never import TensorFlow for local or s3:// files (reader.core.manifest reads s3:// with boto3).
Every open is reader.core.storage's (regular files of the data directory only); a shard is held to
its manifest entry's size when indexed, and the tasks after stream it in fixed pieces.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from reader.check import records as check_records
from reader.core import schema, storage, tfrecord
from reader.core.config import BuildConfig

_HASH_BLOCK = 1 << 20
_KEYS = frozenset({schema.SHA256, schema.FILENAME})  # what the leakage check compares


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """A shard's record spans, found from the headers alone.

    error: the framing problem that stopped the walk (its record index and byte offset), or
    None when the spans cover the whole file.
    """

    file: str
    spans: tuple[tfrecord.RecordSpan, ...]
    error: tfrecord.CorruptRecordError | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


def index_shard(path: str, file: str, size: int) -> ShardIndex:
    """Walks the record headers of the shard at `path` (named `file` in problems), which its
    manifest says holds `size` bytes (storage.RefusedFile for a larger one, or not a regular file)."""
    with storage.open_binary(path, storage.shard_bound(size)) as f:
        try:
            return ShardIndex(file, tuple(tfrecord.index_records(f, file)))
        except tfrecord.CorruptRecordError as e:
            return ShardIndex(file, e.spans, e)


@dataclasses.dataclass(frozen=True)
class HashTask:
    path: str
    file: str


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    path: str
    file: str
    spans: tuple[tfrecord.RecordSpan, ...]
    config: BuildConfig

    @property
    def records(self) -> int:
        return len(self.spans)


@dataclasses.dataclass(frozen=True)
class KeysTask:
    path: str
    file: str
    records: int  # as the other split's manifest says (0 when unknown): progress only


@dataclasses.dataclass(frozen=True)
class HashResult:
    file: str
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class RecordResult:
    """One record's outcome: facts is None when the record could not be read as the schema."""

    index: int
    facts: check_records.RecordFacts | None
    problems: check_records.Problems


@dataclasses.dataclass(frozen=True)
class ChunkResult:
    file: str
    records: tuple[RecordResult, ...]


@dataclasses.dataclass(frozen=True)
class KeysResult:
    """keys: (record index, source sha256, filename); error: why reading stopped early, if it did."""

    file: str
    keys: tuple[tuple[int, str, str], ...]
    error: str | None


@dataclasses.dataclass(frozen=True)
class FailedTask:
    """A task whose shard could not be read at all (removed meanwhile, the store refused):
    kind is "hash", "chunk" or "keys"; error says what happened."""

    file: str
    kind: str
    error: str


Task = HashTask | ChunkTask | KeysTask
Result = HashResult | ChunkResult | KeysResult | FailedTask


def run_task(task: Task) -> Result:
    """Runs one task (in a worker process, or inline). A file that cannot be read gives a
    FailedTask rather than an exception, so that no traceback reaches the checker's user."""
    try:
        if isinstance(task, HashTask):
            return hash_shard(task)
        if isinstance(task, ChunkTask):
            return check_chunk(task)
        return read_keys(task)
    except OSError as e:
        kind = "hash" if isinstance(task, HashTask) else "chunk" if isinstance(task, ChunkTask) else "keys"
        return FailedTask(task.file, kind, str(e).removeprefix(f"{task.path}: ") or type(e).__name__)


def hash_shard(task: HashTask) -> HashResult:
    digest, size = hashlib.sha256(), 0
    with storage.open_binary(task.path, None) as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return HashResult(task.file, size, digest.hexdigest())


def check_chunk(task: ChunkTask) -> ChunkResult:
    """Reads each record of the chunk (checking its data checksum) and checks it."""
    results = []
    with storage.open_binary(task.path, None) as f:
        for span in task.spans:
            try:
                data = tfrecord.read_record(f, task.file, span)
            except tfrecord.CorruptRecordError as e:
                results.append(RecordResult(span.index, None, [("framing", f"at byte {e.offset}: {e.problem}")]))
                continue
            try:
                facts, problems = check_records.check_record(data, task.config)
            except Exception as e:  # a record no check foresaw: name it rather than stop the whole check
                facts, problems = None, [("schema", f"unreadable record ({type(e).__name__}: {e})")]
            results.append(RecordResult(span.index, facts, problems))
    return ChunkResult(task.file, tuple(results))


def read_keys(task: KeysTask) -> KeysResult:
    """The source sha256 and filename of every readable record of a shard."""
    keys, error = [], None
    with storage.open_binary(task.path, None) as f:
        try:
            for span, data in tfrecord.iter_records(f, task.file):
                try:
                    features = schema.parse_features(data, _KEYS)
                    sha256 = features[schema.SHA256][0].decode("ascii")
                    filename = features[schema.FILENAME][0].decode("utf-8", "replace")
                except (schema.SchemaError, UnicodeDecodeError):
                    continue  # that split's own check reports it
                keys.append((span.index, sha256, filename))
        except tfrecord.CorruptRecordError as e:
            error = str(e)
    return KeysResult(task.file, tuple(keys), error)


def chunk_tasks(path: str, index: ShardIndex, config: BuildConfig, chunk_records: int) -> list[ChunkTask]:
    """The shard's records in runs of at most `chunk_records`."""
    spans: Sequence[tfrecord.RecordSpan] = index.spans
    return [ChunkTask(path, index.file, tuple(spans[i : i + chunk_records]), config) for i in range(0, len(spans), chunk_records)]
