"""make_record: one annotated image to one record, the keys derived for other tools included."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import records
from pipeline.annotations import ImageAnnotation
from reader.core import protowire, schema
from reader.core.config import BuildConfig


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


_FACES = np.array(
    [
        [10, 20, 40, 30, 0, 0, 0, 0, 0, 0],
        [100, 50, 0, 10, 0, 0, 0, 0, 0, 0],  # degenerate: not stored
        [200, 100, 30, 40, 2, 1, 1, 1, 2, 1],  # invalid: a crowd face for COCO evaluation
        [290, 160, 40, 40, 0, 0, 0, 0, 0, 0],  # past the corner: clipped to 10 x 13
    ],
    np.int32,
)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_derived_keys_of_a_record(resize):
    config = BuildConfig(resize=resize)
    record, counts = records.make_record(ImageAnnotation("7--Cheering/7_Cheering_1.jpg", 3, _FACES), _jpeg(300, 173), config)
    features = protowire.decode_example(record.serialize())

    def values(key):
        return features[key][1]

    assert values(schema.SOURCE_ID) == [schema.source_id("7--Cheering/7_Cheering_1.jpg").encode()]
    assert values(schema.CLASS_TEXT) == [b"face"] * 3 == [b"face"] * counts["faces_stored"]
    np.testing.assert_array_equal(values(schema.IS_CROWD), [0, 1, 0])
    np.testing.assert_array_equal(values(schema.IS_CROWD), values("image/object/invalid"))
    # Areas in pixels of the stored 224 x 224 image: the source box scaled as the image was
    # (letterbox: to 224 x 129, so 224/300 across and 129/173 down).
    scaled_height = 224 if resize == "stretch" else 129
    source_pixels = np.array([40 * 30, 30 * 40, 10 * 13], np.float64)
    np.testing.assert_allclose(values(schema.AREA), source_pixels * (224 / 300) * (scaled_height / 173), rtol=1e-5)
    np.testing.assert_array_equal(values(schema.AREA), schema.box_areas(record.boxes, 224, 224))


def test_a_record_without_faces_has_empty_derived_lists():
    annotation = ImageAnnotation("0--Parade/empty.jpg", 1, np.zeros((0, 10), np.int32))
    record, _ = records.make_record(annotation, _jpeg(64, 48), BuildConfig())
    features = protowire.decode_example(record.serialize())
    assert features[schema.CLASS_TEXT] == ("bytes", [])
    assert len(features[schema.IS_CROWD][1]) == len(features[schema.AREA][1]) == 0
    assert features[schema.SOURCE_ID][1] == [record.source_id.encode()]
