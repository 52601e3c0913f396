"""pipeline.hashing_writer: a shard's bytes, size and sha256 are those of what was written,
whatever the pieces it came in and the chunk it is written in."""

import hashlib
import io

import numpy as np
import pytest

from pipeline.hashing_writer import WRITE_BYTES, HashingWriter


@pytest.mark.parametrize("chunk", [1, 7, 1000, WRITE_BYTES])
def test_what_is_written_is_what_is_hashed_and_counted(chunk):
    rng = np.random.default_rng(chunk)  # seeded: pieces of random sizes, empty ones among them
    pieces = [rng.bytes(int(n)) for n in rng.integers(0, 3000, 200)]
    file = io.BytesIO()
    writer = HashingWriter(file, chunk)
    for piece in pieces:
        writer.write(piece)
    writer.flush()
    whole = b"".join(pieces)
    assert file.getvalue() == whole
    assert writer.size == len(whole) and writer.digest.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_nothing_reaches_the_file_before_a_chunk_fills_or_the_flush():
    file = io.BytesIO()
    writer = HashingWriter(file, 10)
    writer.write(b"12345")
    assert file.getvalue() == b"" and writer.size == 5
    writer.write(b"67890")
    assert file.getvalue() == b"1234567890"
    writer.write(b"x")
    writer.flush()
    writer.flush()  # a second flush writes nothing again
    assert file.getvalue() == b"1234567890x" and writer.digest.hexdigest() == hashlib.sha256(b"1234567890x").hexdigest()
