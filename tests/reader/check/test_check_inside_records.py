"""The checker on faults inside records (checksums rewritten to match, so only the record's own
checks can see them), and its per-record checks on single hand-made records."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import records
from pipeline.annotations import ImageAnnotation
from reader.check import records as check_records
from reader.core import protowire, schema, targets
from reader.core.boxes import Placement
from reader.core.config import BuildConfig
from tests.support import build_edits as fx
from tests.support.checker import failed, problems, run_check

# -- faults inside records, checksums rewritten to match ------------------------------------------


def test_target_moved_to_another_cell(broken, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, fx.move_target)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    # CRCs and the manifest's checksums match: only the recomputation catches it.
    assert failed(report) == {"targets"}
    [(where, record, message)] = problems(report, "targets")
    assert (where, record) == (victim.file, victim.index)
    assert "grid (h, w, y, x, obj) differs from the boxes" in message and "cell (" in message


def test_grid_value_out_of_range(broken, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].any())

    def too_tall(features):
        grid = np.asarray(features[schema.GRID][1]).reshape(7, 7, 5).copy()
        row, col = np.argwhere(grid[..., targets.OBJ] == 1)[0]
        grid[row, col, targets.H] = 1.5
        features[schema.GRID] = ("float", grid.ravel())

    fx.edit_record(broken, victim.file, victim.index, too_tall)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"ranges", "targets"}
    [(where, record, message)] = problems(report, "ranges")
    assert (where, record) == (victim.file, victim.index)
    assert "h expected in (0, 1]" in message and "1.5" in message


def test_a_zero_width_box_is_a_degenerate_face_that_no_build_stores(broken, capsys):
    victim = fx.find(broken, lambda r: fx.faces(r) >= 1)

    def flatten(features):
        xmin = np.asarray(features[schema.XMIN][1]).copy()
        features[schema.XMAX] = ("float", xmin)

    fx.edit_record(broken, victim.file, victim.index, flatten)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and "ranges" in failed(report)
    assert any("zero width or height: a degenerate face" in m for _, _, m in problems(report, "ranges"))


def test_inverted_box(broken, capsys):
    victim = fx.find(broken, lambda r: fx.faces(r) >= 1)

    def invert(features):
        xmin, xmax = np.asarray(features[schema.XMIN][1]).copy(), np.asarray(features[schema.XMAX][1]).copy()
        features[schema.XMIN], features[schema.XMAX] = ("float", xmax), ("float", xmin)

    fx.edit_record(broken, victim.file, victim.index, invert)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert "ranges" in failed(report)
    messages = problems(report, "ranges")
    assert {(where, record) for where, record, _ in messages} == {(victim.file, victim.index)}
    assert any("face 0" in m and "min > max" in m for _, _, m in messages)


def test_undecodable_image(broken, capsys):
    victim = fx.find(broken, lambda r: True)

    def garble(features):
        jpeg = features[schema.ENCODED][1][0]
        features[schema.ENCODED] = ("bytes", [jpeg[:200] + b"\x00" * 50])

    fx.edit_record(broken, victim.file, victim.index, garble)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"images"}
    [(where, record, message)] = problems(report, "images")
    assert (where, record) == (victim.file, victim.index) and "does not decode" in message


def test_missing_key(broken, capsys):
    victim = fx.find(broken, lambda r: fx.faces(r) >= 1)
    fx.edit_record(broken, victim.file, victim.index, lambda features: features.pop(schema.DROPPED))
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert "schema" in failed(report)
    [(where, record, message)] = problems(report, "schema")
    assert (where, record) == (victim.file, victim.index) and repr(schema.DROPPED) in message
    # An unreadable record leaves the record totals uncompared instead of failing them.
    counts = next(c for c in report["checks"] if c["name"] == "counts")
    assert counts["status"] == "pass" and "not compared" in counts["note"]


def test_a_source_id_twice_in_the_split(broken, capsys):
    # TF Model Garden keys its evaluation on image/source_id: two images must never share one.
    first, second = fx.records_of(broken)[:2]
    fx.edit_record(broken, second.file, second.index, lambda f: f.__setitem__(schema.SOURCE_ID, first.features[schema.SOURCE_ID]))
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and "duplicates" in failed(report)
    [(where, record, message)] = problems(report, "duplicates")
    assert (where, record) == (second.file, second.index)
    assert f"also at {first.file}:{first.index}" in message and "image/source_id" in message


def test_duplicated_record(broken, capsys):
    victim = fx.find(broken, lambda r: True)
    path = broken / victim.file
    records = fx.read_records(path)
    records.insert(victim.index + 1, records[victim.index])
    fx.write_records(path, records)
    fx.refresh_manifest(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert "duplicates" in failed(report)
    [(where, record, message)] = problems(report, "duplicates")
    assert (where, record) == (victim.file, victim.index + 1)
    assert f"duplicate of {victim.file}:{victim.index}" in message
    # The manifest's total no longer matches the shards either.
    assert any("counts.records" in m for _, _, m in problems(report, "counts"))


def test_record_in_the_wrong_shard(broken, capsys):
    first, second = fx.shard_files(broken)[:2]
    moved = fx.read_records(broken / first)[0]
    fx.write_records(broken / first, fx.read_records(broken / first)[1:])
    fx.write_records(broken / second, [*fx.read_records(broken / second), moved])
    fx.refresh_manifest(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"placement"}
    [(where, record, message)] = problems(report, "placement")
    assert where == second and record == len(fx.read_records(broken / second)) - 1
    assert "belongs in shard 0 of 3" in message


# -- single records -------------------------------------------------------------------------------


def _record(boxes, invalid, **changes) -> bytes:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    attributes = np.zeros((len(boxes), len(schema.ATTRIBUTES)), np.int64)
    attributes[:, schema.ATTRIBUTES.index("invalid")] = invalid
    placement = Placement.fit(100, 100, 224, "stretch")
    encoded = targets.encode_faces(boxes, attributes[:, schema.ATTRIBUTES.index("invalid")], placement, 7, 0)
    fields = dict(
        image=np.zeros((224, 224, 3), np.uint8).tobytes(), image_format="raw", height=224, width=224,
        original_height=100, original_width=100, filename="a.jpg", sha256="0" * 64, boxes=boxes,
        attributes=attributes, grid=encoded.grid, ignore=encoded.ignore, dropped=encoded.dropped,
    )  # fmt: skip
    fields.update(changes)
    return schema.Record(**fields).serialize()


RAW = BuildConfig(image_format="raw")  # what _record's records are


def test_record_without_faces_is_fine():
    facts, found = check_records.check_record(_record(np.zeros((0, 4)), []), RAW)
    assert found == [] and facts.faces == 0 and facts.targets == 0


def test_record_crowded_and_ignored_is_fine():
    boxes = [[0.30, 0.30, 0.40, 0.40], [0.31, 0.31, 0.39, 0.39], [0.8, 0.8, 0.9, 0.9]]
    facts, found = check_records.check_record(_record(boxes, [0, 0, 1]), RAW)
    assert found == [] and (facts.targets, facts.dropped, facts.ignored) == (1, 1, 1)


def test_record_ignore_under_a_target():
    boxes = [[0.30, 0.30, 0.40, 0.40]]
    grid = targets.encode_faces(np.asarray(boxes, np.float32), np.array([0]), Placement.fit(100, 100, 224, "stretch"), 7, 0)
    ignore = grid.ignore.copy()
    ignore[2, 2] = 1  # where the target is
    _, found = check_records.check_record(_record(boxes, [0], ignore=ignore), RAW)
    assert [check for check, _ in found] == ["ranges", "targets"]
    assert "ignore expected 0 where a target is" in found[0][1]


def test_record_of_another_grid_size():
    data = _record([[0.1, 0.1, 0.2, 0.2]], [0])
    _, found = check_records.check_record(data, BuildConfig(image_format="raw", grid_size=8))
    assert found == [
        (
            "schema",
            "key 'target/grid': expected 320 values for the manifest's grid_size 8, found 245 "
            "(a 7x7 grid): the manifest disagrees with this record",
        )
    ]


def test_record_with_a_nan_box():
    boxes = np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6]], np.float32)
    data = _record(boxes, [0, 0])
    features = protowire.decode_example(data)
    xmin = features[schema.XMIN][1].copy()
    xmin[1] = np.nan
    features[schema.XMIN] = ("float", xmin)
    facts, found = check_records.check_record(protowire.encode_example(features), RAW)
    assert [check for check, _ in found] == ["ranges"] and "face 1" in found[0][1] and "nan" in found[0][1]
    assert facts.faces == 2


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_build_rule_recomputed_exactly(resize):
    """Records made by the build's own per-image code pass, ties between equal faces included."""
    buffer = io.BytesIO()
    Image.new("RGB", (301, 173), (120, 90, 60)).save(buffer, format="JPEG")
    faces = np.array(
        [
            [60, 40, 9, 7, 0, 0, 0, 0, 0, 0],  # these two tie in source pixels and share a cell
            [62, 41, 9, 7, 0, 0, 0, 0, 0, 0],
            [200, 100, 30, 40, 0, 0, 0, 1, 0, 0],  # invalid: ignored
            [290, 160, 40, 40, 0, 0, 0, 0, 0, 0],  # past the corner: clipped
        ],
        np.int32,
    )
    config = BuildConfig(resize=resize, image_format="raw")
    record, counts = records.make_record(ImageAnnotation("x/y.jpg", 1, faces), buffer.getvalue(), config)
    facts, found = check_records.check_record(record.serialize(), BuildConfig(resize=resize, image_format="raw"))
    assert found == []
    assert (facts.targets, facts.dropped, facts.ignored) == (counts["targets"], counts["dropped"], counts["ignored"]) == (2, 1, 1)
