"""The record schema and its wire codecs, held to TensorFlow's own parser and writer."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.message import DecodeError

from reader.core import protowire, schema, tfrecord


def _record(faces: int = 3, grid_size: int = 7) -> schema.Record:
    rng = np.random.default_rng(faces)
    corners = np.sort(rng.random((faces, 2, 2)), axis=1)
    return schema.Record(
        image=b"\xff\xd8 not really a jpeg",
        image_format="jpeg",
        height=224,
        width=224,
        original_height=768,
        original_width=1024,
        filename="0--Parade/0_Parade_marchingband_1_849.jpg",
        sha256="ab" * 32,
        boxes=corners.transpose(0, 2, 1).reshape(faces, 4)[:, [0, 2, 1, 3]].astype(np.float32),
        attributes=rng.integers(0, 2, (faces, 6)),
        grid=rng.random((grid_size, grid_size, 5)).astype(np.float32),
        ignore=(rng.random((grid_size, grid_size)) > 0.8).astype(np.float32),
        dropped=2,
    )


@pytest.mark.parametrize("faces", [0, 1, 5])
def test_serialized_record_parses_with_tensorflow(faces):
    record = _record(faces)
    example = tf.train.Example.FromString(record.serialize())
    feature = example.features.feature
    assert set(feature) == {f.key for f in schema.FEATURES}
    assert feature[schema.FILENAME].bytes_list.value == [record.filename.encode()]
    assert feature[schema.ORIGINAL_WIDTH].int64_list.value == [1024]
    np.testing.assert_array_equal(feature[schema.XMAX].float_list.value, record.boxes[:, 2])
    assert list(feature[schema.LABEL].int64_list.value) == [1] * faces
    np.testing.assert_array_equal(feature[schema.GRID].float_list.value, record.grid.ravel())
    np.testing.assert_array_equal(feature["image/object/pose"].int64_list.value, record.attributes[:, 5])


def test_tf_feature_spec_parses_a_batch():
    records = [_record(2), _record(0)]
    parsed = tf.io.parse_example([r.serialize() for r in records], schema.tf_feature_spec(7))
    assert parsed[schema.GRID].shape == (2, 245)
    assert parsed[schema.XMIN].shape.as_list() == [2, None]
    np.testing.assert_array_equal(parsed[schema.XMIN][0].numpy(), records[0].boxes[:, 0])
    assert parsed[schema.XMIN][1].shape == (0,)


def test_parse_round_trip_and_tensorflow_written_examples():
    record = _record(4)
    again = schema.Record.parse(record.serialize())
    for field in ("image", "filename", "sha256", "dropped", "original_width", "image_format"):
        assert getattr(again, field) == getattr(record, field)
    np.testing.assert_array_equal(again.boxes, record.boxes)
    np.testing.assert_array_equal(again.grid, record.grid)
    # Our decoder reads what TensorFlow writes (its own map order, its own packing).
    tf_bytes = tf.train.Example.FromString(record.serialize()).SerializeToString()
    np.testing.assert_array_equal(schema.Record.parse(tf_bytes).attributes, record.attributes)


def test_serialization_is_deterministic_and_key_ordered():
    assert _record(3).serialize() == _record(3).serialize()
    forward = protowire.encode_example({"a": ("int64", [1]), "b": ("float", [0.5])})
    backward = protowire.encode_example({"b": ("float", [0.5]), "a": ("int64", [1])})
    assert forward == backward


def test_negative_and_large_int64_survive():
    data = protowire.encode_example({"v": ("int64", [-1, 0, 2**62, -(2**63)])})
    assert list(tf.train.Example.FromString(data).features.feature["v"].int64_list.value) == [-1, 0, 2**62, -(2**63)]
    np.testing.assert_array_equal(protowire.decode_example(data)["v"][1], [-1, 0, 2**62, -(2**63)])


@pytest.mark.parametrize("kind, wire_value", [("int64", b"\x0d\x07\x00\x00\x00"), ("bytes", b"\x08\x07")])
def test_a_value_of_another_wire_type_is_refused_as_tensorflow_refuses_it(kind, wire_value):
    # Field 1 of an Int64List sent as fixed32 (wire type 5), of a BytesList as a varint: once
    # read as other numbers, or skipped, while TensorFlow's parser fails on them.
    field = {"int64": 3, "bytes": 1}[kind]  # Feature: bytes_list = 1, int64_list = 3
    feature = bytes([field << 3 | 2, len(wire_value)]) + wire_value
    entry = b"\x0a\x01v" + bytes([0x12, len(feature)]) + feature
    data = bytes([0x0A, len(entry) + 2, 0x0A, len(entry)]) + entry
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_single_example(data, {"v": tf.io.VarLenFeature(tf.int64 if kind == "int64" else tf.string)})
    with pytest.raises(protowire.WireError, match=f"{kind}_list holds a value that is not"):
        protowire.decode_example(data)


def test_schema_errors_name_the_key():
    features = protowire.decode_example(_record(2).serialize())
    del features[schema.DROPPED]
    with pytest.raises(schema.SchemaError, match="missing key 'target/dropped'"):
        schema.validate_features(features)
    features = protowire.decode_example(_record(2).serialize())
    features[schema.YMIN] = ("float", np.zeros(3, np.float32))
    with pytest.raises(schema.SchemaError, match="key 'image/object/bbox/ymin': expected 2 values, found 3"):
        schema.validate_features(features)
    features = protowire.decode_example(_record(2).serialize())
    features[schema.DROPPED] = ("float", np.zeros(1, np.float32))
    with pytest.raises(schema.SchemaError, match="expected int64 values, found float"):
        schema.validate_features(features)
    with pytest.raises(schema.SchemaError, match="not a tf.train.Example"):
        schema.Record.parse(b"\x0a\xff\xff")


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    payloads = [b"", b"x", _record(1).serialize(), b"\x00" * 70000]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for p in payloads:
            writer.write(p)
    ours = b"".join(tfrecord.encode_record(p) for p in payloads)
    assert (tmp_path / "tf.tfrecord").read_bytes() == ours
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == payloads


def test_tfrecord_index_and_random_access():
    payloads = [b"alpha", b"", b"gamma" * 100]
    stream = io.BytesIO(b"".join(tfrecord.encode_record(p) for p in payloads))
    spans = tfrecord.index_records(stream, "s")
    assert [s.length for s in spans] == [5, 0, 500]
    assert spans[1].offset == spans[0].end
    assert tfrecord.read_record(stream, "s", spans[2]) == payloads[2]
    stream.seek(0)
    assert [d for _, d in tfrecord.iter_records(stream, "s")] == payloads


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-3], "truncated data (6 of 9 bytes)"),
        (lambda b: b[:52], "truncated data (2 of 9 bytes)"),
        (lambda b: b[:41], "truncated header (3 of 12 bytes)"),
        (lambda b: b[:42] + bytes([b[42] ^ 1]) + b[43:], "length checksum mismatch"),
        (lambda b: b[:51] + bytes([b[51] ^ 1]) + b[52:], "data checksum mismatch"),
    ],
)
def test_damage_is_located(damage, message):
    good = b"".join(tfrecord.encode_record(p) for p in (b"one", b"two", b"three"))  # 19 + 19 + 21 bytes
    expected = f"train-00001-of-00002.tfrecord: record 2 at byte 38: {message}"
    with pytest.raises(tfrecord.CorruptRecordError) as caught:
        list(tfrecord.iter_records(io.BytesIO(damage(good)), "train-00001-of-00002.tfrecord"))
    assert str(caught.value) == expected
    assert (caught.value.index, caught.value.offset) == (2, 38)


# ---- the keys derived for other tools (source_id, class/text, is_crowd, area) ----------------

# sha256 of `_record(faces).serialize()` before the derived keys existed: the bytes of the other
# keys must stay exactly these.
_BYTES_BEFORE_DERIVED_KEYS = {
    0: "896de579f88cb4b19e0c951cf2c91a9f99e6d8d2438e8ccee74d3f64a5511c39",
    1: "103716426d7c5584fbfd2db117a0b7504d33679a6f2c9886057028397905abe0",
    5: "0314668dbebabd3fc31ef0a648362f541c954f4b06a329251d7d1656d9890ae9",
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _entries(data: bytes) -> list[tuple[str, bytes]]:
    """The feature map entries of a serialized Example as written: (key, the entry's bytes)."""
    _, pos = _varint(data, 0)  # Example.features: tag, then length
    size, pos = _varint(data, pos)
    assert pos + size == len(data)
    entries = []
    while pos < len(data):
        start = pos
        _, pos = _varint(data, pos)
        size, pos = _varint(data, pos)
        entry, pos = data[pos : pos + size], pos + size
        _, at = _varint(entry, 0)
        key_size, at = _varint(entry, at)
        entries.append((entry[at : at + key_size].decode(), data[start:pos]))
    return entries


@pytest.mark.parametrize("faces", sorted(_BYTES_BEFORE_DERIVED_KEYS))
def test_existing_keys_keep_their_bytes_and_every_key_is_in_sorted_order(faces):
    import hashlib

    entries = _entries(_record(faces).serialize())
    keys = [key for key, _ in entries]
    assert keys == sorted(keys) and set(keys) == {f.key for f in schema.FEATURES}
    before = b"".join(entry for key, entry in entries if key not in schema.DERIVED_KEYS)
    body = b"\x0a" + protowire._varint(len(before)) + before  # Example{features: Features{...}}
    assert hashlib.sha256(body).hexdigest() == _BYTES_BEFORE_DERIVED_KEYS[faces]


def test_derived_keys_as_tensorflow_reads_them():
    record = _record(3)
    attributes = np.array(record.attributes)
    attributes[:, schema.ATTRIBUTES.index("invalid")] = [0, 1, 0]
    record = dataclasses.replace(record, attributes=attributes)
    feature = tf.train.Example.FromString(record.serialize()).features.feature
    assert feature[schema.SOURCE_ID].bytes_list.value == [record.source_id.encode()]
    assert list(feature[schema.CLASS_TEXT].bytes_list.value) == [b"face"] * 3
    assert list(feature[schema.IS_CROWD].int64_list.value) == [0, 1, 0]
    boxes = record.boxes.astype(np.float64)
    pixels = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * 224 * 224
    np.testing.assert_allclose(feature[schema.AREA].float_list.value, pixels, rtol=1e-6)
    np.testing.assert_array_equal(feature[schema.AREA].float_list.value, record.areas)
    parsed = tf.io.parse_example([record.serialize(), _record(0).serialize()], schema.tf_feature_spec(7))
    assert parsed[schema.SOURCE_ID].shape == (2, 1) and parsed[schema.CLASS_TEXT].shape.as_list() == [2, None]


def test_source_id_is_a_stable_int64_of_the_filename():
    assert schema.source_id("0--Parade/0_Parade_marchingband_1_849.jpg") == "4274963969693999"
    ids = [schema.source_id(f"{i}--Event/{i}_Event_{j}.jpg") for i in range(10) for j in range(100)]
    assert all(s.isdigit() and (s == "0" or s[0] != "0") and int(s) < 2**schema.SOURCE_ID_BITS for s in ids)
    # Model Garden's COCO evaluation: tf.strings.to_number(source_id, tf.int64), then int().
    np.testing.assert_array_equal(tf.strings.to_number(ids, tf.int64).numpy(), [int(s) for s in ids])


def test_source_ids_of_all_of_wider_face_are_distinct(wider_split_dir):
    from pipeline import annotations

    names = []
    for file, list_format in (("train_bbx_gt", "boxes"), ("val_bbx_gt", "boxes"), ("test_filelist", "names")):
        path = wider_split_dir / f"wider_face_{file}.txt"
        with open(path, "rb") as f:
            names += [a.filename for a in annotations.parse(f, str(path), list_format)]
    assert len(names) == 32203
    assert len({schema.source_id(name) for name in names}) == len(names)


def test_records_of_builds_before_the_derived_keys_still_parse():
    record = _record(2)
    features = protowire.decode_example(record.serialize())
    older = protowire.encode_example({k: v for k, v in features.items() if k not in schema.DERIVED_KEYS})
    again = schema.Record.parse(older)
    np.testing.assert_array_equal(again.boxes, record.boxes)
    assert again.source_id == record.source_id  # derived from the filename, as a new record holds it
    with pytest.raises(schema.SchemaError, match=r"missing key 'image/source_id' \(builds made before it"):
        schema.validate_features(protowire.decode_example(older))
    del features[schema.AREA]  # some derived keys but not all: damage, not an older build
    with pytest.raises(schema.SchemaError, match="missing key 'image/object/area'"):
        schema.Record.parse(protowire.encode_example(features))
    features = protowire.decode_example(record.serialize())
    features[schema.IS_CROWD] = ("int64", np.zeros(3, np.int64))
    with pytest.raises(schema.SchemaError, match="key 'image/object/is_crowd': expected 2 values, found 3"):
        schema.Record.parse(protowire.encode_example(features))


def _general_decode(data: bytes, keys=None) -> dict:
    """decode_example through its general parser alone (the canonical fast path switched off)."""
    saved = protowire._decode_canonical
    protowire._decode_canonical = lambda view, keys: None
    try:
        return protowire.decode_example(data, keys)
    finally:
        protowire._decode_canonical = saved


def _same_features(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0]
        and (
            a[k][1] == b[k][1]
            if isinstance(a[k][1], list)
            else (a[k][1].dtype == b[k][1].dtype and a[k][1].tobytes() == b[k][1].tobytes())
        )
        for k in a
    )


@pytest.mark.parametrize("faces", [0, 1, 7])
def test_the_canonical_fast_path_decodes_as_the_general_parser(faces):
    """decode_example walks facegrid's own layout directly; it must give what the general parser
    gives, for all keys, some keys, and for TensorFlow's own serialization (another layout)."""
    data = _record(faces).serialize()
    assert protowire._decode_canonical(memoryview(data), None) is not None  # the fast path is taken
    for keys in (None, (schema.SHA256, schema.XMIN, schema.GRID, schema.CLASS_TEXT, schema.ATTRIBUTE_KEYS[0])):
        assert _same_features(protowire.decode_example(data, keys), _general_decode(data, keys))
    tf_bytes = tf.train.Example.FromString(data).SerializeToString()
    assert _same_features(protowire.decode_example(tf_bytes), _general_decode(tf_bytes))


def test_the_canonical_fast_path_never_reads_damaged_bytes_otherwise():
    """Seeded byte mutations and cuts: the fast path either defers to the general parser (None)
    or gives exactly its answer; it never raises."""
    import random

    rng = random.Random(0)
    records = [_record(faces).serialize() for faces in (0, 1, 3, 9)]
    taken = 0
    for _ in range(5000):
        data = bytearray(rng.choice(records))
        data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data
        for _ in range(rng.randint(1, 3)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        fast = protowire._decode_canonical(memoryview(bytes(data)), None)
        if fast is None:
            continue
        taken += 1
        assert _same_features(fast, _general_decode(bytes(data)))
    assert taken > 100  # mutations of values (not of the layout) still go the fast way


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def test_int64_lists_decode_as_tensorflow_decodes_them():
    """Packed varints of every length (one byte, several, the 10 of a negative int64, and 10
    whose top bits fall past the 64th, which protobuf drops) give TensorFlow's values on both
    paths: lists long enough to be decoded at once and short ones read one by one. A varint
    over 64 bits once raised OverflowError out of the parser instead of a value."""
    import random

    rng = random.Random(0)
    field = protowire._field
    for _ in range(300):
        values = [
            rng.choice((rng.randrange(128), rng.randrange(1 << rng.randrange(7, 64)), -rng.randrange(1, 1 << 40)))
            for _ in range(rng.choice((1, 3, 9, 40)))
        ]
        packed = [_varint_bytes(v + (1 << 64) if v < 0 else v) for v in values]
        if rng.random() < 0.3:  # a 10-byte varint carrying bits 64-69: dropped, as TensorFlow drops them
            packed[rng.randrange(len(packed))] = bytes([0xFF] * 9 + [rng.randrange(2, 0x80)])
        data = field(1, field(1, field(1, b"n") + field(2, field(3, field(1, b"".join(packed))))))
        expected = list(tf.train.Example.FromString(data).features.feature["n"].int64_list.value)
        for decoded in (protowire.decode_example(data), _general_decode(data)):
            kind, got = decoded["n"]
            assert kind == "int64" and got.dtype == np.int64 and got.tolist() == expected
    # Only values drop their high bits: a tag carrying bits past the 64th names no field of
    # ours (protobuf refuses the message), so the feature is not there.
    long_tag = bytes([0x8A] + [0x80] * 8 + [0x02])  # field 1, length-delimited, plus bit 66
    inner = field(1, field(1, b"n") + field(2, field(3, field(1, b"\x01"))))
    data = long_tag + protowire._varint(len(inner)) + inner
    with pytest.raises(DecodeError):
        tf.train.Example.FromString(data)
    for decode in (protowire.decode_example, _general_decode):
        assert "n" not in decode(data)
