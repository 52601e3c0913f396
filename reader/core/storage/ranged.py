"""A seekable, read-only view of one object of an object store, read with ranged requests."""

from __future__ import annotations

import io
from collections.abc import Callable

READAHEAD = 1 << 20  # bytes fetched per request when reading an object sequentially


class RangedFile(io.RawIOBase):
    """The object `path` of `size` bytes, whose bytes [start, end) `get(start, end)` fetches:
    `readahead` bytes a request when read in order, so a sequential scan costs one request per
    MiB; 0 fetches exactly what each read asks (one request a record, for random access)."""

    def __init__(self, path: str, size: int, get: Callable[[int, int], bytes], readahead: int = READAHEAD):
        super().__init__()
        self.path, self.size, self._get, self._readahead = path, size, get, readahead
        self._pos = 0
        self._buffer, self._buffer_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, {0: pos, 1: self._pos + pos, 2: self.size + pos}[whence])
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if end <= self._pos:
            return b""
        offset = self._pos - self._buffer_start
        if offset < 0 or end > self._buffer_start + len(self._buffer):
            fetch_end = min(self.size, max(end, self._pos + self._readahead))
            self._buffer, self._buffer_start, offset = self._get(self._pos, fetch_end), self._pos, 0
        data = self._buffer[offset : offset + end - self._pos]
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
