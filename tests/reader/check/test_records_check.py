"""The checker's per-record checks of the keys derived for other tools (reader.check.records)."""

from __future__ import annotations

import numpy as np
import pytest

from reader.check import records as check_records
from reader.core import protowire, schema, targets
from reader.core.boxes import Placement
from reader.core.config import BuildConfig

_BOXES = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.6, 0.62]], np.float32)


def _features(invalid=(0, 1)) -> dict:
    attributes = np.zeros((len(_BOXES), len(schema.ATTRIBUTES)), np.int64)
    attributes[:, schema.ATTRIBUTES.index("invalid")] = invalid
    grid = targets.encode_faces(_BOXES, attributes[:, 3], Placement.fit(100, 100, 224, "stretch"), 7, 0)
    record = schema.Record(
        image=np.zeros((224, 224, 3), np.uint8).tobytes(), image_format="raw", height=224, width=224,
        original_height=100, original_width=100, filename="3--Riot/3_Riot_7.jpg", sha256="0" * 64,
        boxes=_BOXES, attributes=attributes, grid=grid.grid, ignore=grid.ignore, dropped=grid.dropped,
    )  # fmt: skip
    return protowire.decode_example(record.serialize())


RAW = BuildConfig(image_format="raw")  # the build config of _features's records


def _check(features: dict):
    return check_records.check_record(protowire.encode_example(features), RAW)


def test_a_record_as_built_passes_and_gives_its_source_id():
    facts, found = _check(_features())
    assert found == [] and facts.source_id == schema.source_id("3--Riot/3_Riot_7.jpg")


@pytest.mark.parametrize(
    "key, values, message",
    [
        (schema.IS_CROWD, ("int64", np.array([0, 0])),
         "face 1: image/object/is_crowd expected 1 (its invalid flag), found 0 (1 such faces)"),
        (schema.CLASS_TEXT, ("bytes", [b"face", b"Face"]),
         "face 1: image/object/class/text expected b'face', found b'Face' (1 such faces)"),
        (schema.AREA, ("float", np.array([0.06, 0.0132], np.float32)), "face 0: image/object/area expected 3010.5603 (the box's "
         "area in pixels of the 224x224 image), found 0.06 (2 such faces)"),
        (schema.AREA, ("float", np.array([3010.5593, np.nan], np.float32)), "face 1: image/object/area expected"),
        (schema.SOURCE_ID, ("bytes", [b"3--Riot/3_Riot_7.jpg"]), "image/source_id: expected '"),
    ],
)  # fmt: skip
def test_derived_keys_that_disagree_with_the_record(key, values, message):
    features = _features()
    features[key] = values
    facts, found = _check(features)
    assert [check for check, _ in found] == ["ranges"] and found[0][1].startswith(message), found
    assert facts is not None


def test_area_within_float32_rounding_passes():
    features = _features()
    area = features[schema.AREA][1].astype(np.float64) * (1 + 3e-7)
    features[schema.AREA] = ("float", area.astype(np.float32))
    assert _check(features)[1] == []


def test_derived_keys_held_to_kind_and_length():
    features = _features()
    features[schema.AREA] = ("float", np.ones(3, np.float32))
    assert _check(features) == (None, [("schema", "key 'image/object/area': expected 2 values, found 3")])
    features = _features()
    features[schema.SOURCE_ID] = ("int64", np.array([5]))
    assert _check(features)[1] == [("schema", "key 'image/source_id': expected bytes values, found int64")]


def test_a_record_of_a_build_before_the_derived_keys():
    older = protowire.encode_example({k: v for k, v in _features().items() if k not in schema.DERIVED_KEYS})
    facts, found = check_records.check_record(older, RAW)
    assert facts is None and found == [
        ("schema", "missing key 'image/source_id' (builds made before it was added lack it: build the split again)")
    ]
    # The readers name a record's problem with `schema.record_problem`; training needs none of these keys.
    assert schema.record_problem(older, RAW) is None


def test_source_id_duplicates():
    def facts(source_id):
        return check_records.RecordFacts("f", "0" * 64, 0, np.zeros(0, np.float32), 0, 0, 0, source_id)

    found = check_records.source_id_duplicates([facts("7"), None, facts("9"), facts("7"), facts(""), facts("7")])
    assert found == [(3, 0), (5, 0)]
