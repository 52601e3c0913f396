"""The dataset report of `facegrid-check --report=DIR`: a checked split in pictures, for people who
would rather look than read (ultralytics' labels.jpg, but for the grid).

    DIR/report.html          the plots (inside the page: it travels alone), each with one sentence
                             saying what it shows on this split; `--report=NAME.html` writes it alone
    DIR/report.json          the numbers behind every plot, and the checker's statistics
    DIR/faces_per_image.png  images, and the faces they hold, by their number of faces
    DIR/face_sizes.png       face width, height and shorter side, in pixels of the stored image
    DIR/aspect_ratios.png    face width / height, on the stored canvas and in the source image
    DIR/centres.png          where face centres fall on the canvas, under the S x S grid
    DIR/cells.png            per cell: faces that own it (targets), faces that lost it (dropped)
    DIR/lost_by_size.png     per face size: the share kept as targets, dropped, ignored

Four modules make it, built from the check rather than from a second check:
    faces     every stored face's box and role, read again from the checked records
    numbers   the numbers behind each plot and its caption (pure NumPy, JSON-ready)
    plots     the drawing: one figure per plot (matplotlib, imported only when drawn)
    dataset   this module: the files (`write`, `write_html`)
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

from reader.check.report import faces as report_faces
from reader.check.report import numbers as report_numbers
from reader.check.report.faces import ReportError
from reader.check.report.numbers import PLOTS
from reader.check.report.plots import draw
from reader.check.split import SplitCheck

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}figcaption{margin-top:.4em}"
)


def write(result: SplitCheck, directory: str) -> dict:
    """Writes the report of a checked split into `directory` (created if need be; local).

    Returns what report.json holds. Raises ReportError when the check has no statistics (no
    readable manifest) or a record changed since it was checked, OSError when the directory
    cannot be written.
    """
    document, images = _render(result)
    os.makedirs(directory, exist_ok=True)
    for name, png in images.items():
        with open(os.path.join(directory, f"{name}.png"), "wb") as f:
            f.write(png)
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    with open(os.path.join(directory, "report.html"), "w", encoding="utf-8") as f:
        f.write(_html(document, images))
    return document


def write_html(result: SplitCheck, path: str) -> dict:
    """Writes report.html alone, plots and numbers inside it, to the file `path` (what
    `--report=NAME.html` asks for); returns what report.json would hold. Raises as `write`."""
    document, images = _render(result)
    with open(path, "w", encoding="utf-8") as f:
        f.write(_html(document, images))
    return document


def _render(result: SplitCheck) -> tuple[dict, dict[str, bytes]]:
    """(report.json's document, {plot name: its PNG bytes})."""
    if result.report.stats is None:
        raise ReportError("nothing to report: the split has no readable manifest")
    n = report_numbers.numbers(report_faces.collect(result), result.config)
    images = {}
    for name, figure in draw(n, result.report.split, result.config).items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        images[name] = buffer.getvalue()
    return _document(result, n), images


def _document(result: SplitCheck, n: dict) -> dict:
    """What report.json holds: the check's verdict, config and statistics, and per plot its
    file, caption and numbers."""
    report = result.report
    sentences = report_numbers.captions(n)
    return {
        "split": report.split,
        "data_dir": report.data_dir,
        "ok": report.ok,
        "records": report.records,
        # The settings the numbers depend on, as report.json has always listed them.
        "config": {
            key: getattr(result.config, key) for key in ("input_size", "grid_size", "min_face_px", "image_format", "resize")
        },
        "checker_stats": report.stats.as_json(),
        "plots": {name: {"file": f"{name}.png", "caption": sentences[name], **n[name]} for name in PLOTS},
    }


def _html(document: dict, images: dict[str, bytes]) -> str:
    """report.html of report.json's `document`: a head line of the check, then each plot (its
    PNG inside the page, so that the page travels alone, by mail too) with its caption."""
    stats = document["checker_stats"]
    t = stats["targets"]
    verdict = "every check passed" if document["ok"] else "some checks FAILED (see the checker's output)"
    head = (
        f"{document['records']} records checked, {verdict}; {t['faces_stored']} faces stored: {t['targets']} targets "
        f"({t['targets_share']:.1%}), {t['dropped']} dropped by cell collisions ({t['dropped_share']:.1%}), "
        f"{t['ignored']} ignored ({t['ignored_share']:.1%})."
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>facegrid dataset report: {html.escape(document['split'])}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>Split {html.escape(document['split'])} in {html.escape(document['data_dir'])}</h1>",
        f"<p>{html.escape(head)} The numbers behind every plot are in report.json (beside this page when the report was written to a directory).</p>",
    ]
    for name in PLOTS:
        plot = document["plots"][name]
        parts += [
            f'<figure id="{name}"><img src="data:image/png;base64,{base64.b64encode(images[name]).decode()}" alt="{name}">',
            f"<figcaption><b>{name}</b>: {html.escape(plot['caption'])}</figcaption></figure>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)
