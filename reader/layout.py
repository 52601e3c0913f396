"""File names of a build: what one split writes into its output directory.

    {split}-00000-of-0000N.tfrecord ...   the shards
    {split}.manifest.json                 counts, per-shard records / bytes / sha256, config
    {split}.errors.jsonl                  one JSON object per unusable image
    {split}.index.json                    record offsets, cached by the Keras reader (not the build)

Temporary files of a build in progress start with `.{split}-` and are never read. A record's
shard and its place inside the shard come from `record_key`, a stable hash of its filename.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord"


def shard_name(split: str, index: int, num_shards: int) -> str:
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}")
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def shard_glob(split: str) -> str:
    """Matches this split's shards of any count (stale ones included)."""
    return f"{split}-*-of-*{SHARD_SUFFIX}"


def temp_glob(split: str) -> str:
    """Matches the temporary files of this split's builds."""
    return f".{split}-*"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, num_shards) of a shard file name, or None for any other name."""
    match = re.fullmatch(r"(.+)-(\d{5,})-of-(\d{5,})" + re.escape(SHARD_SUFFIX), name)
    return None if match is None else (match[1], int(match[2]), int(match[3]))


def manifest_name(split: str) -> str:
    return f"{split}.manifest.json"


def errors_name(split: str) -> str:
    return f"{split}.errors.jsonl"


def index_name(split: str) -> str:
    """The Keras reader's cache of record offsets, written beside the shards on first use."""
    return f"{split}.index.json"


def record_key(filename: str) -> bytes:
    """The stable hash that places a record: its shard, and its rank inside the shard."""
    return hashlib.sha256(filename.encode("utf-8")).digest()


def shard_of(filename: str, num_shards: int) -> int:
    """The shard a record belongs in, of `num_shards`."""
    return int.from_bytes(record_key(filename)[:8], "big") % num_shards
