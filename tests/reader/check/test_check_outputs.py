"""The checker writes what its file names say: `--report=NAME.html` one page holding its plots
(no directory of that name), `--sheet=NAME.jpg` a JPEG; a sheet name of another kind is refused."""

from __future__ import annotations

import base64
import re

from PIL import Image

from reader.check import cli as check
from reader.check.report import dataset as dataset_report
from tests.support.checker import run_check


def test_report_named_html_is_one_page_with_its_plots_inside(good_build, tmp_path, capsys):
    page = tmp_path / "x.html"
    code, report = run_check(good_build, f"--report={page}", capsys=capsys)
    assert code == 0 and page.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["x.html"]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert len(images) == len(dataset_report.PLOTS)
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)


def test_sheet_named_jpg_is_a_jpeg_and_png_a_png(good_build, tmp_path, capsys):
    for name, kind in (("sheet.jpg", "JPEG"), ("sheet.JPEG", "JPEG"), ("sheet.png", "PNG")):
        code, report = run_check(good_build, f"--sheet={tmp_path / name}", "--sheet_samples=4", capsys=capsys)
        assert code == 0
        with Image.open(tmp_path / name) as image:
            assert image.format == kind


def test_a_sheet_of_another_kind_is_refused(good_build, tmp_path, capsys):
    assert check.main([f"--data_dir={good_build}", "--split=val", f"--sheet={tmp_path / 'sheet.gif'}"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"facegrid-check: --sheet={tmp_path / 'sheet.gif'}: expected a file name ending in .png, .jpg, .jpeg"
    )
    assert list(tmp_path.iterdir()) == []
