"""The dataset report's numbers on hand-made faces with known answers, its plots on nothing at
all, and a report refused when the shards changed after the check.

The report of a real (small) build, against the checker's statistics, is in test_check.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reader.check import split as check_split
from reader.check.report import dataset as dataset_report
from reader.check.report import faces as report_faces
from reader.check.report import numbers as report_numbers
from reader.core import schema
from reader.core.config import BuildConfig
from tests.support import build_edits as fx

CONFIG = BuildConfig(min_face_px=2.0)
INVALID = schema.ATTRIBUTES.index("invalid")

# rel_xyxy on the 224-px canvas; cells are 1/7 wide.
BOXES = np.array(
    [
        [0.02, 0.02, 0.12, 0.12],  # cell (0, 0), the larger: owns it
        [0.05, 0.05, 0.09, 0.09],  # cell (0, 0) too, smaller: dropped
        [0.50, 0.50, 0.56, 0.56],  # cell (3, 3): owns it
        [0.80, 0.80, 0.85, 0.85],  # cell (5, 5), flagged invalid: ignored
        [0.30, 0.05, 0.305, 0.055],  # cell (0, 2), 1.1 px, under min_face_px 2: ignored
    ],
    np.float32,
)


def fields(boxes=BOXES, invalid=(0, 0, 0, 1, 0), width=448, height=224) -> dict:
    attributes = np.zeros((len(boxes), len(schema.ATTRIBUTES)), np.int64)
    attributes[:, INVALID] = invalid
    return {"boxes": boxes, "attributes": attributes, "original_width": width, "original_height": height}


def test_roles_follow_the_build_rule():
    roles = report_faces.roles(fields(), CONFIG)
    assert [report_faces.ROLES[r] for r in roles] == ["target", "dropped", "target", "ignored_invalid", "ignored_small"]
    nan = fields(np.array([[np.nan, 0, 0.1, 0.1]], np.float32), (0,))
    assert report_faces.roles(nan, CONFIG).tolist() == [report_faces.UNKNOWN]


def _faces(per_image=(5, 0)) -> report_faces.Faces:
    sides = (np.minimum(BOXES[:, 2] - BOXES[:, 0], BOXES[:, 3] - BOXES[:, 1]) * 224).astype(np.float32)
    f = fields()
    return report_faces.Faces(
        np.array(per_image, np.int64),
        sides,
        BOXES,
        report_faces.roles(f, CONFIG),
        report_faces.source_aspect(f, CONFIG),
    )


def test_numbers_of_hand_made_faces():
    n = report_numbers.numbers(_faces(), CONFIG)
    per_image = n["faces_per_image"]
    assert per_image["images_by_count"]["0"] == 1 and per_image["images_by_count"]["5"] == 1
    assert per_image["faces_by_count"]["5"] == 5 and sum(per_image["faces_by_count"].values()) == 5
    assert per_image["checker_histogram"] == {"0": 1, "1": 0, "2-5": 1, "6-20": 0, "21-100": 0, "101+": 0}
    assert per_image["more_faces_than_cells"]["images"] == 0

    cells = n["cells"]
    targets, dropped = np.array(cells["targets"]), np.array(cells["dropped"])
    assert targets[0, 0] == targets[3, 3] == 1 and targets.sum() == 2
    assert dropped[0, 0] == 1 and dropped.sum() == 1
    assert cells["dropped_share"][0][0] == 0.5 and cells["dropped_share"][3][3] == 0.0 and cells["dropped_share"][6][6] is None
    assert cells["most_dropped_cell"] == {"row": 0, "col": 0, "dropped": 1, "share": 0.5}

    centres = n["centres"]
    per_cell = np.array(centres["per_cell"])
    assert per_cell[0, 0] == 2 and per_cell[5, 5] == 1 and per_cell[0, 2] == 1 and per_cell.sum() == 5
    assert np.array(centres["heatmap"]).sum() == 5 and len(centres["heatmap"]) == 7 * 8

    # Shorter sides 22.4, 9.0, 13.4, 11.2 and 1.1 px.
    buckets = n["lost_by_size"]["buckets"]
    assert buckets["0-4"]["faces"] == buckets["0-4"]["ignored_small"] == 1
    assert {k: buckets["8-16"][k] for k in ("faces", "target", "dropped", "ignored_invalid")} == {
        "faces": 3,
        "target": 1,
        "dropped": 1,
        "ignored_invalid": 1,
    }
    assert buckets["16-32"]["target"] == buckets["16-32"]["faces"] == 1
    assert n["lost_by_size"]["totals"] == {
        "target": 2,
        "dropped": 1,
        "ignored_invalid": 1,
        "ignored_small": 1,
        "not_recomputed": 0,
    }

    # Stretched from 448 x 224: square on the canvas, twice as wide in the source.
    aspect = n["aspect_ratios"]
    assert aspect["stored"]["p50"] == pytest.approx(1.0) and aspect["source"]["p50"] == pytest.approx(2.0)
    assert sum(aspect["stored_counts"]) == sum(aspect["source_counts"]) == 5

    sizes = n["face_sizes"]
    assert sizes["cell_px"] == 32 and sizes["at_least_a_cell"]["faces"] == 0
    assert sizes["under_quarter_cell"]["faces"] == 1  # the 1.1 px face; 8.96 px is over 8
    assert sum(sizes["shorter_side_counts"]) == 5


def test_every_plot_draws_even_without_faces():
    for faces in (
        _faces(),
        report_faces.Faces(
            np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int8), np.zeros(0)
        ),
    ):
        n = report_numbers.numbers(faces, CONFIG)
        assert set(report_numbers.captions(n)) == set(report_numbers.PLOTS)
        figures = dataset_report.draw(n, "t", CONFIG)
        assert tuple(figures) == report_numbers.PLOTS
        for figure in figures.values():
            out = io.BytesIO()
            figure.savefig(out, format="png")
            with Image.open(out) as image:
                assert image.format == "PNG" and image.width >= 600


def test_a_split_changed_since_the_check_is_not_reported(good_build, tmp_path):
    data_dir = fx.copy_build(good_build, tmp_path)
    result = check_split.check_split(str(data_dir), fx.SPLIT, workers=1, leakage=False)
    assert result.report.ok
    file = fx.shard_files(data_dir)[0]

    renamed = []

    def rename(features):  # to a name of the same length: the record keeps its span
        kind, [name] = features[schema.FILENAME]
        features[schema.FILENAME] = (kind, [name.replace(b".jpg", b".JPG")])
        renamed.append(name.replace(b".jpg", b".JPG").decode())

    fx.edit_record(data_dir, file, 0, rename)
    with pytest.raises(dataset_report.ReportError, match=rf"{file}:0: holds '{renamed[0]}' with .* the split changed since"):
        dataset_report.write(result, str(tmp_path / "report"))
    (data_dir / file).unlink()
    with pytest.raises(dataset_report.ReportError, match=rf"{file}: cannot read it again"):
        dataset_report.write(result, str(tmp_path / "report"))


def test_a_non_finite_box_is_counted_but_not_placed():
    boxes = np.concatenate([BOXES, [[np.nan, 0.1, 0.2, 0.2]]]).astype(np.float32)
    faces = _faces()
    faces = report_faces.Faces(
        np.array([6, 0]),
        np.append(faces.sides, np.float32(np.nan)),
        boxes,
        np.append(faces.role, np.int8(report_faces.UNKNOWN)),
        np.append(faces.source_aspect, np.nan),
    )
    n = report_numbers.numbers(faces, CONFIG)
    assert n["faces_per_image"]["faces"] == 6 and np.sum(n["centres"]["per_cell"]) == 5
    assert n["lost_by_size"]["totals"]["not_recomputed"] == 1
    assert sum(b["faces"] for b in n["lost_by_size"]["buckets"].values()) == 5
