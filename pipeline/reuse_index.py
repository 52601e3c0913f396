"""Where an earlier build's records lie, by their source's sha256: the index incremental builds
look images up in (pipeline.reuse).

Held in columns (sorted sha256 digests, NumPy arrays of the numbers, the shard paths once), an
index costs about 120 bytes a record, pickles and unpickles at once, and is a handful of objects
to Beam's side-input cache and to the allocator, however many records it holds; as a dict of
small objects it cost 2.2 KB a record of resident memory (BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

_NUMBERS = ("offset", "length", "image_start", "image_length", "source_width", "source_height")


@dataclasses.dataclass(frozen=True)
class Location:
    """An earlier record: where it lies (its shard's path, its header's offset, its data's
    length), where its image lies inside its data, and the source's size it says."""

    shard: str
    offset: int
    length: int
    image_start: int
    image_length: int
    source_width: int
    source_height: int


class Locations:
    """sha256 (hex) -> Location, read-only. Built `of` (sha256, Location) pairs, the first of a
    sha256 kept; `merged` from several, the first holding one kept."""

    def __init__(self, shards: tuple[str, ...] = (), keys=None, shard_of=None, numbers=None):
        self._shards = shards
        self._keys = np.zeros(0, "S64") if keys is None else keys  # ASCII hex: no NUL for NumPy to strip
        self._shard_of = np.zeros(0, np.int32) if shard_of is None else shard_of
        self._numbers = np.zeros((0, len(_NUMBERS)), np.int64) if numbers is None else numbers

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, Location]]) -> Locations:
        pairs = list(pairs)
        shards = tuple(dict.fromkeys(where.shard for _, where in pairs))
        number = {shard: i for i, shard in enumerate(shards)}
        return cls(
            shards,
            np.array([sha.encode("ascii") for sha, _ in pairs], "S64"),
            np.array([number[where.shard] for _, where in pairs], np.int32),
            np.array([[getattr(where, name) for name in _NUMBERS] for _, where in pairs], np.int64).reshape(-1, len(_NUMBERS)),
        )._unique()

    @classmethod
    def merged(cls, parts: Iterable[Locations]) -> Locations:
        parts = list(parts)
        shards = tuple(dict.fromkeys(shard for part in parts for shard in part._shards))
        number = {shard: i for i, shard in enumerate(shards)}
        renumbered = [np.array([number[shard] for shard in part._shards], np.int32)[part._shard_of] if len(part) else part._shard_of
                      for part in parts]  # fmt: skip
        return cls(
            shards,
            np.concatenate([part._keys for part in parts] or [np.zeros(0, "S64")]),
            np.concatenate(renumbered or [np.zeros(0, np.int32)]),
            np.concatenate([part._numbers for part in parts] or [np.zeros((0, len(_NUMBERS)), np.int64)]),
        )._unique()

    def _unique(self) -> Locations:
        """Sorted by key, the first row of each key kept (identical sources made identical images)."""
        keys, first = np.unique(self._keys, return_index=True)
        return Locations(self._shards, keys, self._shard_of[first], self._numbers[first])

    def get(self, sha256: str) -> Location | None:
        key = np.array(sha256.encode("ascii", "replace"), "S64")
        i = int(np.searchsorted(self._keys, key))
        if i == len(self._keys) or self._keys[i] != key:
            return None
        return self._row(i)

    def _row(self, i: int) -> Location:
        numbers = dict(zip(_NUMBERS, self._numbers[i].tolist()))
        return Location(self._shards[self._shard_of[i]], **numbers)

    def items(self) -> Iterator[tuple[str, Location]]:
        for i, key in enumerate(self._keys):
            yield key.decode("ascii"), self._row(i)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other) -> bool:
        return isinstance(other, Locations) and dict(self.items()) == dict(other.items())

    __hash__ = None
