"""TFRecord framing, without TensorFlow.

Each record is: uint64 length (little endian), masked crc32c of those 8 bytes, the data, masked
crc32c of the data. The Beam job writes shards with `encode_record`. `ShardSequence` and the
checker find the records from their headers alone with `index_records` and read each at its span
with `read_record` (the checker's leakage check walks a shard with `iter_records`);
`make_dataset` reads with TensorFlow's TFRecordDataset, and counts a shard's records with
`index_records` and names its damage with `walk_records`. All name the shard, record index and
byte offset of any damage instead of TensorFlow's bare DataLossError."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

HEADER_BYTES = 12  # length + its crc
FOOTER_BYTES = 4  # data crc
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """Frames one record's bytes as TFRecord."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data))))


class CorruptRecordError(ValueError):
    """A record whose framing or checksums are wrong. Says where: shard, record index, offset."""

    def __init__(self, shard: str, index: int, offset: int, problem: str):
        super().__init__(f"{shard}: record {index} at byte {offset}: {problem}")
        self.shard, self.index, self.offset, self.problem = shard, index, offset, problem
        self.spans: tuple[RecordSpan, ...] = ()  # index_records: the intact records before the damage


@dataclasses.dataclass(frozen=True)
class RecordSpan:
    """Where one record's data lies in its shard."""

    index: int
    offset: int  # of the record's header
    length: int  # of its data

    @property
    def data_offset(self) -> int:
        return self.offset + HEADER_BYTES

    @property
    def end(self) -> int:
        return self.data_offset + self.length + FOOTER_BYTES


def _header(f: BinaryIO) -> tuple[int | None, str | None]:
    """Reads a record header: (data length, None), (None, problem), or (None, None) at a clean
    end of file."""
    header = f.read(HEADER_BYTES)
    if not header:
        return None, None
    if len(header) < HEADER_BYTES:
        return None, f"truncated header ({len(header)} of 12 bytes)"
    length_bytes = header[:8]
    if masked_crc32c(length_bytes) != struct.unpack("<I", header[8:])[0]:
        return None, "length checksum mismatch"
    return struct.unpack("<Q", length_bytes)[0], None


def walk_records(f: BinaryIO) -> Iterator[tuple[RecordSpan, bytes | None, str | None]]:
    """Yields (span, data, None) for every intact record of an open shard and (span, None,
    problem) for a damaged one. Goes on past a record whose data checksum fails (its header
    still gives the next record's place); stops after a damaged header or a truncated shard."""
    index = offset = 0
    while True:
        length, problem = _header(f)
        if problem is not None:
            yield RecordSpan(index, offset, 0), None, problem
        if length is None:
            return
        span = RecordSpan(index, offset, length)
        body = f.read(span.length + FOOTER_BYTES)
        if len(body) < span.length + FOOTER_BYTES:
            yield span, None, f"truncated data ({len(body)} of {span.length + FOOTER_BYTES} bytes)"
            return
        data = body[: span.length]
        if masked_crc32c(data) != struct.unpack("<I", body[span.length :])[0]:
            yield span, None, "data checksum mismatch"
        else:
            yield span, data, None
        index, offset = index + 1, span.end


def iter_records(f: BinaryIO, shard: str) -> Iterator[tuple[RecordSpan, bytes]]:
    """Yields (span, data) for every record of an open shard, checking framing and checksums.

    `shard` names the file in errors. Raises CorruptRecordError at the first damaged record.
    """
    for span, data, problem in walk_records(f):
        if problem is not None:
            raise CorruptRecordError(shard, span.index, span.offset, problem)
        yield span, data


def index_records(f: BinaryIO, shard: str) -> list[RecordSpan]:
    """Finds every record's span from the headers alone, seeking past the data.

    On damage raises CorruptRecordError whose `spans` holds the records found before it.
    """
    size = f.seek(0, 2)
    f.seek(0)
    spans: list[RecordSpan] = []
    offset = 0
    try:
        while True:
            length, problem = _header(f)
            if problem is not None:
                raise CorruptRecordError(shard, len(spans), offset, problem)
            if length is None:
                break
            span = RecordSpan(len(spans), offset, length)
            if span.end > size:
                raise CorruptRecordError(
                    shard, span.index, offset, f"truncated data ({size - span.data_offset} of {length + FOOTER_BYTES} bytes)"
                )
            f.seek(span.end)
            spans.append(span)
            offset = span.end
    except CorruptRecordError as e:
        e.spans = tuple(spans)
        raise
    return spans


def first_damage(f: BinaryIO, shard: str) -> CorruptRecordError | None:
    """The first damaged record of an open shard (framing or checksums), or None: what a reader
    names when a shard's sha256 is not its manifest entry's, before the plainer "other bytes"."""
    for span, _, problem in walk_records(f):
        if problem is not None:
            return CorruptRecordError(shard, span.index, span.offset, problem)
    return None


def read_record(f: BinaryIO, shard: str, span: RecordSpan) -> bytes:
    """Reads and checks one record at a known span (random access for the Keras reader)."""
    f.seek(span.offset)
    found, data, problem = next(walk_records(f), (None, None, "the shard ends before this record"))
    if problem is None and found.length != span.length:
        problem = f"header says {found.length} bytes, the index {span.length}"
    if problem is not None:
        raise CorruptRecordError(shard, span.index, span.offset, problem)
    return data
