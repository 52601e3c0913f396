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

import functools
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np

Kind = Literal["bytes", "float", "int64"]
Values = Sequence[bytes] | np.ndarray | Sequence[float] | Sequence[int]

_LIST_FIELD: dict[str, int] = {"bytes": 1, "float": 2, "int64": 3}
_KIND_OF_FIELD: dict[int, Kind] = {1: "bytes", 2: "float", 3: "int64"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed serialized `tf.train.Example`."""


_UINT64_MASK = (1 << 64) - 1  # an int64 value's bits past the 64th are dropped, as protobuf drops them
_ONE_BYTE = [bytes([value]) for value in range(0x80)]  # tags, short lengths, most attribute values


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
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


def _packed_int64(values: Values) -> bytes:
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        ints = values.ravel().tolist()
    else:
        ints = np.asarray(values, dtype=np.int64).ravel().tolist()
    if not ints or (min(ints) >= 0 and max(ints) < 0x80):  # one byte each: the varint is the value itself
        return bytes(ints)
    return b"".join([_varint(v) for v in ints])


def _encode_list(kind: str, values: Values) -> bytes:
    """The value list's field 1: packed floats or int64s, or one field per bytes value."""
    if kind == "bytes":
        return b"".join([_VALUE_TAG + _varint(len(v)) + v for v in map(bytes, values)])
    if kind == "float":
        packed = np.asarray(values, dtype="<f4").tobytes()
    elif kind == "int64":
        packed = _packed_int64(values)
    else:
        raise ValueError(f"feature kind must be one of {sorted(_LIST_FIELD)}, got {kind!r}")
    size = len(packed)
    return _VALUE_TAG + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + packed if size else b""


# Every field of an Example is length-delimited (wire type 2): its tags are single bytes. The
# encoder is what a record costs besides its pixels (about 30 features an image, and every
# reused image's record is made anew): lengths under 128 are one byte, looked up, not computed.
_VALUE_TAG = _ENTRY_TAG = _KEY_TAG = bytes([1 << 3 | _LEN])
_FEATURE_TAG = bytes([2 << 3 | _LEN])
_KIND_TAG = {kind: bytes([number << 3 | _LEN]) for kind, number in _LIST_FIELD.items()}


@functools.lru_cache(maxsize=1024)  # a record's keys: a few dozen
def _key_field(key: str) -> bytes:
    encoded = key.encode("utf-8")
    return _KEY_TAG + _varint(len(encoded)) + encoded


def encode_example(features: Mapping[str, tuple[Kind, Values]]) -> bytes:
    """Serializes `{key: (kind, values)}` as a `tf.train.Example`, keys in sorted order."""
    entries = []
    one_byte, varint = _ONE_BYTE, _varint
    for key in sorted(features):
        kind, values = features[key]
        listed = _encode_list(kind, values)
        size = len(listed)
        feature = _KIND_TAG[kind] + (one_byte[size] if size < 0x80 else varint(size)) + listed
        size = len(feature)
        entry = _key_field(key) + _FEATURE_TAG + (one_byte[size] if size < 0x80 else varint(size)) + feature
        size = len(entry)
        entries.append(_ENTRY_TAG + (one_byte[size] if size < 0x80 else varint(size)) + entry)
    return _field(1, b"".join(entries))


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    byte = view[pos]
    if byte < 0x80:  # tags and short lengths: nearly every call
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = view[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(view: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yields (field number, wire type, start, stop) of every field of the message in view[pos:end];
    for a varint field, start is its value and stop is -1."""
    while pos < end:
        tag, pos = _read_varint(view, pos)
        wire_type = tag & 7
        if wire_type == _LEN:
            size, pos = _read_varint(view, pos)
            start, pos = pos, pos + size
        elif wire_type == _VARINT:
            value, pos = _read_varint(view, pos)
            yield tag >> 3, wire_type, value & _UINT64_MASK, -1
            continue
        elif wire_type in (_I32, _I64):
            start, pos = pos, pos + (4 if wire_type == _I32 else 8)
        else:
            raise WireError(f"unsupported wire type {wire_type} in field {tag >> 3}")
        if pos > end:
            raise WireError(f"field {tag >> 3} runs {pos - end} bytes past its message")
        yield tag >> 3, wire_type, start, pos


def _decode_list(kind: Kind, view: memoryview) -> list[bytes] | np.ndarray:
    # A value of another wire type (an int64 sent as fixed32, say) is what TensorFlow's parser
    # refuses ("Parsing int64_list failed"): refused here too, never read as something else.
    if kind == "bytes":
        values = []
        for n, t, a, b in _fields(view, 0, len(view)):
            if n == 1:
                if t != _LEN:
                    raise WireError("bytes_list holds a value that is not length-delimited")
                values.append(bytes(view[a:b]))
        return values
    chunks = []
    for number, wire_type, start, stop in _fields(view, 0, len(view)):
        if number != 1:
            continue
        if kind == "float":
            if wire_type not in (_LEN, _I32) or (stop - start) % 4:
                raise WireError("float_list holds a value that is not a 32-bit float")
            chunks.append(np.frombuffer(view[start:stop], dtype="<f4"))
        elif wire_type == _VARINT:
            chunks.append(np.array([start], dtype=np.uint64))
        elif wire_type != _LEN:
            raise WireError("int64_list holds a value that is not a varint")
        else:
            pos, ints = start, []
            while pos < stop:
                item, pos = _read_varint(view, pos)
                ints.append(item & _UINT64_MASK)
            chunks.append(np.array(ints, dtype=np.uint64))
    if kind == "float":
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return np.concatenate(chunks).view(np.int64) if chunks else np.zeros(0, np.int64)


def decode_example(data: bytes, keys: Collection[str] | None = None) -> dict[str, tuple[Kind, list[bytes] | np.ndarray]]:
    """Parses a serialized `tf.train.Example` into `{key: (kind, values)}`.

    Bytes features give a list of bytes; float and int64 features give float32 and int64 arrays.
    keys: the features to decode, or None for all; the others are skipped undecoded (a crowded
    image's per-face lists cost more than the rest of the record). Raises WireError on bytes
    that are not a well-formed Example.
    """
    view = memoryview(data)
    fast = _decode_canonical(view, keys)
    if fast is not None:
        return fast
    features: dict[str, tuple[Kind, list[bytes] | np.ndarray]] = {}
    try:
        for number, wire_type, start, stop in _fields(view, 0, len(view)):
            if number != 1 or wire_type != _LEN:
                continue
            for entry_number, entry_type, entry_start, entry_stop in _fields(view, start, stop):
                if entry_number != 1 or entry_type != _LEN:
                    continue
                key, feature = None, (0, 0)
                for part_number, part_type, a, b in _fields(view, entry_start, entry_stop):
                    if part_number == 1 and part_type == _LEN:
                        key = str(view[a:b], "utf-8")
                    elif part_number == 2 and part_type == _LEN:
                        feature = (a, b)
                if key is None:
                    raise WireError("feature map entry without a key")
                if keys is not None and key not in keys:
                    continue
                lists = [(n, a, b) for n, t, a, b in _fields(view, *feature) if n in _KIND_OF_FIELD and t == _LEN]
                if len(lists) != 1:
                    raise WireError(f"feature {key!r} holds {len(lists)} value lists, expected 1")
                list_field, a, b = lists[0]
                kind = _KIND_OF_FIELD[list_field]
                features[key] = (kind, _decode_list(kind, view[a:b]))
    except IndexError:
        raise WireError("message ends inside a field") from None
    return features


def _decode_canonical(view: memoryview, keys: Collection[str] | None) -> dict | None:
    """`decode_example` for an Example laid out as `encode_example` writes it (one Features
    message; each map entry: key, then feature, then one value list), walked without the
    generators of the general parser: about twice as fast on facegrid's own records. None at the
    first byte of any other layout, for the general parser to read (and to name what is wrong)."""
    try:
        end = len(view)
        if end == 0:
            return {}
        if view[0] != 0x0A:  # Example field 1, length-delimited
            return None
        size, pos = _read_varint(view, 1)
        if pos + size != end:
            return None
        features: dict[str, tuple[Kind, list[bytes] | np.ndarray]] = {}
        while pos < end:
            if view[pos] != 0x0A:  # a map entry
                return None
            size, pos = _read_varint(view, pos + 1)
            entry_end = pos + size
            if entry_end > end or view[pos] != 0x0A:  # its key first
                return None
            size, pos = _read_varint(view, pos + 1)
            key_end = pos + size
            if key_end > entry_end:
                return None
            key = str(view[pos:key_end], "utf-8")
            if key_end == entry_end or view[key_end] != 0x12:  # then its feature
                return None
            size, pos = _read_varint(view, key_end + 1)
            if pos + size != entry_end:
                return None
            if keys is None or key in keys:
                tag = view[pos]
                list_field = tag >> 3
                if tag & 7 != _LEN or list_field not in _KIND_OF_FIELD:
                    return None
                size, start = _read_varint(view, pos + 1)
                if start + size != entry_end:  # one value list, filling the feature
                    return None
                kind = _KIND_OF_FIELD[list_field]
                features[key] = (kind, _canonical_list(kind, view, start, entry_end))
            pos = entry_end
        return features
    except (IndexError, WireError, UnicodeDecodeError):
        return None


def _canonical_list(kind: Kind, view: memoryview, start: int, end: int) -> list[bytes] | np.ndarray:
    """A value list as `encode_example` writes it (bytes one field each, numbers packed in one
    field) decoded directly; any other layout goes through `_decode_list`."""
    if start == end:
        return _decode_list(kind, view[start:end])
    if view[start] != 0x0A:
        return _decode_list(kind, view[start:end])
    size, pos = _read_varint(view, start + 1)
    if pos + size != end:  # several fields: more than one value (bytes) or chunks (numbers)
        return _decode_list(kind, view[start:end])
    if kind == "bytes":
        return [bytes(view[pos:end])]
    if kind == "float":
        if size % 4:
            return _decode_list(kind, view[start:end])
        return np.frombuffer(view[pos:end], dtype="<f4").astype(np.float32)
    if end - pos > _SHORT_LIST:
        values = _packed_varints(view[pos:end])
        if values is not None:
            return values
    ints = []
    while pos < end:
        item, pos = _read_varint(view, pos)
        ints.append(item & _UINT64_MASK)
    if pos != end:
        return _decode_list(kind, view[start:end])
    return np.array(ints, dtype=np.uint64).view(np.int64)


_SHORT_LIST = 8  # bytes of packed varints below which a Python loop beats numpy's set-up


def _packed_varints(view: memoryview) -> np.ndarray | None:
    """Packed varints decoded at once (an image's per-face attribute lists): int64, or None
    where one is cut short or longer than 9 bytes (63 bits), for the loop to read or refuse."""
    raw = np.frombuffer(view, np.uint8)
    last = raw < 0x80  # the last byte of each varint
    if not last[-1]:
        return None
    if last.all():  # one byte each: the value itself
        return raw.astype(np.int64)
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 9:
        return None
    shifts = ((np.arange(len(raw)) - np.repeat(starts, lengths)) * 7).astype(np.uint64)
    return np.bitwise_or.reduceat((raw & 0x7F).astype(np.uint64) << shifts, starts).view(np.int64)
