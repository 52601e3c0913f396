"""A contact sheet of sample records, so a person sees at a glance that targets sit on faces.

Each tile is one stored image, enlarged, with:
    the S x S grid               thin white lines
    target cells (stored obj 1)  green fill; the box the stored grid decodes to in cyan, with
                                 its centre dot: it should sit on a yellow box
    ignored cells (stored)       orange fill
    stored boxes                 yellow: the face that owns its cell's target; magenta: a target
                                 face that lost its cell to a larger one (dropped); orange: a face
                                 kept out of the targets (invalid, or under min_face_px)
Below each tile: shard:record, its face counts, and the checks it failed (red).

Drawn with Pillow from the records alone; the roles of the stored boxes come from recomputing the
targets, the fills and cyan boxes from what the record stores, so a disagreement shows.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reader.check import records as check_records
from reader.check.split import CheckedRecord, SplitCheck
from reader.core import images, storage, targets, tfrecord

GRID_LINE = (255, 255, 255, 90)
TARGET_FILL = (0, 200, 90, 70)
IGNORE_FILL = (255, 140, 0, 90)
OWNER = (255, 230, 0, 255)
DROPPED = (255, 0, 255, 255)
IGNORED = (255, 140, 0, 255)
DECODED = (0, 230, 255, 255)
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
FAIL_TEXT = (255, 90, 90)
_DRAWABLE_FAILURES = {"images", "ranges", "targets", "placement", "duplicates", "leakage"}


@dataclasses.dataclass(frozen=True)
class Tile:
    """One record to draw. pixels: uint8 [H, W, 3], or None when the image does not decode.
    boxes: rel_xyxy [N, 4]; is_target: bool [N] and owners: int [S, S], the face owning each cell
    or -1 (both recomputed); grid [S, S, 5], ignore [S, S]: as stored."""

    title: str
    pixels: np.ndarray | None
    boxes: np.ndarray
    is_target: np.ndarray
    owners: np.ndarray
    grid: np.ndarray
    ignore: np.ndarray
    failed: tuple[str, ...] = ()


def pick(records: Sequence[CheckedRecord], count: int, seed: int) -> list[CheckedRecord]:
    """Up to `count` records to show: readable records that failed a check first (up to half the
    sheet), then a seeded sample of the others, preferring records with faces."""
    readable = [r for r in records if r.facts is not None]
    failing = [r for r in readable if r.failed & _DRAWABLE_FAILURES][: max(1, count // 2)]
    rest = [r for r in readable if not r.failed]
    rng = random.Random(seed)
    room = count - len(failing)
    # A quarter each from crowded records (a face dropped) and records with ignored faces, so the
    # sheet shows every kind of cell; then any record with faces; records without faces last.
    pools = [
        ([r for r in rest if r.facts.dropped], room // 4),
        ([r for r in rest if r.facts.ignored], room // 4),
        ([r for r in rest if r.facts.faces], room),
        (rest, room),
    ]
    chosen: list[CheckedRecord] = []
    for pool, quota in pools:
        taken = {(r.file, r.index) for r in chosen}
        pool = [r for r in pool if (r.file, r.index) not in taken]
        chosen += rng.sample(pool, max(0, min(quota, room - len(chosen), len(pool))))
    return failing + sorted(chosen, key=lambda r: (r.file, r.index))


def load_tiles(result: SplitCheck, chosen: Sequence[CheckedRecord]) -> list[Tile]:
    """Reads and decodes the chosen records."""
    tiles = []
    config = result.config
    spans = {file: {span.index: span for span in index.spans} for file, index in result.indexes.items()}
    for record in chosen:
        with storage.open_binary(result.paths[record.file], None) as f:
            data = tfrecord.read_record(f, record.file, spans[record.file][record.index])
        fields = check_records.parse(data, config)
        try:
            pixels = images.decode_stored_image(fields["image"], fields["format"], fields["height"], fields["width"])
        except ValueError:
            pixels = None
        s = config.grid_size
        recomputed = check_records.recompute_targets(fields, config)
        if recomputed is None:
            is_target, owners = np.zeros(len(fields["boxes"]), bool), np.full((s, s), -1)
        else:
            is_target, owners = recomputed.is_target, recomputed.owners
        tiles.append(
            Tile(
                f"{record.file.removesuffix('.tfrecord')}:{record.index}",
                pixels,
                fields["boxes"],
                is_target,
                owners,
                fields["grid"],
                fields["ignore"],
                tuple(sorted(record.failed)),
            )
        )
    return tiles


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_tile(tile: Tile, size: int) -> Image.Image:
    """The tile's image enlarged to size x size with boxes and grid drawn (no caption)."""
    if tile.pixels is None:
        base = Image.new("RGB", (size, size), (70, 0, 0))
        ImageDraw.Draw(base).text((10, size // 2), "image does not decode", fill=TEXT, font=_font(14))
    else:
        base = Image.fromarray(tile.pixels).resize((size, size), Image.Resampling.BICUBIC)
        # Dimmed, so that fills and thin boxes stand out on busy photos.
        base = Image.blend(base, Image.new("RGB", base.size, (0, 0, 0)), 0.35)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    s = tile.grid.shape[0]
    cell = size / s
    for row in range(s):
        for col in range(s):
            box = [col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1]
            if tile.grid[row, col, targets.OBJ] >= 0.5:
                draw.rectangle(box, fill=TARGET_FILL, outline=TARGET_FILL[:3] + (255,), width=2)
            elif tile.ignore[row, col] >= 0.5:
                draw.rectangle(box, fill=IGNORE_FILL, outline=IGNORE_FILL[:3] + (255,), width=2)
                for k in range(0, int(2 * cell), 8):  # hatched, so ignore never reads as a target
                    draw.line(
                        [(box[0] + max(0, k - cell), box[1] + min(k, cell)), (box[0] + min(k, cell), box[1] + max(0, k - cell))],
                        fill=IGNORE_FILL[:3] + (160,),
                    )
    for i in range(1, s):
        draw.line([(i * cell, 0), (i * cell, size)], fill=GRID_LINE)
        draw.line([(0, i * cell), (size, i * cell)], fill=GRID_LINE)

    owned = set(int(i) for i in tile.owners.ravel() if i >= 0)
    for i, box in enumerate(tile.boxes):
        colour, width = (OWNER, 3) if i in owned else ((DROPPED, 2) if tile.is_target[i] else (IGNORED, 2))
        x0, y0, x1, y1 = (np.clip(np.nan_to_num(box), -1, 2) * size).tolist()
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=colour, width=width)
    decoded, _ = targets.decode(np.nan_to_num(tile.grid))
    for x0, y0, x1, y1 in (np.clip(decoded, -1, 2) * size).tolist():
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=DECODED, width=1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=DECODED)
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")


def _caption(tile: Tile) -> list[tuple[str, tuple]]:
    faces = len(tile.boxes)
    s = tile.grid.shape[0]
    target_cells = int((tile.grid[..., targets.OBJ] >= 0.5).sum())
    ignored_cells = int((tile.ignore >= 0.5).sum())
    kept_out = faces - int(tile.is_target.sum())
    lines = [
        (tile.title, TEXT),
        (
            f"{faces} face{'s' if faces != 1 else ''} ({kept_out} ignored); stored: {target_cells} target cells, "
            f"{ignored_cells} ignored of {s * s}",
            TEXT,
        ),
    ]
    if tile.failed:
        lines.append(("FAILED " + ", ".join(tile.failed), FAIL_TEXT))
    return lines


def render(tiles: Sequence[Tile], columns: int = 4, tile_size: int = 448, title: str = "") -> Image.Image:
    """The sheet: tiles in rows of `columns`, each with its caption, and a legend at the bottom."""
    font, small = _font(15), _font(13)
    caption_height, pad, header = 64, 10, 34 if title else 0
    legend_height = 58
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    width = columns * (tile_size + pad) + pad
    height = header + rows * (tile_size + caption_height + pad) + pad + legend_height
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 8), title, fill=TEXT, font=font)
    for n, tile in enumerate(tiles):
        x = pad + (n % columns) * (tile_size + pad)
        y = header + pad + (n // columns) * (tile_size + caption_height + pad)
        sheet.paste(draw_tile(tile, tile_size), (x, y))
        for line, (text, colour) in enumerate(_caption(tile)):
            draw.text((x, y + tile_size + 4 + line * 18), text, fill=colour, font=small)
    _legend(draw, pad, height - legend_height + 6, small)
    return sheet


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, font) -> None:
    entries = [
        ("fill", TARGET_FILL, "target cell (obj 1)"),
        ("fill", IGNORE_FILL, "ignored cell"),
        ("box", DECODED, "box decoded from the grid"),
        ("box", OWNER, "face owning its cell"),
        ("box", DROPPED, "face dropped (cell taken by a larger face)"),
        ("box", IGNORED, "face ignored (invalid or small)"),
    ]
    for n, (kind, colour, text) in enumerate(entries):
        ex, ey = x + (n % 3) * 330, y + (n // 3) * 24
        if kind == "fill":
            draw.rectangle([ex, ey, ex + 18, ey + 16], fill=colour[:3], outline=GRID_LINE[:3])
        else:
            draw.rectangle([ex, ey, ex + 18, ey + 16], outline=colour[:3], width=2)
        draw.text((ex + 26, ey), text, fill=TEXT, font=font)


def write(result: SplitCheck, path: str, samples: int = 16, seed: int = 0, columns: int = 4) -> int:
    """Draws a sheet of up to `samples` records of a checked split to the file `path`, PNG or
    JPEG as its name ends (`image_format`).
    Returns how many records it shows."""
    chosen = pick(result.records, samples, seed)
    tiles = load_tiles(result, chosen)
    report = result.report
    verdict = "PASS" if report.ok else f"FAIL ({len(report.problems)} problem{'' if len(report.problems) == 1 else 's'})"
    title = f"{report.split} in {report.data_dir}: {report.records} records, {verdict}; {len(tiles)} samples (seed {seed})"
    render(tiles, columns=columns, title=title).convert("RGB").save(path, format=image_format(path) or "PNG")
    return len(tiles)


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # the sheet's file name says its format


def image_format(path: str) -> str | None:
    """Pillow's format name for the sheet's file name, or None for an extension it is not written in."""
    return FORMATS.get(os.path.splitext(path)[1].lower())
