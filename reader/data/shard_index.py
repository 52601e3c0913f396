"""Where every record of a split lies: the record index of `ShardSequence`'s random access.

Every record's byte span comes from its shard's record headers (`reader.core.tfrecord.index_records`,
seeking past the data, so a shard is not read to index it). The index is cached next to the
shards as `{split}.index.json` (when the directory is local and writable), keyed by the manifest's
size and sha256 of each shard, so a rebuilt split is indexed again. No TensorFlow here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading

import numpy as np

from reader.core import files, layout, tfrecord
from reader.core import manifest as manifests

INDEX_VERSION = 1
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

    Raises CorruptRecordError for a damaged header, ValueError when a shard's record count
    differs from the manifest.
    """
    cache_path = files.join(manifest.data_dir, layout.index_name(manifest.split))
    local = files.is_local(cache_path)
    per_shard = _read_cache(cache_path, manifest) if read_cache else None
    if per_shard is None:
        per_shard = []
        for entry, path in zip(manifest.shards, manifest.shard_paths()):
            try:
                spans = _index_shard(path, entry)
            except FileNotFoundError:
                raise FileNotFoundError(manifests.missing_shard(path, manifest.split)) from None
            if len(spans) != entry.records:
                raise ValueError(f"{path}: holds {len(spans)} records, the manifest promises {entry.records}")
            per_shard.append(([s.offset for s in spans], [s.length for s in spans]))
        if write_cache and local:
            _write_cache(cache_path.removeprefix("file://"), manifest, per_shard)
    shard = np.concatenate([np.full(len(o), i, np.int32) for i, (o, _) in enumerate(per_shard)] or [np.zeros(0, np.int32)])
    offset = np.concatenate([np.asarray(o, np.int64) for o, _ in per_shard] or [np.zeros(0, np.int64)])
    length = np.concatenate([np.asarray(n, np.int64) for _, n in per_shard] or [np.zeros(0, np.int64)])
    return RecordIndex(shard, offset, length)


def _index_shard(path: str, entry: manifests.ShardEntry) -> list[tfrecord.RecordSpan]:
    name = entry.file
    with files.open_binary(path, files.shard_bound(entry.bytes)) as f:
        if files.is_local(path):
            return tfrecord.index_records(f, name)
        # Remote files: one sequential read beats a ranged request per header.
        return tfrecord.index_records(io.BytesIO(f.read()), name)


def _cache_key(manifest: manifests.Manifest) -> list[dict]:
    """The shard entries the cached index was made from: any change to one invalidates it."""
    return [entry.to_json() for entry in manifest.shards]


def _read_cache(path: str, manifest: manifests.Manifest):
    try:
        cached = json.loads(files.read_bytes(path, files.index_bound(len(manifest.shards), manifest.num_records)))
    except files.RefusedFile as e:  # a FIFO, a link out of the directory, too large: never read
        _LOG.warning("%s; the index is built from the shards instead", e)
        return None
    except Exception:  # missing or unreadable: build the index instead
        return None
    if cached.get("version") != INDEX_VERSION or cached.get("shards_key") != _cache_key(manifest):
        return None
    try:
        per_shard = [(list(s["offsets"]), list(s["lengths"])) for s in cached["shards"]]
    except (KeyError, TypeError):
        return None
    if [len(o) for o, _ in per_shard] != [s.records for s in manifest.shards]:
        return None
    return per_shard


def _write_cache(path: str, manifest: manifests.Manifest, per_shard) -> None:
    cached = {
        "version": INDEX_VERSION,
        "split": manifest.split,
        "shards_key": _cache_key(manifest),
        "shards": [{"offsets": o, "lengths": n} for o, n in per_shard],
    }
    temp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(temp, "w") as f:
            json.dump(cached, f, separators=(",", ":"))
        os.replace(temp, path)
    except OSError:  # a read-only data directory: keep the index in memory only
        try:
            os.remove(temp)
        except OSError:
            pass
