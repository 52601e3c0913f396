"""`tf.train.Example` on the wire, without TensorFlow.

The Beam workers write records with this encoder so that they never import TensorFlow (that
costs seconds and hundreds of MB in every worker process). Features are written in sorted key
order, so the same values always give the same bytes; protobuf's own map serialization
promises no order. The tests hold both directions to TensorFlow's parser.

Wire layout (proto3): Example{1: Features{1: repeated MapEntry{1: key, 2: Feature}}}, where a
Feature holds one of bytes_list = 1, float_list = 2, int64_list = 3, each a message whose
field 1 holds the values (floats and int64s packed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, Union

import numpy as np

Kind = Literal["bytes", "float", "int64"]
Values = Union[Sequence[bytes], np.ndarray, Sequence[float], Sequence[int]]

_LIST_FIELD: dict[str, int] = {"bytes": 1, "float": 2, "int64": 3}
_KIND_OF_FIELD: dict[int, Kind] = {1: "bytes", 2: "float", 3: "int64"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed serialized `tf.train.Example`."""


def _varint(value: int) -> bytes:
    if value < 0:  # int64 negatives travel as their 64-bit two's complement
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _encode_list(kind: str, values: Values) -> bytes:
    if kind == "bytes":
        return b"".join(_field(1, bytes(v)) for v in values)
    if kind == "float":
        packed = np.asarray(values, dtype="<f4").tobytes()
    elif kind == "int64":
        packed = b"".join(_varint(int(v)) for v in np.asarray(values, dtype=np.int64).ravel())
    else:
        raise ValueError(f"feature kind must be one of {sorted(_LIST_FIELD)}, got {kind!r}")
    return _field(1, packed) if packed else b""


def encode_example(features: Mapping[str, tuple[Kind, Values]]) -> bytes:
    """Serializes `{key: (kind, values)}` as a `tf.train.Example`, keys in sorted order."""
    entries = []
    for key in sorted(features):
        kind, values = features[key]
        feature = _field(_LIST_FIELD[kind], _encode_list(kind, values))
        entries.append(_field(1, _field(1, key.encode("utf-8")) + _field(2, feature)))
    return _field(1, b"".join(entries))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Yields (field number, wire type, value) for every field of one message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise WireError(f"field {number} claims {length} bytes, {len(buf) - pos} left")
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type in (_I32, _I64):
            size = 4 if wire_type == _I32 else 8
            if pos + size > len(buf):
                raise WireError(f"field {number} truncated")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise WireError(f"unsupported wire type {wire_type} in field {number}")
        yield number, wire_type, value


def _decode_list(kind: Kind, buf: bytes) -> list[bytes] | np.ndarray:
    if kind == "bytes":
        return [bytes(v) for n, t, v in _fields(buf) if n == 1 and t == _LEN]
    chunks = []
    for number, wire_type, value in _fields(buf):
        if number != 1:
            continue
        if kind == "float":
            if wire_type not in (_LEN, _I32) or len(value) % 4:
                raise WireError("float_list holds a value that is not a 32-bit float")
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif wire_type == _VARINT:
            chunks.append(np.array([value], dtype=np.uint64))
        else:
            pos, ints = 0, []
            while pos < len(value):
                item, pos = _read_varint(value, pos)
                ints.append(item)
            chunks.append(np.array(ints, dtype=np.uint64))
    if kind == "float":
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return np.concatenate(chunks).view(np.int64) if chunks else np.zeros(0, np.int64)


def decode_example(data: bytes) -> dict[str, tuple[Kind, list[bytes] | np.ndarray]]:
    """Parses a serialized `tf.train.Example` into `{key: (kind, values)}`.

    Bytes features give a list of bytes; float and int64 features give float32 and int64 arrays.
    Raises WireError on bytes that are not a well-formed Example.
    """
    features: dict[str, tuple[Kind, list[bytes] | np.ndarray]] = {}
    for number, wire_type, body in _fields(data):
        if number != 1 or wire_type != _LEN:
            continue
        for entry_number, entry_type, entry in _fields(body):
            if entry_number != 1 or entry_type != _LEN:
                continue
            key, feature = None, b""
            for part_number, part_type, part in _fields(entry):
                if part_number == 1 and part_type == _LEN:
                    key = part.decode("utf-8")
                elif part_number == 2 and part_type == _LEN:
                    feature = part
            if key is None:
                raise WireError("feature map entry without a key")
            kinds = [(n, v) for n, t, v in _fields(feature) if n in _KIND_OF_FIELD and t == _LEN]
            if len(kinds) != 1:
                raise WireError(f"feature {key!r} holds {len(kinds)} value lists, expected 1")
            list_field, payload = kinds[0]
            features[key] = (_KIND_OF_FIELD[list_field], _decode_list(_KIND_OF_FIELD[list_field], payload))
    return features
