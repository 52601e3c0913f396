"""Image preparation: source bytes to the stored square image.

Pixels are used as stored (no EXIF rotation: WIDER boxes refer to the stored pixel grid),
converted to RGB from any mode, and downscaled with antialiasing. JPEG sources are decoded at
a reduced scale first (`draft`) when the target is small enough: a 1024-px WIDER photo then
decodes at 512 px or less, which is most of the speed of the build.

Anything that makes an image unusable raises UnusableImage with a short, stable `reason`
(a key for errors.jsonl and the counters) and a `detail` for people.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from reader.boxes import Placement

# Kept explicit: a truncated file is an error, never silently grey pixels.
ImageFile.LOAD_TRUNCATED_IMAGES = False

REASONS = (
    "missing",
    "unreadable",
    "empty",
    "not_an_image",
    "truncated",
    "decompression_bomb",
    "path_escapes_images_dir",
    "undecodable",
)


class UnusableImage(Exception):
    """An image that cannot become a record. `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """How images are stored. Validates itself."""

    input_size: int = 224
    resize: str = "stretch"
    image_format: str = "jpeg"
    jpeg_quality: int = 95

    def __post_init__(self):
        if not 16 <= self.input_size <= 4096:
            raise ValueError(f"input_size must be between 16 and 4096, got {self.input_size}")
        if self.resize not in ("stretch", "letterbox"):
            raise ValueError(f"resize must be 'stretch' or 'letterbox', got {self.resize!r}")
        if self.image_format not in ("jpeg", "raw"):
            raise ValueError(f"image_format must be 'jpeg' or 'raw', got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """encoded: the stored bytes (JPEG, or raw uint8 size x size x 3); placement: where the
    source landed on the canvas, in canvas pixels."""

    encoded: bytes
    placement: Placement


def confined_path(filename: str) -> str:
    """The annotation path, normalized, if it stays inside the images directory.

    Raises UnusableImage("path_escapes_images_dir") for absolute paths, `..` escapes, URLs and
    backslashes (which mean a separator on Windows-made files and escape nothing here only by luck).
    """
    if not filename or filename.startswith(("/", "~")) or "\\" in filename or "://" in filename:
        raise UnusableImage("path_escapes_images_dir", f"{filename!r} is not a relative path")
    normalized = posixpath.normpath(filename)
    if normalized == ".." or normalized.startswith("../") or normalized == ".":
        raise UnusableImage("path_escapes_images_dir", f"{filename!r} leaves the images directory")
    return normalized


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit grey: Pillow's convert clips to 255; scale to 8 bits instead.
        array = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
        im = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        array = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(array * (255.0 if array.max() <= 1 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def prepare(data: bytes, config: ImageConfig) -> PreparedImage:
    """Decodes source bytes and returns the stored image. Raises UnusableImage."""
    if not data:
        raise UnusableImage("empty", "the file has 0 bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnusableImage("not_an_image", f"no image format recognized; the file starts {data[:16]!r}") from None
    except Image.DecompressionBombError as e:
        raise UnusableImage("decompression_bomb", str(e)) from None
    with im:
        width, height = im.size
        if width * height > Image.MAX_IMAGE_PIXELS:
            # Pillow only warns between 1x and 2x its limit; we hold the line at 1x.
            raise UnusableImage(
                "decompression_bomb", f"{width}x{height} = {width * height} pixels exceeds Pillow's limit of {Image.MAX_IMAGE_PIXELS}"
            )
        placement = Placement.fit(width, height, config.input_size, config.resize)
        try:
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale while staying at least the scaled size.
            im.draft("RGB", (placement.scaled_width, placement.scaled_height))
            im.load()
        except OSError as e:
            reason = "truncated" if "truncated" in str(e) or "broken data stream" in str(e) else "undecodable"
            raise UnusableImage(reason, str(e)) from None
        except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UnusableImage("undecodable", str(e)) from None
        im = _to_rgb(im)

    scaled = im.resize((placement.scaled_width, placement.scaled_height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if (placement.scaled_width, placement.scaled_height) != (config.input_size,) * 2:
        canvas = Image.new("RGB", (config.input_size, config.input_size))
        canvas.paste(scaled, (placement.left, placement.top))
        scaled = canvas
    if config.image_format == "raw":
        return PreparedImage(scaled.tobytes(), placement)
    return PreparedImage(_encode_jpeg(scaled, config.jpeg_quality), placement)


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """JPEG bytes of `im`. Pillow releases the GIL while it encodes only when it writes to a
    file descriptor, so on Linux the bytes go through an in-memory file (same bytes as a
    BytesIO): the shard writer's threads then encode side by side."""
    try:
        fd = os.memfd_create("facegrid-jpeg", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality)
        return out.getvalue()
    with os.fdopen(fd, "w+b") as out:
        im.save(out, format="JPEG", quality=quality)
        out.seek(0)
        return out.read()
