"""Synthetic WIDER FACE data: the one generator behind the demo sample, the benchmarks and the tests.

WIDER's images cannot be downloaded here, so everything that needs a dataset makes one with this
module. Faces are int32 [N, 10] arrays in `annotations.BOX_FIELDS` order (x y w h in pixels of
the image, then the six attributes); images are PIL images, written as encoded bytes.

- Where faces go: `random_faces` and `group_faces` (sizes in px), `attributes` (WIDER's six flags).
- What an image looks like:
    `photo`         1,024 px wide, a crop of a public-domain photograph with a face pasted into
                    every box and sensor-like grain; `encode_photo` makes it a JPEG of a real WIDER
                    image's size (150-250 KB). `python -m pipeline.sample` and the benchmarks.
    `pattern`       a smooth asymmetric colour pattern: a horizontal flip shows in the pixels.
    `colour_field`  a few random colours smoothly upsampled: small, and distinct per seed.
    `noise`         grey Gaussian noise, on which `paint_faces`' cartoon faces stand out to a
                    small network.
- Writing: `write_split` writes a split in WIDER's layout (root/images/<filename>,
  root/wider_face_split/wider_face_<split>_bbx_gt.txt) from `Picture`s; `write_annotations` writes
  just an annotation file. Files are written through a temporary name, so a file present is whole.

Every function takes its randomness from the numpy Generator it is given: the same seed gives
byte-identical files. `image_rng` derives one image's Generator from (seed, filename) alone, so
images do not depend on the order (or the process) they are drawn in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from pipeline import annotations

WIDTH = 1024  # every WIDER image is 1,024 px wide
MAX_HEIGHT = 4500  # the real boxes reach down to y + h = 4,441
# Common WIDER heights (16:9, 3:2, 4:3, 1:1, 3:4 portrait) and how often each is drawn.
_HEIGHTS = (576, 683, 768, 1024, 1366)
_HEIGHT_WEIGHTS = (0.1, 0.4, 0.3, 0.1, 0.1)
_FACE_CROP = (176, 56, 274, 178)  # hairline to chin in skimage.data.astronaut(), (left, top, right, bottom)
_GRAIN_SIGMA = 4.0  # grey levels: the high-frequency content that gives photo-like JPEG sizes
_GRAIN_ROWS = 2048  # rows of the grain tile; taller images wrap around it
_KB = 1024
_TARGET_BYTES = (160 * _KB, 240 * _KB)  # inside 150-250 KB, the size of a typical WIDER JPEG
_QUALITIES = (97, 95, 92, 90, 87, 84, 80, 75, 70, 60, 50, 40, 30)
_START_QUALITY = _QUALITIES.index(90)
SKIN = (224, 172, 140)  # the cartoon faces' fill
_EYES = (30, 20, 20)


# --- Where faces go ------------------------------------------------------------------------------


def no_faces() -> np.ndarray:
    return np.zeros((0, len(annotations.BOX_FIELDS)), np.int32)


def typical_height(rng: np.random.Generator) -> int:
    """One of WIDER's common image heights (px), as often as WIDER has it."""
    return int(rng.choice(_HEIGHTS, p=_HEIGHT_WEIGHTS))


def attributes(rng: np.random.Generator, sizes: np.ndarray, invalid_rate: float) -> np.ndarray:
    """WIDER attributes, int [N, 6], for faces whose smaller side is `sizes` px.

    Blur follows size as in WIDER (tiny faces are heavily blurred); the rest are rare.
    """
    n = len(sizes)
    blur = np.minimum(2, (sizes < 40).astype(int) + (sizes < 12) + (rng.random(n) < 0.1))
    return np.stack(
        [
            blur,
            rng.random(n) < 0.05,  # expression: exaggerated
            rng.random(n) < 0.05,  # illumination: extreme
            rng.random(n) < invalid_rate,
            rng.choice(3, n, p=(0.7, 0.2, 0.1)),  # occlusion: none, partial, heavy
            rng.random(n) < 0.08,  # pose: atypical
        ],
        axis=1,
    ).astype(int)


def random_faces(rng: np.random.Generator, widths: np.ndarray, height: int, invalid_rate: float = 0.05) -> np.ndarray:
    """Faces, int32 [N, 10], of the given widths (px) at random places inside WIDTH x `height`.

    A face is 1.1-1.35 times as tall as it is wide.
    """
    widths = np.asarray(widths)
    heights = np.rint(widths * rng.uniform(1.1, 1.35, len(widths))).astype(int)
    x = rng.integers(0, WIDTH - widths + 1)
    y = rng.integers(0, height - heights + 1)
    boxes = np.stack([x, y, widths, heights], axis=1)
    return np.concatenate([boxes, attributes(rng, np.minimum(widths, heights), invalid_rate)], axis=1).astype(np.int32)


def group_faces(rng: np.random.Generator, height: int) -> np.ndarray:
    """An ordinary photo's faces: 2-15 of them, 12-120 px wide."""
    n = rng.integers(2, 16)
    return random_faces(rng, rng.integers(12, 121, n), height)


# --- Photo-like images ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Sources:
    photos: tuple[Image.Image, ...]  # RGB backgrounds, none showing a face
    face: Image.Image  # RGB
    face_mask: Image.Image  # L, a soft ellipse so pasted faces blend in rather than show a box
    grain: np.ndarray  # uint8 [_GRAIN_ROWS, WIDTH, 3], 128 + Gaussian noise


@functools.cache
def _sources() -> _Sources:
    """Loaded once per process: decoding the photos costs more than drawing an image."""
    from skimage import (
        data,  # only images shipped inside the wheel: none of these downloads
    )

    # No astronaut or camera: their faces would be faces without a box.
    colour = (data.coffee(), data.chelsea(), data.rocket(), data.stereo_motorcycle()[0])
    grey = (data.grass(), data.gravel(), data.brick())
    photos = colour + tuple(np.stack([g] * 3, axis=-1) for g in grey)
    face = Image.fromarray(data.astronaut()).crop(_FACE_CROP)
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, face.width - 1, face.height - 1), fill=255)
    grain = np.random.default_rng(0).normal(128, _GRAIN_SIGMA, (_GRAIN_ROWS, WIDTH, 3))
    return _Sources(
        photos=tuple(Image.fromarray(p) for p in photos),
        face=face,
        face_mask=mask.filter(ImageFilter.GaussianBlur(3)),
        grain=np.clip(np.rint(grain), 0, 255).astype(np.uint8),
    )


@functools.lru_cache(maxsize=4096)
def _face(width: int, height: int, mirrored: bool) -> tuple[Image.Image, Image.Image]:
    """The face and its mask at width x height px; cached, as crowds repeat a few tiny sizes."""
    sources = _sources()
    face = sources.face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else sources.face
    size = (width, height)
    return face.resize(size, Image.Resampling.BILINEAR), sources.face_mask.resize(size, Image.Resampling.BILINEAR)


def photo(faces: np.ndarray, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB WIDTH x `height` photo with a face in every box of `faces` (int32 [N, 10], xywh px).

    Boxes with no area are left unpainted; boxes past an edge are painted where they overlap.
    Needs scikit-image (the `sample` extra) for its photographs.
    """
    sources = _sources()
    picture = sources.photos[rng.integers(len(sources.photos))]
    # Between half and all of the largest crop with the output's aspect ratio.
    aspect = height / WIDTH
    crop_w = min(picture.width, picture.height / aspect) * rng.uniform(0.5, 1.0)
    crop_h = crop_w * aspect
    left, top = rng.uniform(0, picture.width - crop_w), rng.uniform(0, picture.height - crop_h)
    image = picture.resize((WIDTH, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mirrored = (rng.random(len(faces)) < 0.5).tolist()
    for (x, y, w, h), flip in zip(faces[:, :4].tolist(), mirrored, strict=True):
        if w > 0 and h > 0:
            face, mask = _face(w, h, flip)
            image.paste(face, (x, y), mask)
    rows = (rng.integers(_GRAIN_ROWS) + np.arange(height)) % _GRAIN_ROWS
    # Grain goes on last, over the faces too, as a sensor would put it.
    return ImageChops.add(image, Image.fromarray(sources.grain[rows]), scale=1.0, offset=-128)


def encode_photo(image: Image.Image, progressive: bool = False) -> bytes:
    """JPEG bytes, sized into _TARGET_BYTES where some quality allows it.

    Starts at quality 90 and walks the quality ladder towards the target until a size falls
    inside it, or just past it when one step jumps over the whole window.
    """
    low, high = _TARGET_BYTES
    index = _START_QUALITY
    encoded = jpeg(image, _QUALITIES[index], progressive)
    step = -1 if len(encoded) < low else 1 if len(encoded) > high else 0  # -1: towards higher quality
    while step and 0 <= index + step < len(_QUALITIES):
        index += step
        encoded = jpeg(image, _QUALITIES[index], progressive)
        if (len(encoded) >= low) if step < 0 else (len(encoded) <= high):
            break
    return encoded


def image_rng(seed: int, filename: str) -> np.random.Generator:
    """The randomness of one image: from the seed and its filename only, not the work order."""
    digest = hashlib.sha256(filename.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


# --- Small images, for tests that build in seconds -----------------------------------------------


def pattern(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """RGB: a horizontal ramp, sine bands and diagonal stripes, with one flat rectangle at a
    random place: compresses well, and is asymmetric, so a flip is visible."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * xx / max(1, width - 1)
    g = 128 + 100 * np.sin(yy / 17.0 + rng.random() * 6)
    b = 255 * ((xx + 2 * yy) % 97) / 96
    image = np.stack([r, g, b], axis=-1)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    image[y0 : y0 + height // 4, x0 : x0 + width // 5] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def colour_field(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """RGB: 4 x 4 random colours, bicubically upsampled; two seeds never give the same bytes."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def noise(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """RGB Gaussian noise around dark grey (mean 90, sigma 25 grey levels)."""
    return Image.fromarray(rng.normal(90, 25, (height, width, 3)).clip(0, 255).astype(np.uint8))


def paint_faces(image: Image.Image, faces: Sequence[Sequence[int]] | np.ndarray) -> Image.Image:
    """Paints a skin-coloured ellipse with two dark eyes into every box of `faces` (xywh px, in
    place; returns `image`). Boxes with no area are left unpainted, as in `photo`."""
    draw = ImageDraw.Draw(image)
    for x, y, w, h in np.asarray(faces, dtype=np.int64).reshape(-1, len(annotations.BOX_FIELDS))[:, :4].tolist():
        if w <= 0 or h <= 0:
            continue
        draw.ellipse((x, y, x + w - 1, y + h - 1), fill=SKIN)
        eye = max(1, w // 8)
        for ex in (x + w // 3, x + 2 * w // 3):
            draw.ellipse((ex - eye, y + h // 3 - eye, ex + eye, y + h // 3 + eye), fill=_EYES)
    return image


def jpeg(image: Image.Image, quality: int = 90, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, progressive=progressive)
    return buffer.getvalue()


# --- Writing -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Picture:
    """One image of a synthetic split: its entry in the annotation file and its file."""

    filename: str  # relative to the images root, as the annotation file names it
    faces: np.ndarray | Sequence[Sequence[int]]  # int [N, 10] in BOX_FIELDS order, xywh in px
    data: bytes | None  # the encoded image; None: annotated but never written (a missing image)


def split_paths(root: str | os.PathLike, split: str) -> tuple[str, str]:
    """(annotation file, images root) of `split` in WIDER's layout under root."""
    return os.path.join(root, "wider_face_split", f"wider_face_{split}_bbx_gt.txt"), os.path.join(root, "images")


def write_split(root: str | os.PathLike, split: str, pictures: Iterable[Picture]) -> tuple[str, str]:
    """Writes every picture under root/images and their annotation file (train's or val's
    empty-image placeholder, by `split`). `pictures` may be a generator: each is written as it
    comes. Returns (annotation file, images root), the build's --annotations and --images_dir."""
    annotations_path, images_dir = split_paths(root, split)
    entries = []
    for picture in pictures:
        if picture.data is not None:
            write_file(os.path.join(images_dir, picture.filename), picture.data)
        entries.append((picture.filename, picture.faces))
    write_annotations(annotations_path, entries, split)
    return annotations_path, images_dir


def write_annotations(path: str | os.PathLike, entries: Iterable[tuple[str, object]], split: str) -> None:
    """A `*_bbx_gt.txt` file of (filename, faces) entries, as `annotations.format_boxes` writes it."""
    write_file(path, annotations.format_boxes(entries, split).encode("ascii"))


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Writes through a temporary name, so a file present is always complete (reruns skip it)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)
