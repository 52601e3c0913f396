"""File names of a build: what one split writes into its output directory.

    {split}-00000-of-0000N.tfrecord ...   the shards
    {split}.manifest.json                 counts, per-shard records / bytes / sha256, config
    {split}.errors.jsonl                  one JSON object per unusable image

Temporary files of a build in progress start with `.{split}-` and are never read.
"""

from __future__ import annotations

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
