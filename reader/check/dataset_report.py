"""The dataset report of `facegrid-check --report=DIR`: a checked split in pictures, for people who
would rather look than read (ultralytics' labels.jpg, but for the grid).

    DIR/report.html          the plots, each with one sentence saying what it shows on this split
    DIR/report.json          the numbers behind every plot, and the checker's statistics
    DIR/faces_per_image.png  images, and the faces they hold, by their number of faces
    DIR/face_sizes.png       face width, height and shorter side, in pixels of the stored image
    DIR/aspect_ratios.png    face width / height, on the stored canvas and in the source image
    DIR/centres.png          where face centres fall on the canvas, under the S x S grid
    DIR/cells.png            per cell: faces that own it (targets), faces that lost it (dropped)
    DIR/lost_by_size.png     per face size: the share kept as targets, dropped, ignored

Built from the check, not from a second check: faces per image and face sizes are the records'
facts (the very numbers of the checker's statistics); each face's box and role (owner of its
cell, dropped, ignored) come from reading every checked record once more, without decoding its
image (about a second for the 3,226 records of WIDER val), because the facts hold counts, not
boxes. A record that changed since it was checked stops the report (ReportError).

Plots are drawn with matplotlib's object-oriented API on its Agg canvas (no pyplot, no global
backend), imported only when a report is drawn.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import os
from collections.abc import Sequence

import numpy as np

from reader.check import records as check_records
from reader.check import stats as check_stats
from reader.check.split import SplitCheck
from reader.core import boxes as box_formats
from reader.core import manifest, schema, targets, tfrecord

# A face's role in the targets, as the build's rule gives it from the stored boxes.
OWNER, DROPPED, INVALID, SMALL, UNKNOWN = range(5)
ROLES = ("target", "dropped", "ignored_invalid", "ignored_small", "not_recomputed")
ROLE_MEANING = {
    "target": "owns its cell: a target",
    "dropped": "lost its cell to a larger face",
    "ignored_invalid": "ignored: flagged invalid",
    "ignored_small": "ignored: under min_face_px",
    "not_recomputed": "targets not recomputable (non-finite box)",
}
# The contact sheet's colours: green targets, magenta dropped, orange ignored.
ROLE_COLOURS = ("#00c85a", "#ff00ff", "#ff8c00", "#9e9e9e", "#444444")

# Finer than the checker's bins (FACES_PER_IMAGE_BINS), which they refine: each checker bin is a
# union of these.
FACES_PER_IMAGE_EDGES = (0, 1, 2, 3, 4, 5, 6, 11, 21, 50, 101, 201, 501)  # 50: more than 7 x 7
SIDE_EDGES_PX = 2.0 ** np.arange(-2, 8.01, 0.25)  # quarter octaves, 0.25 px to 256 px
ASPECT_EDGES = 2.0 ** np.arange(-2, 2.01, 0.125)  # eighth octaves, w/h from 1/4 to 4
HEATMAP_BINS_PER_CELL = 8
DPI = 110

PLOTS = ("faces_per_image", "face_sizes", "aspect_ratios", "centres", "cells", "lost_by_size")


class ReportError(RuntimeError):
    """The report cannot be drawn from the check: a record changed or vanished since."""


@dataclasses.dataclass(frozen=True)
class Faces:
    """Every face stored in a checked split's readable records, in record order.

    per_image: int64 [R], faces per record. sides: float32 [F], shorter side in pixels of the
    stored image (the checker's face_sides). boxes: float32 [F, 4] rel_xyxy; role: int8 [F], an
    index into ROLES; source_aspect: float64 [F], width / height in source pixels (NaN where the
    placement is unknown).
    """

    per_image: np.ndarray
    sides: np.ndarray
    boxes: np.ndarray
    role: np.ndarray
    source_aspect: np.ndarray

    def __post_init__(self):
        count = int(self.per_image.sum())
        for name in ("sides", "boxes", "role", "source_aspect"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {count} faces")


def roles(fields: dict, config: check_records.RecordConfig) -> np.ndarray:
    """Each stored face's role (int8 [N], indexes into ROLES) in one parsed record."""
    recomputed = check_records.recompute_targets(fields, config)
    count = len(fields["boxes"])
    if recomputed is None:
        return np.full(count, UNKNOWN, np.int8)
    invalid = fields["attributes"][:, schema.ATTRIBUTES.index("invalid")] != 0
    role = np.where(recomputed.is_target, DROPPED, np.where(invalid, INVALID, SMALL)).astype(np.int8)
    role[recomputed.owners[recomputed.owners >= 0]] = OWNER
    return role


def _source_aspect(fields: dict, config: check_records.RecordConfig) -> np.ndarray:
    rel = fields["boxes"].astype(np.float64)
    width, height = rel[:, 2] - rel[:, 0], rel[:, 3] - rel[:, 1]
    if min(fields["original_width"], fields["original_height"]) < 1:
        return np.full(len(rel), np.nan)
    placement = box_formats.Placement.fit(fields["original_width"], fields["original_height"], config.input_size, config.resize)
    # Canvas pixels per source pixel, across and down.
    sx, sy = placement.scaled_width / placement.source_width, placement.scaled_height / placement.source_height
    with np.errstate(divide="ignore", invalid="ignore"):
        return (width / sx) / (height / sy)


def collect(result: SplitCheck) -> Faces:
    """Reads every readable record of the check again (no image decoding) for its boxes and the
    roles the build's rule gives them. Raises ReportError when a record is gone or differs from
    what was checked (a build committed in between)."""
    config = result.config
    readable = [r for r in result.records if r.facts is not None]
    spans = {file: {span.index: span for span in index.spans} for file, index in result.indexes.items()}
    boxes, role, aspect = [], [], []
    for file, group in itertools.groupby(readable, key=lambda r: r.file):
        try:
            with manifest.open_binary(result.paths[file]) as f:
                for record in group:
                    data = tfrecord.read_record(f, file, spans[file][record.index])
                    fields = check_records.parse(data, config)
                    if fields["filename"] != record.facts.filename or len(fields["boxes"]) != record.facts.faces:
                        raise ReportError(
                            f"{file}:{record.index}: holds {fields['filename']!r} with {len(fields['boxes'])} faces, "
                            f"checked as {record.facts.filename!r} with {record.facts.faces}: the split changed since"
                        )
                    boxes.append(fields["boxes"])
                    role.append(roles(fields, config))
                    aspect.append(_source_aspect(fields, config))
        except (OSError, ValueError) as e:  # gone, or damaged since (CorruptRecordError, SchemaError)
            raise ReportError(f"{file}: cannot read it again for the report: {e}") from None
    per_image = np.array([r.facts.faces for r in readable], np.int64)
    sides = np.concatenate([r.facts.face_sides for r in readable]) if readable else np.zeros(0, np.float32)
    return Faces(
        per_image,
        sides,
        np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        np.concatenate(role) if role else np.zeros(0, np.int8),
        np.concatenate(aspect) if aspect else np.zeros(0),
    )


# -- the numbers ----------------------------------------------------------------------------------


def _share(part, whole) -> float:
    return round(float(part) / float(whole), 4) if whole else 0.0


def _quantiles(values: np.ndarray, digits: int) -> dict:
    """p10, p50, p90 of the finite values, rounded (sizes to 0.1 px as the checker's statistics)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p10": 0.0, "p50": 0.0, "p90": 0.0}
    return {f"p{q}": round(float(np.percentile(values, q)), digits) for q in (10, 50, 90)}


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts over `edges`, values beyond either end counted in the first or the last bin."""
    values = values[np.isfinite(values)]
    clipped = np.clip(values, edges[0], np.nextafter(edges[-1], 0))
    return np.histogram(clipped, bins=edges)[0].astype(int).tolist()


def numbers(faces: Faces, config: check_records.RecordConfig) -> dict:
    """The numbers behind every plot, plain Python values ready for JSON (keys: PLOTS)."""
    size, s = config.input_size, config.grid_size
    cell_px = size / s
    per_image, sides = faces.per_image, faces.sides
    total = int(per_image.sum())
    rel = faces.boxes.astype(np.float64)
    width, height = (rel[:, 2] - rel[:, 0]) * size, (rel[:, 3] - rel[:, 1]) * size
    crowded = per_image > s * s

    by_count = check_stats.bin_counts(per_image, FACES_PER_IMAGE_EDGES, integer=True)
    faces_by_count = check_stats.bin_counts(per_image, FACES_PER_IMAGE_EDGES, integer=True, weights=per_image)
    faces_per_image = {
        "images": len(per_image),
        "faces": total,
        "mean": round(float(per_image.mean()), 2) if len(per_image) else 0.0,
        "median": float(np.median(per_image)) if len(per_image) else 0.0,
        "max": int(per_image.max()) if len(per_image) else 0,
        "images_by_count": by_count,
        "faces_by_count": faces_by_count,
        "checker_histogram": check_stats.bin_counts(per_image, check_stats.FACES_PER_IMAGE_BINS, integer=True),
        "more_faces_than_cells": {"cells": s * s, "images": int(crowded.sum()), "faces": int(per_image[crowded].sum()),
                                  "images_share": _share(crowded.sum(), len(per_image)),
                                  "faces_share": _share(per_image[crowded].sum(), total)},
    }

    face_sizes = {
        "unit": "px of the stored image",
        "cell_px": cell_px,
        "shorter_side": {**_quantiles(sides, 1), "histogram": check_stats.bin_counts(sides, check_stats.FACE_SIDE_BINS, integer=False)},
        "width": _quantiles(width, 1),
        "height": _quantiles(height, 1),
        "edges_px": [round(float(e), 4) for e in SIDE_EDGES_PX],
        "shorter_side_counts": _histogram(sides.astype(np.float64), SIDE_EDGES_PX),
        "width_counts": _histogram(width, SIDE_EDGES_PX),
        "height_counts": _histogram(height, SIDE_EDGES_PX),
        "under_quarter_cell": {"px": cell_px / 4, "faces": int((sides < cell_px / 4).sum()), "share": _share((sides < cell_px / 4).sum(), total)},
        "at_least_a_cell": {"px": cell_px, "faces": int((sides >= cell_px).sum()), "share": _share((sides >= cell_px).sum(), total)},
    }

    with np.errstate(divide="ignore", invalid="ignore"):
        stored_aspect = width / height
    aspect_ratios = {
        "definition": "width / height of the face box",
        "resize": config.resize,
        "stored": _quantiles(stored_aspect, 3),
        "source": _quantiles(faces.source_aspect, 3),
        "edges": [round(float(e), 4) for e in ASPECT_EDGES],
        "stored_counts": _histogram(stored_aspect, ASPECT_EDGES),
        "source_counts": _histogram(faces.source_aspect, ASPECT_EDGES),
    }

    # A non-finite box (the ranges check fails its record) has no place on the canvas.
    placed = np.isfinite(rel).all(axis=1)
    row, col = targets.cells(np.where(placed[:, None], rel, 0.0), s)
    bins = s * HEATMAP_BINS_PER_CELL
    cx, cy = (rel[placed, 0] + rel[placed, 2]) / 2 * size, (rel[placed, 1] + rel[placed, 3]) / 2 * size
    heat = np.histogram2d(np.clip(cy, 0, size), np.clip(cx, 0, size), bins=bins, range=[[0, size], [0, size]])[0]
    per_cell = np.zeros((s, s), np.int64)
    np.add.at(per_cell, (row[placed], col[placed]), 1)
    busiest = np.unravel_index(np.argmax(per_cell), per_cell.shape) if total else (0, 0)
    centres = {
        "faces": total,
        "bin_px": size / bins,
        "heatmap": heat.astype(int).tolist(),  # [row][col] of bin_px x bin_px squares
        "per_cell": per_cell.tolist(),
        "busiest_cell": {"row": int(busiest[0]), "col": int(busiest[1]), "faces": int(per_cell[busiest]),
                         "share": _share(per_cell[busiest], total)},
        "emptiest_cell_faces": int(per_cell.min()),
    }

    def per_cell_of(which: int) -> np.ndarray:
        grid = np.zeros((s, s), np.int64)
        mask = (faces.role == which) & placed
        np.add.at(grid, (row[mask], col[mask]), 1)
        return grid

    owned, lost = per_cell_of(OWNER), per_cell_of(DROPPED)
    with np.errstate(divide="ignore", invalid="ignore"):
        lost_share = np.where(owned + lost > 0, lost / np.maximum(owned + lost, 1), np.nan)
    most_lost = np.unravel_index(np.argmax(lost), lost.shape)
    cells = {
        "targets": owned.tolist(),
        "dropped": lost.tolist(),
        # dropped / (targets + dropped) per cell; None where no target face is centred
        "dropped_share": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in lost_share],
        "targets_total": int(owned.sum()),
        "dropped_total": int(lost.sum()),
        "dropped_share_total": _share(lost.sum(), owned.sum() + lost.sum()),
        "most_dropped_cell": {"row": int(most_lost[0]), "col": int(most_lost[1]), "dropped": int(lost[most_lost]),
                              "share": round(float(np.nan_to_num(lost_share[most_lost])), 4)},
    }

    buckets = {}
    labels = list(check_stats.bin_counts(sides, check_stats.FACE_SIDE_BINS, integer=False))
    # The checker's bins: [low, high), the last open; a NaN side is in none, as in its histogram.
    which = np.where(np.isfinite(sides), np.digitize(sides, check_stats.FACE_SIDE_BINS) - 1, -1)
    for b, label in enumerate(labels):
        in_bucket = faces.role[which == b]
        counts = {name: int((in_bucket == r).sum()) for r, name in enumerate(ROLES)}
        buckets[label] = {"faces": len(in_bucket), **counts,
                          **{f"{name}_share": _share(counts[name], len(in_bucket)) for name in ROLES}}
    totals = {name: int((faces.role == r).sum()) for r, name in enumerate(ROLES)}
    lost_by_size = {"unit": "px, shorter side on the stored image", "buckets": buckets, "totals": totals}

    return {"faces_per_image": faces_per_image, "face_sizes": face_sizes, "aspect_ratios": aspect_ratios,
            "centres": centres, "cells": cells, "lost_by_size": lost_by_size}


# -- the sentences --------------------------------------------------------------------------------


def captions(n: dict) -> dict[str, str]:
    """One sentence per plot, saying what it shows on this split."""
    f, z, a, c, g, lb = (n[k] for k in PLOTS)
    crowd = f["more_faces_than_cells"]
    side = z["shorter_side"]
    dropped_by_size = ", ".join(
        f"{label} px {b['dropped_share']:.0%}" for label, b in lb["buckets"].items() if b["faces"]
    )
    ignored = lb["totals"]["ignored_invalid"] + lb["totals"]["ignored_small"]
    first_label, first = next(iter(lb["buckets"].items()))
    ignored_first = first["ignored_invalid"] + first["ignored_small"]
    return {
        "faces_per_image": (
            f"{f['images']} images hold {f['faces']} faces (median {f['median']:g}, mean {f['mean']}, max {f['max']} per "
            f"image); the {crowd['images']} images ({crowd['images_share']:.1%}) with more faces than the grid's "
            f"{crowd['cells']} cells hold {crowd['faces_share']:.0%} of all faces, and can never have all of them as targets."
        ),
        "face_sizes": (
            f"Shorter sides run p10 {side['p10']} / median {side['p50']} / p90 {side['p90']} px on the stored image "
            f"(widths median {z['width']['p50']}, heights {z['height']['p50']}); {z['under_quarter_cell']['share']:.0%} of "
            f"the faces are under a quarter of a {z['cell_px']:g}-px grid cell, {z['at_least_a_cell']['share']:.1%} at least a cell."
        ),
        "aspect_ratios": (
            f"Faces are width/height {a['stored']['p50']:.2f} at the median on the stored canvas against "
            f"{a['source']['p50']:.2f} in their source images (p10-p90 {a['stored']['p10']:.2f}-{a['stored']['p90']:.2f} "
            f"stored): the {a['resize']} resize to a square changes the shapes the head must predict."
        ),
        "centres": (
            f"Face centres ({c['bin_px']:g}-px squares, log colour) under the grid: cell (row {c['busiest_cell']['row']}, col "
            f"{c['busiest_cell']['col']}) holds the most, {c['busiest_cell']['faces']} ({c['busiest_cell']['share']:.1%}), "
            f"the emptiest {c['emptiest_cell_faces']}."
        ),
        "cells": (
            f"Per cell, faces that own it ({g['targets_total']} targets) and faces that lost it to a larger one "
            f"({g['dropped_total']} dropped, {g['dropped_share_total']:.0%} of target faces); cell (row "
            f"{g['most_dropped_cell']['row']}, col {g['most_dropped_cell']['col']}) drops the most, "
            f"{g['most_dropped_cell']['dropped']} ({g['most_dropped_cell']['share']:.0%} of the target faces centred there)."
        ),
        "lost_by_size": (
            f"Share of the faces of each size (shorter side) that collisions drop: {dropped_by_size}; {ignored} faces "
            f"are ignored ({_share(ignored, f['faces']):.1%}), {ignored_first} of them under {first_label.split('-')[1]} px."
        ),
    }


# -- the plots ------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _bars_with_labels(ax, labels: Sequence[str], counts: Sequence[int], total: int, colour: str) -> None:
    x = np.arange(len(labels))
    ax.bar(x, counts, color=colour, width=0.8)
    ax.set_xticks(x, labels, rotation=0)
    top = max(counts) if len(counts) and max(counts) else 1
    for xi, count in zip(x, counts):
        ax.text(xi, count + top * 0.01, f"{count}\n{_share(count, total):.0%}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, top * 1.18)


def plot_faces_per_image(n: dict, title: str):
    f = n["faces_per_image"]
    figure = _figure(10, 6.2)
    top, bottom = figure.subplots(2, 1)
    labels = list(f["images_by_count"])
    _bars_with_labels(top, labels, list(f["images_by_count"].values()), f["images"], "#4a7ebb")
    top.set_ylabel("images")
    top.set_title(f"{title}: images by their number of faces (median {f['median']:g}, mean {f['mean']}, max {f['max']})")
    _bars_with_labels(bottom, labels, list(f["faces_by_count"].values()), f["faces"], "#c0504d")
    bottom.set_ylabel("faces")
    bottom.set_xlabel("faces in the image")
    bottom.set_title(f"the faces those images hold ({f['faces']} in all): crowds hold most faces")
    cells = f["more_faces_than_cells"]["cells"]
    if cells + 1 in FACES_PER_IMAGE_EDGES:  # the bins from there on hold images with more faces than cells
        first = FACES_PER_IMAGE_EDGES.index(cells + 1)
        for ax in (top, bottom):
            ax.axvline(first - 0.5, color="black", linestyle="--", linewidth=1)
        crowd = f["more_faces_than_cells"]
        top.text(first - 0.4, top.get_ylim()[1] * 0.9,
                 f"more faces than the grid's {cells} cells: {crowd['images']} images,\n"
                 f"holding {crowd['faces']} faces ({crowd['faces_share']:.0%} of all)", fontsize=8, va="top")
    return figure


def plot_face_sizes(n: dict, title: str):
    z = n["face_sizes"]
    figure = _figure(10, 5.2)
    ax = figure.subplots()
    edges = np.array(z["edges_px"])
    ax.stairs(z["shorter_side_counts"], edges, fill=True, color="#4a7ebb", alpha=0.55, label="shorter side")
    ax.stairs(z["width_counts"], edges, color="#c0504d", linewidth=1.6, label="width")
    ax.stairs(z["height_counts"], edges, color="#2f9e44", linewidth=1.6, label="height")
    ax.set_xscale("log", base=2)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xticks([0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256], ["1/4", "1/2", "1", "2", "4", "8", "16", "32", "64", "128", "256"])
    cell = z["cell_px"]
    for px, text in ((cell / 4, "1/4 cell"), (cell, "1 cell")):
        ax.axvline(px, color="black", linestyle="--", linewidth=1)
        ax.text(px * 1.05, ax.get_ylim()[1] * 0.95, text, fontsize=8, va="top")
    s = z["shorter_side"]
    ax.set_title(f"{title}: face sizes in stored pixels (shorter side p10 {s['p10']}, median {s['p50']}, p90 {s['p90']})")
    ax.set_xlabel("px on the stored image (log scale, quarter-octave bins)")
    ax.set_ylabel("faces")
    ax.legend()
    return figure


def plot_aspect_ratios(n: dict, title: str):
    a = n["aspect_ratios"]
    figure = _figure(10, 5.2)
    ax = figure.subplots()
    edges = np.array(a["edges"])
    ax.stairs(a["stored_counts"], edges, fill=True, color="#4a7ebb", alpha=0.6, label=f"stored canvas (median {a['stored']['p50']:.2f})")
    ax.stairs(a["source_counts"], edges, color="#c0504d", linewidth=1.6, label=f"source image (median {a['source']['p50']:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xticks([0.25, 0.5, 1, 2, 4], ["1/4", "1/2", "1", "2", "4"])
    ax.axvline(1, color="black", linestyle="--", linewidth=1)
    ax.set_title(f"{title}: face width / height ({a['resize']} resize to the square canvas)")
    ax.set_xlabel("width / height (log scale; values beyond the ends counted in the end bins)")
    ax.set_ylabel("faces")
    ax.legend()
    return figure


def _grid_lines(ax, size: float, s: int, colour: str) -> None:
    for i in range(1, s):
        ax.axhline(i * size / s, color=colour, linewidth=1.2, alpha=0.9)
        ax.axvline(i * size / s, color=colour, linewidth=1.2, alpha=0.9)


def plot_centres(n: dict, title: str, config: check_records.RecordConfig):
    import matplotlib
    from matplotlib import patheffects
    from matplotlib.colors import LogNorm

    c = n["centres"]
    size, s = config.input_size, config.grid_size
    figure = _figure(7.6, 6.6)
    ax = figure.subplots()
    heat = np.ma.masked_equal(np.array(c["heatmap"], float), 0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#ececec")  # squares without a face
    image = ax.imshow(heat, extent=(0, size, size, 0), cmap=cmap, norm=LogNorm(vmin=1, vmax=max(1, heat.max() or 1)),
                      interpolation="nearest")
    _grid_lines(ax, size, s, "#e8452c")
    for r, row in enumerate(c["per_cell"]):
        for col, count in enumerate(row):
            ax.text((col + 0.04) * size / s, (r + 0.06) * size / s, str(count), color="white", fontsize=7, va="top",
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_xticks(np.linspace(0, size, s + 1))
    ax.set_yticks(np.linspace(0, size, s + 1))
    ax.set_xlabel("x, px of the stored image")
    ax.set_ylabel("y, px")
    ax.set_title(f"{title}: face centres ({c['faces']}), {c['bin_px']:g}-px squares;\n"
                 f"corner numbers: faces centred in each cell")
    top = max(1.0, float(heat.max() or 1))
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= top]
    bar = figure.colorbar(image, ax=ax, label=f"faces per {c['bin_px']:g} x {c['bin_px']:g} px square", shrink=0.85, ticks=ticks)
    bar.ax.set_yticklabels([str(t) for t in ticks])
    bar.ax.minorticks_off()
    return figure


def plot_cells(n: dict, title: str, config: check_records.RecordConfig):
    import matplotlib
    from matplotlib import ticker

    g = n["cells"]
    s = config.grid_size
    figure = _figure(15, 5.4)
    axes = figure.subplots(1, 3)
    panels = (
        (np.array(g["targets"]), "Greens", f"targets: faces owning the cell ({g['targets_total']})", "{:d}"),
        (np.array(g["dropped"]), "RdPu", f"dropped: faces that lost it ({g['dropped_total']})", "{:d}"),
        (np.array(g["dropped_share"], float), "magma_r",
         f"share dropped, dropped / (targets + dropped): {g['dropped_share_total']:.0%} in all", "{:.0%}"),
    )
    for ax, (values, cmap, label, fmt) in zip(axes, panels):
        # Counts from 0; shares over their own range, so that the cells that lose most stand out.
        share = fmt == "{:.0%}"
        known = values[np.isfinite(values)]
        vmin = float(known.min()) if share and known.size else 0.0
        vmax = (max(float(known.max()), vmin + 1e-9) if known.size else 1.0) if share else max(1, values.max())
        colours = matplotlib.colormaps[cmap].with_extremes(bad="#ececec")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
        for r in range(s):
            for col in range(s):
                value = values[r, col]
                if not np.isfinite(value):
                    ax.text(col, r, "-", ha="center", va="center", fontsize=8, color="#777777")
                    continue
                dark = (value - vmin) > (vmax - vmin) * 0.55
                ax.text(col, r, fmt.format(value.item() if share else int(value)), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        ax.set_xticks(range(s))
        ax.set_yticks(range(s))
        ax.set_xlabel("col")
        ax.set_ylabel("row")
        ax.set_title(label, fontsize=10)
        bar = figure.colorbar(image, ax=ax, shrink=0.8)
        bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=not share))
        if share:
            bar.ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    figure.suptitle(f"{title}: which cells win and lose collisions (one face per cell; the larger face wins)")
    return figure


def plot_lost_by_size(n: dict, title: str):
    lb = n["lost_by_size"]
    buckets = lb["buckets"]
    labels = list(buckets)
    figure = _figure(10, 5.4)
    ax = figure.subplots()
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for r, name in enumerate(ROLES):
        shares = np.array([buckets[label][f"{name}_share"] for label in labels])
        if name == "not_recomputed" and not shares.any():
            continue
        ax.bar(x, shares, bottom=bottom, color=ROLE_COLOURS[r], label=ROLE_MEANING[name], width=0.75)
        for xi, share, b in zip(x, shares, bottom):
            if share >= 0.06:
                ax.text(xi, b + share / 2, f"{share:.0%}", ha="center", va="center", fontsize=8)
        bottom += shares
    for xi, label in zip(x, labels):
        ax.text(xi, 1.01, f"n={buckets[label]['faces']}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of the faces of that size")
    ax.set_xlabel("shorter side, px of the stored image (the checker's size buckets)")
    ax.set_title(f"{title}: what becomes of faces, by size")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=4, fontsize=8, frameon=False)
    return figure


# -- the report -----------------------------------------------------------------------------------


def write(result: SplitCheck, directory: str) -> dict:
    """Writes the report of a checked split into `directory` (created if need be; local).

    Returns what report.json holds. Raises ReportError when the check has no statistics (no
    readable manifest) or a record changed since it was checked, OSError when the directory
    cannot be written.
    """
    report = result.report
    if report.stats is None:
        raise ReportError("nothing to report: the split has no readable manifest")
    faces = collect(result)
    n = numbers(faces, result.config)
    sentences = captions(n)
    os.makedirs(directory, exist_ok=True)
    title = report.split
    figures = {
        "faces_per_image": plot_faces_per_image(n, title),
        "face_sizes": plot_face_sizes(n, title),
        "aspect_ratios": plot_aspect_ratios(n, title),
        "centres": plot_centres(n, title, result.config),
        "cells": plot_cells(n, title, result.config),
        "lost_by_size": plot_lost_by_size(n, title),
    }
    for name, figure in figures.items():
        figure.savefig(os.path.join(directory, f"{name}.png"), format="png")
    document = {
        "split": report.split,
        "data_dir": report.data_dir,
        "ok": report.ok,
        "records": report.records,
        "config": dataclasses.asdict(result.config),
        "checker_stats": report.stats.as_json(),
        "plots": {name: {"file": f"{name}.png", "caption": sentences[name], **n[name]} for name in PLOTS},
    }
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    with open(os.path.join(directory, "report.html"), "w", encoding="utf-8") as f:
        f.write(_html(document))
    return document


def _html(document: dict) -> str:
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
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}figcaption{margin-top:.4em}</style>",
        "</head><body>",
        f"<h1>Split {html.escape(document['split'])} in {html.escape(document['data_dir'])}</h1>",
        f"<p>{html.escape(head)} The numbers behind every plot are in <a href=\"report.json\">report.json</a>.</p>",
    ]
    for name in PLOTS:
        plot = document["plots"][name]
        parts += [
            f'<figure id="{name}"><img src="{plot["file"]}" alt="{name}">',
            f"<figcaption><b>{name}</b>: {html.escape(plot['caption'])}</figcaption></figure>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)
