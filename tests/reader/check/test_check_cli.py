"""The checker's command line: usage mistakes, the contact sheet, the report, parallel workers, progress."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pytest
from PIL import Image

from reader.check import cli as check
from reader.check import runner as check_runner
from reader.check import split as check_split
from reader.check.report import dataset as dataset_report
from reader.core import progress, schema
from tests.support import build_edits as fx
from tests.support.checker import run_check
from tests.support.fakes import Terminal

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
    fx.edit_record(broken, victim.file, victim.index, fx.move_target)
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
    assert (faces["faces"], faces["median"], faces["mean"], faces["max"]) == (
        stats["faces"]["total"],
        stats["faces"]["median"],
        stats["faces"]["mean"],
        stats["faces"]["max"],
    )
    assert sum(faces["images_by_count"].values()) == stats["records"] and sum(faces["faces_by_count"].values()) == faces["faces"]
    sides = plots["face_sizes"]["shorter_side"]
    assert sides == {**{q: stats["face_sides"][q] for q in ("p10", "p50", "p90")}, "histogram": stats["face_sides"]["histogram"]}
    lost = plots["lost_by_size"]
    assert {label: b["faces"] for label, b in lost["buckets"].items()} == stats["face_sides"]["histogram"]
    totals, targets = lost["totals"], stats["targets"]
    assert (totals["target"], totals["dropped"], totals["ignored_invalid"] + totals["ignored_small"]) == (
        targets["targets"],
        targets["dropped"],
        targets["ignored"],
    )
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
    assert '.png"' not in index
    assert f"{targets['dropped']} dropped by cell collisions" in index


def test_report_is_written_for_a_failing_check_and_refused_for_a_file(broken, tmp_path, capsys):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, fx.move_target)
    code, report = run_check(broken, f"--report={tmp_path / 'report'}", capsys=capsys)
    assert code == 1 and not json.loads((tmp_path / "report" / "report.json").read_text())["ok"]
    (tmp_path / "file").write_text("")
    assert check.main([f"--data_dir={broken}", "--split=val", f"--report={tmp_path / 'file'}"]) == 2
    assert "--report" in capsys.readouterr().err
    assert check.main([f"--data_dir={broken}", "--split=val", "--report=/nonexistent/dir/report"]) == 2


def test_parallel_workers_find_the_same(broken, monkeypatch):
    victim = fx.find(broken, lambda r: r.values(schema.GRID).reshape(7, 7, 5)[..., 4].sum() >= 2)
    fx.edit_record(broken, victim.file, victim.index, fx.move_target)
    inline = check_split.check_split(str(broken), fx.SPLIT, workers=1).report
    monkeypatch.setattr(check_runner, "INLINE_BELOW", 0)
    seen = []
    parallel = check_split.check_split(str(broken), fx.SPLIT, workers=2, progress=lambda d, t: seen.append((d, t))).report
    assert parallel.problems == inline.problems and len(parallel.problems) == 1
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)


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
