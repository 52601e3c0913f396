"""The numbers behind the dataset report's plots, and the sentence that says what each shows.

    numbers    Faces + config -> one dict per plot (keys: PLOTS), plain Python values for JSON
    captions   those numbers -> one sentence per plot
and, per plot, the function that computes its numbers from NumPy arrays:
    faces_per_image_numbers  images, and the faces they hold, by their number of faces
    face_size_numbers        face width, height and shorter side, px of the stored image
    aspect_ratio_numbers     face width / height on the stored canvas and in the source image
    centre_numbers           where face centres fall on the canvas, per heat-map square and cell
    cell_numbers             per cell: faces that own it (targets), faces that lost it (dropped)
    lost_by_size_numbers     per face size: the share kept as targets, dropped, ignored

Pure NumPy, no reading and no drawing: reader.check.report.faces gathers the faces,
reader.check.report.dataset draws these numbers and writes the files.
"""

from __future__ import annotations

import numpy as np

from reader.check import stats as check_stats
from reader.check.report.faces import DROPPED, OWNER, ROLES, Faces
from reader.core import targets
from reader.core.config import BuildConfig

# Finer than the checker's bins (FACES_PER_IMAGE_BINS), which they refine: each checker bin is a
# union of these.
FACES_PER_IMAGE_EDGES = (0, 1, 2, 3, 4, 5, 6, 11, 21, 50, 101, 201, 501)  # 50: more than 7 x 7
SIDE_EDGES_PX = 2.0 ** np.arange(-2, 8.01, 0.25)  # quarter octaves, 0.25 px to 256 px
ASPECT_EDGES = 2.0 ** np.arange(-2, 2.01, 0.125)  # eighth octaves, w/h from 1/4 to 4
HEATMAP_BINS_PER_CELL = 8

PLOTS = ("faces_per_image", "face_sizes", "aspect_ratios", "centres", "cells", "lost_by_size")


def share(part, whole) -> float:
    """part / whole rounded to 4 places; 0.0 when whole is 0."""
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


def _edges(edges: np.ndarray) -> list[float]:
    return [round(float(e), 4) for e in edges]


def _per_cell(row: np.ndarray, col: np.ndarray, mask: np.ndarray, s: int) -> np.ndarray:
    """int64 [s, s]: how many of the faces `mask` selects are centred in each cell."""
    grid = np.zeros((s, s), np.int64)
    np.add.at(grid, (row[mask], col[mask]), 1)
    return grid


def numbers(faces: Faces, config: BuildConfig) -> dict:
    """The numbers behind every plot, plain Python values ready for JSON (keys: PLOTS)."""
    size, s = config.input_size, config.grid_size
    rel = faces.boxes.astype(np.float64)
    width, height = (rel[:, 2] - rel[:, 0]) * size, (rel[:, 3] - rel[:, 1]) * size
    # A non-finite box (the ranges check fails its record) has no place on the canvas.
    placed = np.isfinite(rel).all(axis=1)
    row, col = targets.cells(np.where(placed[:, None], rel, 0.0), s)
    return {
        "faces_per_image": faces_per_image_numbers(faces.per_image, s * s),
        "face_sizes": face_size_numbers(faces.sides, width, height, size / s),
        "aspect_ratios": aspect_ratio_numbers(width, height, faces.source_aspect, config.resize),
        "centres": centre_numbers(rel, placed, row, col, size, s),
        "cells": cell_numbers(faces.role, placed, row, col, s),
        "lost_by_size": lost_by_size_numbers(faces.sides, faces.role),
    }


def faces_per_image_numbers(per_image: np.ndarray, cells: int) -> dict:
    """per_image: int64 [R], faces per record; cells: the grid's S x S. Images and faces by the
    number of faces per image, and those with more faces than cells."""
    total = int(per_image.sum())
    crowded = per_image > cells
    return {
        "images": len(per_image),
        "faces": total,
        "mean": round(float(per_image.mean()), 2) if len(per_image) else 0.0,
        "median": float(np.median(per_image)) if len(per_image) else 0.0,
        "max": int(per_image.max()) if len(per_image) else 0,
        "images_by_count": check_stats.bin_counts(per_image, FACES_PER_IMAGE_EDGES, integer=True),
        "faces_by_count": check_stats.bin_counts(per_image, FACES_PER_IMAGE_EDGES, integer=True, weights=per_image),
        "checker_histogram": check_stats.bin_counts(per_image, check_stats.FACES_PER_IMAGE_BINS, integer=True),
        "more_faces_than_cells": {
            "cells": cells,
            "images": int(crowded.sum()),
            "faces": int(per_image[crowded].sum()),
            "images_share": share(crowded.sum(), len(per_image)),
            "faces_share": share(per_image[crowded].sum(), total),
        },
    }


def face_size_numbers(sides: np.ndarray, width: np.ndarray, height: np.ndarray, cell_px: float) -> dict:
    """sides, width, height: [F] px of the stored image (shorter side, box width and height);
    cell_px: a grid cell's side in px. Their quantiles and histograms, and the faces under a
    quarter of a cell or at least a cell."""
    total = len(sides)
    return {
        "unit": "px of the stored image",
        "cell_px": cell_px,
        "shorter_side": {
            **_quantiles(sides, 1),
            "histogram": check_stats.bin_counts(sides, check_stats.FACE_SIDE_BINS, integer=False),
        },
        "width": _quantiles(width, 1),
        "height": _quantiles(height, 1),
        "edges_px": _edges(SIDE_EDGES_PX),
        "shorter_side_counts": _histogram(sides.astype(np.float64), SIDE_EDGES_PX),
        "width_counts": _histogram(width, SIDE_EDGES_PX),
        "height_counts": _histogram(height, SIDE_EDGES_PX),
        "under_quarter_cell": {
            "px": cell_px / 4,
            "faces": int((sides < cell_px / 4).sum()),
            "share": share((sides < cell_px / 4).sum(), total),
        },
        "at_least_a_cell": {
            "px": cell_px,
            "faces": int((sides >= cell_px).sum()),
            "share": share((sides >= cell_px).sum(), total),
        },
    }


def aspect_ratio_numbers(width: np.ndarray, height: np.ndarray, source_aspect: np.ndarray, resize: str) -> dict:
    """width, height: [F] px of the stored image; source_aspect: [F] width / height in source
    pixels; resize: the build's resize mode. Quantiles and histograms of both ratios."""
    with np.errstate(divide="ignore", invalid="ignore"):
        stored_aspect = width / height
    return {
        "definition": "width / height of the face box",
        "resize": resize,
        "stored": _quantiles(stored_aspect, 3),
        "source": _quantiles(source_aspect, 3),
        "edges": _edges(ASPECT_EDGES),
        "stored_counts": _histogram(stored_aspect, ASPECT_EDGES),
        "source_counts": _histogram(source_aspect, ASPECT_EDGES),
    }


def centre_numbers(rel: np.ndarray, placed: np.ndarray, row: np.ndarray, col: np.ndarray, size: int, s: int) -> dict:
    """rel: float64 [F, 4] rel_xyxy boxes; placed: bool [F], finite boxes; row, col: [F] the cell
    of each centre; size: the canvas side in px; s: the grid's S. Centres per heat-map square
    (HEATMAP_BINS_PER_CELL across a cell) and per cell, the busiest and emptiest cell."""
    total = len(rel)
    bins = s * HEATMAP_BINS_PER_CELL
    cx, cy = (rel[placed, 0] + rel[placed, 2]) / 2 * size, (rel[placed, 1] + rel[placed, 3]) / 2 * size
    heat = np.histogram2d(np.clip(cy, 0, size), np.clip(cx, 0, size), bins=bins, range=[[0, size], [0, size]])[0]
    per_cell = _per_cell(row, col, placed, s)
    busiest = np.unravel_index(np.argmax(per_cell), per_cell.shape) if total else (0, 0)
    return {
        "faces": total,
        "bin_px": size / bins,
        "heatmap": heat.astype(int).tolist(),  # [row][col] of bin_px x bin_px squares
        "per_cell": per_cell.tolist(),
        "busiest_cell": {
            "row": int(busiest[0]),
            "col": int(busiest[1]),
            "faces": int(per_cell[busiest]),
            "share": share(per_cell[busiest], total),
        },
        "emptiest_cell_faces": int(per_cell.min()),
    }


def cell_numbers(role: np.ndarray, placed: np.ndarray, row: np.ndarray, col: np.ndarray, s: int) -> dict:
    """role: int8 [F], indexes into ROLES; placed, row, col as centre_numbers'. Per cell, the
    faces that own it and the faces that lost it to a larger one, and the share lost."""
    owned, lost = _per_cell(row, col, (role == OWNER) & placed, s), _per_cell(row, col, (role == DROPPED) & placed, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        lost_share = np.where(owned + lost > 0, lost / np.maximum(owned + lost, 1), np.nan)
    most_lost = np.unravel_index(np.argmax(lost), lost.shape)
    return {
        "targets": owned.tolist(),
        "dropped": lost.tolist(),
        # dropped / (targets + dropped) per cell; None where no target face is centred
        "dropped_share": [[None if np.isnan(v) else round(float(v), 4) for v in line] for line in lost_share],
        "targets_total": int(owned.sum()),
        "dropped_total": int(lost.sum()),
        "dropped_share_total": share(lost.sum(), owned.sum() + lost.sum()),
        "most_dropped_cell": {
            "row": int(most_lost[0]),
            "col": int(most_lost[1]),
            "dropped": int(lost[most_lost]),
            "share": round(float(np.nan_to_num(lost_share[most_lost])), 4),
        },
    }


def lost_by_size_numbers(sides: np.ndarray, role: np.ndarray) -> dict:
    """sides: [F] shorter side, px of the stored image; role: int8 [F]. Per size bucket of the
    checker (FACE_SIDE_BINS), the faces of each role and their shares; the totals per role."""
    buckets = {}
    labels = list(check_stats.bin_counts(sides, check_stats.FACE_SIDE_BINS, integer=False))
    # The checker's bins: [low, high), the last open; a NaN side is in none, as in its histogram.
    which = np.where(np.isfinite(sides), np.digitize(sides, check_stats.FACE_SIDE_BINS) - 1, -1)
    for b, label in enumerate(labels):
        in_bucket = role[which == b]
        counts = {name: int((in_bucket == r).sum()) for r, name in enumerate(ROLES)}
        buckets[label] = {
            "faces": len(in_bucket),
            **counts,
            **{f"{name}_share": share(counts[name], len(in_bucket)) for name in ROLES},
        }
    totals = {name: int((role == r).sum()) for r, name in enumerate(ROLES)}
    return {"unit": "px, shorter side on the stored image", "buckets": buckets, "totals": totals}


def captions(n: dict) -> dict[str, str]:
    """One sentence per plot (keys: PLOTS), saying what it shows on this split; n: numbers()'."""
    f, z, a, c, g, lb = (n[k] for k in PLOTS)
    crowd = f["more_faces_than_cells"]
    side = z["shorter_side"]
    dropped_by_size = ", ".join(f"{label} px {b['dropped_share']:.0%}" for label, b in lb["buckets"].items() if b["faces"])
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
            f"are ignored ({share(ignored, f['faces']):.1%}), {ignored_first} of them under {first_label.split('-')[1]} px."
        ),
    }
