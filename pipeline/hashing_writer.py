"""A file written and hashed (sha256) in pieces: the shard writer's output, whose size and
digest go into the manifest's shard entry."""

from __future__ import annotations

import hashlib

WRITE_BYTES = 1 << 20  # the piece a shard is written and hashed in


class HashingWriter:
    """Writes to `file` and hashes what it wrote, in pieces of about `chunk` bytes: every write
    and every hash of a piece lets go of the GIL and waits to take it back from the image
    threads, so a record at a time (25 KB) costs the shard's thread more than the writing
    itself. `flush` writes the rest; then `size` and `digest` describe the whole file."""

    def __init__(self, file, chunk: int = WRITE_BYTES):
        self._file, self._chunk, self._pending = file, chunk, bytearray()
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= self._chunk:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.digest.update(self._pending)
            self._file.write(self._pending)
            self._pending.clear()
