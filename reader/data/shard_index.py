"""Where every record of a split lies: the record index of `ShardRecords`' random access.

Every record's byte span comes from its shard's record headers (`reader.core.tfrecord.index_records`,
seeking past the data). Each shard indexed is also measured and hashed, and held to its manifest entry's size
and sha256 (a same-size shard of other bytes is refused): one sequential read of it, which the index pass of
a remote shard makes anyway. The index is cached next to the shards as `{split}.index.json` (when
the directory is local and writable), keyed by the manifest's size and sha256 of each shard and
by each file's size, mtime and inode when it was hashed, so that a rebuilt split, or a shard
changed since, is indexed and hashed again; remote shards are always indexed afresh. No
TensorFlow here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading

import numpy as np

from reader.core import layout, storage, tfrecord
from reader.core import manifest as manifests
from reader.core.config import is_int

INDEX_VERSION = 2  # 2: with each shard's file identity (`_identity`) when it was hashed
_LOG = logging.getLogger(__name__)


class RecordIndex:
    """Where every record of a split lies: shard number, header offset and data length per
    record, in manifest order (shards in turn, each in file order)."""

    def __init__(self, shard: np.ndarray, offset: np.ndarray, length: np.ndarray):
        self.shard, self.offset, self.length = shard, offset, length

    def __len__(self) -> int:
        return len(self.shard)

    def locate(self, record: int) -> tuple[int, tfrecord.RecordSpan]:
        """(shard number, span) of record number `record`."""
        if not 0 <= record < len(self):
            raise IndexError(f"record {record} out of range for {len(self)} records")
        shard = int(self.shard[record])
        first = int(np.searchsorted(self.shard, shard, side="left"))
        return shard, tfrecord.RecordSpan(record - first, int(self.offset[record]), int(self.length[record]))


def load_index(manifest: manifests.Manifest, *, read_cache: bool = True, write_cache: bool = True) -> RecordIndex:
    """The split's record index: from `{split}.index.json` when it matches the manifest, else
    built from the shard headers (and cached when the directory is local and writable).

    Raises CorruptRecordError for a damaged header, ValueError when a shard's record count or
    sha256 differs from the manifest.
    """
    cache_path = storage.join(manifest.data_dir, layout.index_name(manifest.split))
    local = storage.is_local(cache_path)
    key = _cache_key(manifest)  # before hashing: a shard changed meanwhile fails to match next time
    per_shard = _read_cache(cache_path, manifest, key) if read_cache else None
    if per_shard is None:
        per_shard = []
        for entry, path in zip(manifest.shards, manifest.shard_paths()):
            try:
                spans, size, sha256 = _index_shard(path, entry)
            except FileNotFoundError:
                raise FileNotFoundError(manifests.missing_shard(path, manifest.split)) from None
            if len(spans) != entry.records:
                raise ValueError(f"{path}: holds {len(spans)} records, the manifest promises {entry.records}")
            if size != entry.bytes:
                raise ValueError(manifests.other_size(path, size, entry))
            if sha256 != entry.sha256:
                with storage.open_binary(path, storage.shard_bound(entry.bytes)) as f:
                    raise tfrecord.first_damage(f, entry.file) or ValueError(manifests.other_bytes(path, sha256, entry))
            per_shard.append(([s.offset for s in spans], [s.length for s in spans]))
        if write_cache and local:
            _write_cache(cache_path.removeprefix("file://"), manifest, key, per_shard)
    shard = np.concatenate([np.full(len(o), i, np.int32) for i, (o, _) in enumerate(per_shard)] or [np.zeros(0, np.int32)])
    offset = np.concatenate([np.asarray(o, np.int64) for o, _ in per_shard] or [np.zeros(0, np.int64)])
    length = np.concatenate([np.asarray(n, np.int64) for _, n in per_shard] or [np.zeros(0, np.int64)])
    return RecordIndex(shard, offset, length)


def _index_shard(path: str, entry: manifests.ShardEntry) -> tuple[list[tfrecord.RecordSpan], int, str]:
    """(the shard's record spans, its size in bytes, its sha256); never read past the bytes its
    manifest entry says (storage.shard_bound)."""
    name = entry.file
    with storage.open_binary(path, storage.shard_bound(entry.bytes)) as f:
        if storage.is_local(path):
            spans = tfrecord.index_records(f, name)
            size = f.seek(0, 2)
            f.seek(0)
            return spans, size, hashlib.file_digest(f, "sha256").hexdigest()
        # Remote files: one sequential read beats a ranged request per header.
        data = f.read()
        return tfrecord.index_records(io.BytesIO(data), name), len(data), hashlib.sha256(data).hexdigest()


def _identity(path: str) -> list[int] | None:
    """A local shard's size, mtime (ns) and inode: what changes when its bytes are rewritten or
    the file replaced, so that a cached index (and its hash) is not trusted past it. None for
    remote shards and files that cannot be looked at: no cache is trusted for them."""
    if not storage.is_local(path):
        return None
    try:
        stat = os.stat(path.removeprefix("file://"))
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _cache_key(manifest: manifests.Manifest) -> list[dict]:
    """The shard entries the cached index was made from, each with its file's identity: any
    change to one invalidates it."""
    return [{**entry.to_json(), "identity": _identity(path)} for entry, path in zip(manifest.shards, manifest.shard_paths())]


def _read_cache(path: str, manifest: manifests.Manifest, key: list[dict]):
    try:
        cached = json.loads(storage.read_bytes(path, storage.index_bound(len(manifest.shards), manifest.num_records)))
    except storage.RefusedFile as e:  # a FIFO, a link out of the directory, too large: never read
        _LOG.warning("%s; the index is built from the shards instead", e)
        return None
    except Exception:  # missing or unreadable: build the index instead
        return None
    if not isinstance(cached, dict) or any(s["identity"] is None for s in key):
        return None
    if cached.get("version") != INDEX_VERSION or cached.get("shards_key") != key:
        return None
    try:
        per_shard = [(list(s["offsets"]), list(s["lengths"])) for s in cached["shards"]]
    except (KeyError, TypeError):
        return None
    if [len(o) for o, _ in per_shard] != [s.records for s in manifest.shards]:
        return None
    if not all(is_int(v) and v >= 0 for o, n in per_shard for v in (*o, *n)):
        return None  # a damaged cache: index again
    return per_shard


def _write_cache(path: str, manifest: manifests.Manifest, key: list[dict], per_shard) -> None:
    cached = {
        "version": INDEX_VERSION,
        "split": manifest.split,
        "shards_key": key,
        "shards": [{"offsets": o, "lengths": n} for o, n in per_shard],
    }
    temp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(temp, "w") as f:
            json.dump(cached, f, separators=(",", ":"))
        os.replace(temp, path)
    except OSError:  # a read-only data directory: keep the index in memory only
        with contextlib.suppress(OSError):
            os.remove(temp)
