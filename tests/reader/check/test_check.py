"""The checker: a good build passes; copies broken one way each fail, naming the shard (and record).

Each fault test breaks a copy of one small Beam build (tests/support/sources.py's CHECKER_CASES) and runs the
checker through its command line entry point, reading the --json report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from pipeline import records
from pipeline.annotations import ImageAnnotation
from reader.check import cli as check
from reader.check import dataset_report
from reader.check import records as check_records
from reader.check import runner as check_runner
from reader.check import split as check_split
from reader.core import layout, progress, protowire, schema, targets, tfrecord
from reader.core.boxes import Placement
from reader.core.config import BuildConfig
from tests.support import build_edits as fx
from tests.support.fakes import Terminal


def run_check(data_dir, *flags: str, capsys) -> tuple[int, dict]:
    """Runs `facegrid-check --json` in this process (one worker); returns (exit status, report)."""
    capsys.readouterr()
    code = check.main([f"--data_dir={data_dir}", f"--split={fx.SPLIT}", "--json", "--workers=1", "--progress=never", *flags])
    out = capsys.readouterr().out
    return code, json.loads(out)


def failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "fail"}


def problems(report: dict, check_name: str) -> list[tuple[str, int | None, str]]:
    return [(p["file"], p["record"], p["message"]) for p in report["problems"] if p["check"] == check_name]


@pytest.fixture
def broken(tmp_path, good_build):
    return fx.copy_build(good_build, tmp_path)


# -- the good build -------------------------------------------------------------------------------


def test_good_build_passes(good_build, capsys):
    code, report = run_check(good_build, capsys=capsys)
    assert code == 0, report["problems"]
    assert report["ok"] and not report["problems"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses.pop("leakage") == "skip"  # no other split in the directory
    assert set(statuses.values()) == {"pass"}
    manifest = fx.read_manifest(good_build)
    counts = manifest["counts"]
    # The fixture exercises what must not be mistaken for damage.
    assert counts["dropped"] >= 2 and counts["ignored"] >= 2 and counts["degenerate"] == 1 and counts["errors"] == 1
    assert report["records"] == counts["records"] == 10
    ignore_cells = sum(r.values(schema.IGNORE).sum() for r in fx.records_of(good_build))
    assert ignore_cells >= 1
    stats = report["stats"]
    assert stats["targets"]["dropped"] == counts["dropped"] and stats["targets"]["ignored"] == counts["ignored"]
    assert stats["faces"]["total"] == counts["faces_stored"]
    assert stats["shards"]["count"] == fx.NUM_SHARDS


def test_summary_for_people(good_build, capsys):
    capsys.readouterr()
    assert check.main([f"--data_dir={good_build}", "--split=val", "--workers=1"]) == 0
    out = capsys.readouterr().out
    for name in ("manifest", "shard_set", "targets", "counts"):
        assert f"PASS  {name}" in out
    assert "faces per image" in out and "dropped by cell collisions" in out and "shards: 3" in out
    assert out.rstrip().endswith("PASS: every check passed")


# -- faults in the shard files --------------------------------------------------------------------


def test_flipped_byte(broken, capsys):
    file = fx.shard_files(broken)[1]
    spans = tfrecord.index_records(open(broken / file, "rb"), file)
    target = spans[-1]
    data = bytearray((broken / file).read_bytes())
    data[target.data_offset + target.length // 2] ^= 0x40
    (broken / file).write_bytes(bytes(data))
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"framing", "shard_files"}
    [(where, record, message)] = problems(report, "framing")
    assert (where, record) == (file, target.index) and "data checksum mismatch" in message
    assert [(f, r) for f, r, _ in problems(report, "shard_files")] == [(file, None)]


def test_truncated_shard(broken, capsys):
    file = fx.shard_files(broken)[0]
    records = fx.read_records(broken / file)
    data = (broken / file).read_bytes()
    (broken / file).write_bytes(data[:-10])
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert {"framing", "shard_files"} <= failed(report)
    [(where, record, message)] = problems(report, "framing")
    assert (where, record) == (file, len(records) - 1) and "truncated" in message
    assert any(f == file and "size" in m for f, _, m in problems(report, "shard_files"))


def test_missing_shard(broken, capsys):
    file = fx.shard_files(broken)[2]
    (broken / file).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert "shard_set" in failed(report)
    [(where, record, message)] = problems(report, "shard_set")
    assert (where, record) == (file, None) and message.startswith("missing")


OTHER_BUILD = "0123456789ab"


def _shard_set_note(report: dict) -> str:
    return next(c for c in report["checks"] if c["name"] == "shard_set")["note"]


def test_files_of_other_builds_are_noted_not_failed(broken, capsys):
    fx.relayout(broken, fx.build_id(broken) or "fedcba987654")  # the layout with build ids, whatever the pipeline wrote
    shard = (broken / fx.shard_files(broken)[0]).read_bytes()
    others = [
        layout.shard_name(fx.SPLIT, 0, 2, OTHER_BUILD),  # a build still running, or one that crashed
        layout.errors_name(fx.SPLIT, OTHER_BUILD),
        layout.lease_name(fx.SPLIT, OTHER_BUILD),
        layout.temp_name(fx.SPLIT, OTHER_BUILD, layout.shard_name(fx.SPLIT, 1, 2, OTHER_BUILD), "attempt1"),
        layout.shard_name(fx.SPLIT, 0, 5),  # a build before build ids
        layout.errors_name(fx.SPLIT),
    ]
    for name in others:
        (broken / name).write_bytes(shard)
    (broken / "train.manifest.json.bak").write_text("{}")  # not this split's: ignored
    code, report = run_check(broken, capsys=capsys)
    assert code == 0, report["problems"]
    note = _shard_set_note(report)
    assert note.startswith(f"{len(others)} files of other builds, not part of this build")
    assert "leftovers of a crashed build or a build still running; the next build that commits removes them" in note


def test_a_file_of_this_build_that_the_manifest_does_not_name_fails(broken, capsys):
    build = fx.build_id(broken) or "fedcba987654"
    fx.relayout(broken, build)
    stray = layout.shard_name(fx.SPLIT, 0, 2, build)
    (broken / stray).write_bytes((broken / fx.shard_files(broken)[0]).read_bytes())
    (broken / layout.lease_name(fx.SPLIT, build)).write_text("{}")  # a lease is never part of a build: noted
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"shard_set"}
    [(where, record, message)] = problems(report, "shard_set")
    assert (where, record) == (stray, None)
    assert f"a shard of a build of 2 shards (this build has {fx.NUM_SHARDS}) that carries this build's id {build}" in message
    assert _shard_set_note(report).startswith("1 file of other builds")


def test_a_build_before_build_ids_passes_and_its_stale_files_fail(broken, capsys):
    fx.relayout(broken, None)
    code, report = run_check(broken, capsys=capsys)
    assert code == 0, report["problems"]
    assert {"build", "errors_file"}.isdisjoint(fx.read_manifest(broken))
    # Without build ids, an old shard cannot be told from this build's: stale, as it always was.
    stale = layout.shard_name(fx.SPLIT, 0, 2)
    (broken / stale).write_bytes((broken / fx.shard_files(broken)[0]).read_bytes())
    temp = f".{fx.SPLIT}-tmp-0123456789ab-{layout.shard_name(fx.SPLIT, 1, 3)}"
    (broken / temp).write_bytes(b"partial")
    newer = layout.shard_name(fx.SPLIT, 0, 3, OTHER_BUILD)  # a build with ids, not committed
    (broken / newer).write_bytes(b"partial")
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"shard_set"}
    [(where, _, message)] = problems(report, "shard_set")
    assert where == stale and "a shard of a build of 2 shards (this build has 3)" in message
    assert _shard_set_note(report).startswith("2 files of other builds") and temp in _shard_set_note(report)


def test_manifest_names_that_break_the_layout(broken, capsys):
    build = fx.build_id(broken) or "fedcba987654"
    fx.relayout(broken, build)
    manifest = fx.read_manifest(broken)
    legacy = layout.shard_name(fx.SPLIT, 1, fx.NUM_SHARDS)  # the shard without this build's id
    (broken / manifest["shards"][1]["file"]).rename(broken / legacy)
    want = manifest["shards"][1]["file"]
    manifest["shards"][1]["file"] = legacy
    manifest["build"] = "not-an-id"
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    messages = sorted(m for _, _, m in problems(report, "manifest"))
    assert messages[0] == "build: expected 12 lowercase hex digits, found 'not-an-id'"
    manifest["build"] = build
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}  # the records are still checked, and pass
    assert [m for _, _, m in problems(report, "manifest")] == [f"shards[1]: expected file {want!r}, found {legacy!r}"]


def test_a_manifest_naming_a_file_outside_the_directory_is_refused(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["shards"][0]["file"] = "../outside.tfrecord"
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    [(_, _, message)] = problems(report, "manifest")
    assert "shards[0].file: expected a file name in the data directory, found '../outside.tfrecord'" in message


# -- faults inside records, checksums rewritten to match ------------------------------------------


def _move_target(features):
    """Moves the first target cell's values to the first empty cell."""
    grid = np.asarray(features[schema.GRID][1]).reshape(7, 7, 5).copy()
    ignore = np.asarray(features[schema.IGNORE][1]).reshape(7, 7)
    full = np.argwhere(grid[..., targets.OBJ] == 1)[0]
    empty = np.argwhere((grid[..., targets.OBJ] == 0) & (ignore == 0))[0]
    grid[tuple(empty)] = grid[tuple(full)]
    grid[tuple(full)] = 0
    features[schema.GRID] = ("float", grid.ravel())


def test_target_moved_to_another_cell(broken, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, _move_target)
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


# -- faults in the manifest and errors.jsonl ------------------------------------------------------


def test_manifest_count_off_by_one(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["counts"]["dropped"] += 1
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"counts"}
    messages = problems(report, "counts")
    assert {where for where, _, _ in messages} == {layout.manifest_name(fx.SPLIT)}
    assert any(m.startswith("faces_stored") for _, _, m in messages)  # the law no longer holds
    assert any("counts.dropped" in m and "recomputed from the records" in m for _, _, m in messages)


def test_shard_record_count_off_by_one(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["shards"][1]["records"] += 1
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"record_counts", "counts"}
    [(where, record, message)] = problems(report, "record_counts")
    assert where == manifest["shards"][1]["file"] and record is None
    assert f"the manifest says {manifest['shards'][1]['records']} records" in message


def test_errors_file_out_of_step(broken, capsys):
    (broken / fx.errors_file(broken)).write_text("")
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"counts"}
    assert any("counts.errors 1" in m for _, _, m in problems(report, "counts"))


def test_manifest_config_unusable(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["config"]["grid_size"] = "seven"
    del manifest["config"]["resize"]
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"manifest"}  # the records are still checked, with the default grid
    messages = sorted(m for _, _, m in problems(report, "manifest"))
    assert messages == ["config.grid_size: expected an integer in [1, input_size], found 'seven'",
                        "config.resize: missing (expected one of ('stretch', 'letterbox'))"]


def test_missing_manifest(broken, capsys):
    fx.manifest_path(broken).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"manifest"}
    assert {c["status"] for c in report["checks"] if c["name"] != "manifest"} == {"skip"}


# -- between splits -------------------------------------------------------------------------------


def _write_train(data_dir: pathlib.Path, records: list[bytes]) -> str:
    """A one-shard train split holding `records`, with a manifest (not a faithful build); returns
    the shard's name."""
    file = layout.shard_name("train", 0, 1, fx.build_id(data_dir))
    fx.write_records(data_dir / file, records)
    manifest = fx.read_manifest(data_dir)
    manifest.update(split="train", shards=[{"file": file, "records": len(records), "bytes": 0, "sha256": ""}])
    fx.write_manifest(data_dir, manifest, "train")
    fx.refresh_manifest(data_dir, "train")
    return file


def test_leakage_between_splits(broken, capsys):
    leaked = fx.find(broken, lambda r: fx.faces(r) >= 1)
    data = fx.read_records(broken / leaked.file)[leaked.index]
    features = protowire.decode_example(data)
    features[schema.FILENAME] = ("bytes", [b"train/renamed_copy.jpg"])  # same image, another name
    train_file = _write_train(broken, [protowire.encode_example(features)])
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"leakage"}
    [(where, record, message)] = problems(report, "leakage")
    assert (where, record) == (leaked.file, leaked.index)
    assert f"{train_file}:0" in message and "train/renamed_copy.jpg" in message
    # A shard of the other split that is gone cannot be looked into: said, not passed over.
    (broken / train_file).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert "1 of 1 shards of train missing: not compared" in next(c for c in report["checks"] if c["name"] == "leakage")["note"]
    # and --noleakage turns the check off
    code, report = run_check(broken, "--noleakage", capsys=capsys)
    assert code == 0 and next(c for c in report["checks"] if c["name"] == "leakage")["status"] == "skip"


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--split=val"],
        ["--data_dir=/nonexistent/facegrid", "--split=val"],
        ["--data_dir=.", "--split=validation"],
        ["--data_dir=.", "--split=val", "--bogus"],
        ["--data_dir=.", "--split=val", "stray"],
        ["--data_dir=.", "--split=val", "--sheet=/nonexistent/dir/sheet.png"],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    assert check.main(argv) == 2
    assert "facegrid-check:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert check.main(["--help"]) == 0
    assert "--sheet" in capsys.readouterr().out


def test_contact_sheet(broken, tmp_path, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, _move_target)
    sheet = tmp_path / "sheet.png"
    code, report = run_check(broken, f"--sheet={sheet}", "--sheet_samples=6", capsys=capsys)
    assert code == 1 and report["sheet"] == str(sheet)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width >= 4 * 448 and image.height >= 2 * 448
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == (255, 90, 90)).all(axis=-1).any()  # the failing record's caption, in red


def test_report_writes_every_plot_and_the_numbers_of_the_check(good_build, tmp_path, capsys):
    out = tmp_path / "report"
    code, report = run_check(good_build, f"--report={out}", capsys=capsys)
    assert code == 0 and report["report"] == str(out)
    for name in dataset_report.PLOTS:
        path = out / f"{name}.png"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and 600 <= image.width <= 2000 and 400 <= image.height <= 1200, image.size
            colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
        assert 10_000 < path.stat().st_size < 1_000_000 and colours > 20  # drawn, not blank
    document = json.loads((out / "report.json").read_text())
    stats, plots = report["stats"], document["plots"]
    assert document["checker_stats"] == stats and document["records"] == report["records"] == 10 and document["ok"]

    faces = plots["faces_per_image"]
    assert faces["checker_histogram"] == stats["faces"]["histogram"]
    assert (faces["faces"], faces["median"], faces["mean"], faces["max"]) == \
        (stats["faces"]["total"], stats["faces"]["median"], stats["faces"]["mean"], stats["faces"]["max"])
    assert sum(faces["images_by_count"].values()) == stats["records"] and sum(faces["faces_by_count"].values()) == faces["faces"]
    sides = plots["face_sizes"]["shorter_side"]
    assert sides == {**{q: stats["face_sides"][q] for q in ("p10", "p50", "p90")}, "histogram": stats["face_sides"]["histogram"]}
    lost = plots["lost_by_size"]
    assert {label: b["faces"] for label, b in lost["buckets"].items()} == stats["face_sides"]["histogram"]
    totals, targets = lost["totals"], stats["targets"]
    assert (totals["target"], totals["dropped"], totals["ignored_invalid"] + totals["ignored_small"]) == \
        (targets["targets"], targets["dropped"], targets["ignored"])
    cells = plots["cells"]
    assert (cells["targets_total"], cells["dropped_total"]) == (targets["targets"], targets["dropped"])
    assert np.sum(cells["targets"]) == targets["targets"] and np.sum(cells["dropped"]) == targets["dropped"]
    centres = plots["centres"]
    assert np.sum(centres["heatmap"]) == np.sum(centres["per_cell"]) == centres["faces"] == stats["faces"]["total"]

    index = (out / "report.html").read_text()
    for name in dataset_report.PLOTS:
        # The page holds its plots (it travels alone): each the very PNG written beside it.
        png = base64.b64encode((out / f"{name}.png").read_bytes()).decode()
        assert f'src="data:image/png;base64,{png}"' in index and html.escape(plots[name]["caption"]) in index
    assert ".png\"" not in index
    assert f"{targets['dropped']} dropped by cell collisions" in index


def test_report_is_written_for_a_failing_check_and_refused_for_a_file(broken, tmp_path, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, _move_target)
    code, report = run_check(broken, f"--report={tmp_path / 'report'}", capsys=capsys)
    assert code == 1 and not json.loads((tmp_path / "report" / "report.json").read_text())["ok"]
    (tmp_path / "file").write_text("")
    assert check.main([f"--data_dir={broken}", "--split=val", f"--report={tmp_path / 'file'}"]) == 2
    assert "--report" in capsys.readouterr().err
    assert check.main([f"--data_dir={broken}", "--split=val", "--report=/nonexistent/dir/report"]) == 2


def test_parallel_workers_find_the_same(broken, monkeypatch):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, _move_target)
    inline = check_split.check_split(str(broken), fx.SPLIT, workers=1).report
    monkeypatch.setattr(check_runner, "INLINE_BELOW", 0)
    seen = []
    parallel = check_split.check_split(str(broken), fx.SPLIT, workers=2, progress=lambda d, t: seen.append((d, t))).report
    assert parallel.problems == inline.problems and len(parallel.problems) == 1
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)


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
    assert found == [("schema", "key 'target/grid': expected 320 values for the manifest's grid_size 8, found 245 "
                                "(a 7x7 grid): the manifest disagrees with this record")]


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


def test_progress_bar():
    stream = Terminal()
    bar = progress.Progress("checking val", unit="records", stream=stream, width=10, redraw=0)
    bar(0, 40)
    bar(20, 40)
    bar(40, 40)
    lines = stream.getvalue().split("\r")[1:]
    assert lines[1].startswith("[#####.....] checking val: 20/40 records (50%)")
    assert lines[2].startswith("[##########] checking val: 40/40 records (100%)") and lines[2].endswith("\n")


def test_progress_never_writes_no_progress(good_build, capsys):
    """--progress=never keeps stderr free of progress lines (a bar was once drawn whatever the
    flag); off a terminal (logs) the default writes lines, as the build does: at the start,
    every 15 s and at the end, on stderr, never in the --json output."""
    capsys.readouterr()
    code = check.main([f"--data_dir={good_build}", f"--split={fx.SPLIT}", "--json", "--workers=1", "--progress=never"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["ok"] is True and "checking" not in captured.err, captured.err
    for flag in ("--progress=auto", "--progress=always"):
        code = check.main([f"--data_dir={good_build}", f"--split={fx.SPLIT}", "--json", "--workers=1", flag])
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.startswith("checking val: ")]
        assert code == 0 and json.loads(captured.out)["ok"] is True and "\r" not in captured.err
        assert re.fullmatch(r"checking val: 0/\d+ records read \(0%\)", lines[0]) and lines[-1].endswith(" in all"), lines


def test_manifest_config_not_an_object(broken, capsys):
    """A config block that is not a JSON object is six missing settings, not a crash."""
    manifest = fx.read_manifest(broken)
    manifest["config"] = []
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    messages = [m for _, _, m in problems(report, "manifest")]
    assert len(messages) == 6 and all(m.startswith("config.") and ": missing (expected" in m for m in messages), messages
