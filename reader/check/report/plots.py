"""The dataset report's plots (reader.check.report.dataset writes them): the numbers of
reader.check.report.numbers in, one matplotlib Figure per plot out.

Drawn with matplotlib's object-oriented API on its Agg canvas (no pyplot, no global backend),
imported only when a report is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reader.check.report.faces import ROLES
from reader.check.report.numbers import FACES_PER_IMAGE_EDGES, share
from reader.core.config import BuildConfig

ROLE_MEANING = {
    "target": "owns its cell: a target",
    "dropped": "lost its cell to a larger face",
    "ignored_invalid": "ignored: flagged invalid",
    "ignored_small": "ignored: under min_face_px",
    "not_recomputed": "targets not recomputable (non-finite box)",
}
# The contact sheet's colours: green targets, magenta dropped, orange ignored.
ROLE_COLOURS = ("#00c85a", "#ff00ff", "#ff8c00", "#9e9e9e", "#444444")
BLUE, RED, GREEN = "#4a7ebb", "#c0504d", "#2f9e44"
DPI = 110


def draw(n: dict, title: str, config: BuildConfig) -> dict:
    """Every plot of the numbers `n` (report_numbers.numbers'), titled `title`: PLOTS name ->
    matplotlib Figure."""
    return {
        "faces_per_image": plot_faces_per_image(n, title),
        "face_sizes": plot_face_sizes(n, title),
        "aspect_ratios": plot_aspect_ratios(n, title),
        "centres": plot_centres(n, title, config),
        "cells": plot_cells(n, title, config),
        "lost_by_size": plot_lost_by_size(n, title),
    }


# -- the plots: each takes the numbers (and a title), returns a Figure ---------------------------


def _figure(width: float, height: float):
    """An empty Figure of `width` x `height` inches at DPI, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _bars_with_labels(ax, labels: Sequence[str], counts: Sequence[int], total: int, colour: str) -> None:
    """Bars of `counts`, each labelled with its count and its share of `total`."""
    x = np.arange(len(labels))
    ax.bar(x, counts, color=colour, width=0.8)
    ax.set_xticks(x, labels, rotation=0)
    top = max(counts) if len(counts) and max(counts) else 1
    for xi, count in zip(x, counts, strict=True):
        ax.text(xi, count + top * 0.01, f"{count}\n{share(count, total):.0%}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, top * 1.18)


def _power_of_two_label(value: float) -> str:
    """0.25 -> "1/4", 0.5 -> "1/2", 4.0 -> "4"."""
    return f"1/{round(1 / value)}" if value < 1 else f"{value:g}"


def _log2_histograms(
    edges: Sequence[float],
    filled: tuple[Sequence[int], float, str],
    lines: Sequence[tuple[Sequence[int], str, str]],
    ticks: Sequence[float],
):
    """A figure of face counts over power-of-two `edges` on a log2 x axis: `filled` (counts,
    alpha, label) as a blue area, each of `lines` (counts, colour, label) as a line, x ticks
    at `ticks`. Returns (figure, axes); the caller adds its marks, title and legend."""
    figure = _figure(10, 5.2)
    ax = figure.subplots()
    edges = np.array(edges)
    counts, alpha, label = filled
    ax.stairs(counts, edges, fill=True, color=BLUE, alpha=alpha, label=label)
    for counts, colour, label in lines:
        ax.stairs(counts, edges, color=colour, linewidth=1.6, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xticks(ticks, [_power_of_two_label(t) for t in ticks])
    ax.set_ylabel("faces")
    return figure, ax


def plot_faces_per_image(n: dict, title: str):
    """Images (top) and the faces they hold (bottom) by faces per image; a dashed line where
    the images with more faces than the grid has cells begin."""
    f = n["faces_per_image"]
    figure = _figure(10, 6.2)
    top, bottom = figure.subplots(2, 1)
    labels = list(f["images_by_count"])
    _bars_with_labels(top, labels, list(f["images_by_count"].values()), f["images"], BLUE)
    top.set_ylabel("images")
    top.set_title(f"{title}: images by their number of faces (median {f['median']:g}, mean {f['mean']}, max {f['max']})")
    _bars_with_labels(bottom, labels, list(f["faces_by_count"].values()), f["faces"], RED)
    bottom.set_ylabel("faces")
    bottom.set_xlabel("faces in the image")
    bottom.set_title(f"the faces those images hold ({f['faces']} in all): crowds hold most faces")
    cells = f["more_faces_than_cells"]["cells"]
    if cells + 1 in FACES_PER_IMAGE_EDGES:  # the bins from there on hold images with more faces than cells
        first = FACES_PER_IMAGE_EDGES.index(cells + 1)
        for ax in (top, bottom):
            ax.axvline(first - 0.5, color="black", linestyle="--", linewidth=1)
        crowd = f["more_faces_than_cells"]
        top.text(
            first - 0.4,
            top.get_ylim()[1] * 0.9,
            f"more faces than the grid's {cells} cells: {crowd['images']} images,\n"
            f"holding {crowd['faces']} faces ({crowd['faces_share']:.0%} of all)",
            fontsize=8,
            va="top",
        )
    return figure


def plot_face_sizes(n: dict, title: str):
    """Shorter side, width and height of the faces in stored px, marked at 1/4 cell and 1 cell."""
    z = n["face_sizes"]
    figure, ax = _log2_histograms(
        z["edges_px"],
        (z["shorter_side_counts"], 0.55, "shorter side"),
        [(z["width_counts"], RED, "width"), (z["height_counts"], GREEN, "height")],
        [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256],
    )
    cell = z["cell_px"]
    for px, text in ((cell / 4, "1/4 cell"), (cell, "1 cell")):
        ax.axvline(px, color="black", linestyle="--", linewidth=1)
        ax.text(px * 1.05, ax.get_ylim()[1] * 0.95, text, fontsize=8, va="top")
    s = z["shorter_side"]
    ax.set_title(f"{title}: face sizes in stored pixels (shorter side p10 {s['p10']}, median {s['p50']}, p90 {s['p90']})")
    ax.set_xlabel("px on the stored image (log scale, quarter-octave bins)")
    ax.legend()
    return figure


def plot_aspect_ratios(n: dict, title: str):
    """Face width / height on the stored canvas and in the source image, marked at 1 (square)."""
    a = n["aspect_ratios"]
    figure, ax = _log2_histograms(
        a["edges"],
        (a["stored_counts"], 0.6, f"stored canvas (median {a['stored']['p50']:.2f})"),
        [(a["source_counts"], RED, f"source image (median {a['source']['p50']:.2f})")],
        [0.25, 0.5, 1, 2, 4],
    )
    ax.axvline(1, color="black", linestyle="--", linewidth=1)
    ax.set_title(f"{title}: face width / height ({a['resize']} resize to the square canvas)")
    ax.set_xlabel("width / height (log scale; values beyond the ends counted in the end bins)")
    ax.legend()
    return figure


def _grid_lines(ax, size: float, s: int, colour: str) -> None:
    """The S x S grid's inner lines over a `size`-px canvas."""
    for i in range(1, s):
        ax.axhline(i * size / s, color=colour, linewidth=1.2, alpha=0.9)
        ax.axvline(i * size / s, color=colour, linewidth=1.2, alpha=0.9)


def plot_centres(n: dict, title: str, config: BuildConfig):
    """A log-coloured heat map of face centres on the canvas under the grid, each cell's count
    in its corner."""
    import matplotlib
    from matplotlib import patheffects
    from matplotlib.colors import LogNorm

    c = n["centres"]
    size, s = config.input_size, config.grid_size
    figure = _figure(7.6, 6.6)
    ax = figure.subplots()
    heat = np.ma.masked_equal(np.array(c["heatmap"], float), 0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#ececec")  # squares without a face
    image = ax.imshow(
        heat, extent=(0, size, size, 0), cmap=cmap, norm=LogNorm(vmin=1, vmax=max(1, heat.max() or 1)), interpolation="nearest"
    )
    _grid_lines(ax, size, s, "#e8452c")
    for r, row in enumerate(c["per_cell"]):
        for col, count in enumerate(row):
            ax.text(
                (col + 0.04) * size / s,
                (r + 0.06) * size / s,
                str(count),
                color="white",
                fontsize=7,
                va="top",
                path_effects=[patheffects.withStroke(linewidth=2, foreground="black")],
            )
    ax.set_xticks(np.linspace(0, size, s + 1))
    ax.set_yticks(np.linspace(0, size, s + 1))
    ax.set_xlabel("x, px of the stored image")
    ax.set_ylabel("y, px")
    ax.set_title(f"{title}: face centres ({c['faces']}), {c['bin_px']:g}-px squares;\ncorner numbers: faces centred in each cell")
    top = max(1.0, float(heat.max() or 1))
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= top]
    bar = figure.colorbar(image, ax=ax, label=f"faces per {c['bin_px']:g} x {c['bin_px']:g} px square", shrink=0.85, ticks=ticks)
    bar.ax.set_yticklabels([str(t) for t in ticks])
    bar.ax.minorticks_off()
    return figure


def plot_cells(n: dict, title: str, config: BuildConfig):
    """Three S x S maps side by side: targets per cell, dropped per cell, the share dropped."""
    g = n["cells"]
    figure = _figure(15, 5.4)
    axes = figure.subplots(1, 3)
    panels = (
        (np.array(g["targets"]), "Greens", f"targets: faces owning the cell ({g['targets_total']})", False),
        (np.array(g["dropped"]), "RdPu", f"dropped: faces that lost it ({g['dropped_total']})", False),
        (
            np.array(g["dropped_share"], float),
            "magma_r",
            f"share dropped, dropped / (targets + dropped): {g['dropped_share_total']:.0%} in all",
            True,
        ),
    )
    for ax, (values, cmap, label, shares) in zip(axes, panels, strict=True):
        _cell_panel(figure, ax, values, cmap, label, shares, config.grid_size)
    figure.suptitle(f"{title}: which cells win and lose collisions (one face per cell; the larger face wins)")
    return figure


def _cell_panel(figure, ax, values: np.ndarray, cmap: str, label: str, shares: bool, s: int) -> None:
    """One S x S map of `values` (counts, or shares in [0, 1] with NaN for none) on `ax`, each
    cell's value written in it, with its colour bar."""
    from matplotlib import colormaps, ticker

    # Counts from 0; shares over their own range, so that the cells that lose most stand out.
    known = values[np.isfinite(values)]
    vmin = float(known.min()) if shares and known.size else 0.0
    vmax = (max(float(known.max()), vmin + 1e-9) if known.size else 1.0) if shares else max(1, values.max())
    colours = colormaps[cmap].with_extremes(bad="#ececec")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    for r in range(s):
        for col in range(s):
            value = values[r, col]
            if not np.isfinite(value):
                ax.text(col, r, "-", ha="center", va="center", fontsize=8, color="#777777")
                continue
            dark = (value - vmin) > (vmax - vmin) * 0.55
            ax.text(
                col,
                r,
                f"{value.item():.0%}" if shares else f"{int(value):d}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(s))
    ax.set_yticks(range(s))
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    ax.set_title(label, fontsize=10)
    bar = figure.colorbar(image, ax=ax, shrink=0.8)
    bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=not shares))
    if shares:
        bar.ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))


def plot_lost_by_size(n: dict, title: str):
    """Per size bucket, stacked bars of the share of faces in each role (ROLES)."""
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
        for xi, part, b in zip(x, shares, bottom, strict=True):
            if part >= 0.06:
                ax.text(xi, b + part / 2, f"{part:.0%}", ha="center", va="center", fontsize=8)
        bottom += shares
    for xi, label in zip(x, labels, strict=True):
        ax.text(xi, 1.01, f"n={buckets[label]['faces']}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of the faces of that size")
    ax.set_xlabel("shorter side, px of the stored image (the checker's size buckets)")
    ax.set_title(f"{title}: what becomes of faces, by size")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=4, fontsize=8, frameon=False)
    return figure
