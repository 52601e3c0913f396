"""Image preparation: source bytes to the stored square image.

Pixels are used as stored (no EXIF rotation: WIDER boxes refer to the stored pixel grid),
converted to RGB from any mode, and downscaled with antialiasing. JPEG sources are decoded at
a reduced scale first (`draft`) when the target is small enough: a 1024-px WIDER photo then
decodes at 512 px or less, which is most of the speed of the build.

Anything that makes an image unusable raises UnusableImage with a short, stable `reason`
(a key for errors.jsonl and the counters) and a `detail` for people. One bad image is never
fatal: every call into Pillow runs inside `_inside_pillow`, which turns whatever Pillow raises
for this image into UnusableImage. Our own code runs outside it, so a bug in it still fails
loudly. (Reading the bytes, confined to the images directory, is pipeline/sources.py.)

The module has four parts, in this order: reasons and settings; the Pillow boundary; the
pixel budget that bounds the memory of images being decoded at once; decoding and storing.
Whether a decoded JPEG was cut short and given an end marker (libjpeg fills it with grey rather
than failing) is pipeline/jpeg_cut.py's to judge.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline import jpeg_cut
from reader.core.boxes import Placement
from reader.core.config import BuildConfig

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
    "not_a_regular_file",  # a directory, FIFO, socket or device where an image file should be
    "file_too_large",  # more bytes than sources.MAX_SOURCE_BYTES
)


class UnusableImage(Exception):
    """An image that cannot become a record. `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# Bump whenever `prepare` gives other bytes for the same source and settings (a resize filter,
# the canvas, the encoder's options): builds of another version are then never reused from.
PREPARATION_VERSION = 1


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


# --- The Pillow boundary ------------------------------------------------------------------

# Words of Pillow's (and its codecs') messages that mean the data stopped early.
_TRUNCATION_WORDS = re.compile(
    r"truncat|only got|premature|end of file|unexpected end|not enough data|broken data stream|requires a buffer of",
    re.IGNORECASE,
)
_DETAIL_CHARS = 200


def _detail(error: BaseException) -> str:
    """`ExceptionType: message`, short enough for one errors.jsonl line."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


class _InsidePillow:
    """`with _inside_pillow:` around calls into Pillow: any Exception they raise becomes
    UnusableImage, since it concerns this one image (Pillow's plugins raise nearly every type:
    OSError, SyntaxError, ValueError, struct.error, IndexError, EOFError, AssertionError...).

    Also:
    - Warnings that a `-W error` filter turns into exceptions (Corrupt EXIF data,
      DecompressionBombWarning, ...): they are about the file, like the errors.
    - RecursionError: only crafted files recurse that deep (nested IFDs, boxes).
    - MemoryError: the pixel budget bounds the images in flight and the bomb limit each one, so
      an allocation that fails inside Pillow is one absurd file (a header asking for a huge
      strip or palette), not the build running out; letting it escape would fail every retry.
    KeyboardInterrupt and SystemExit are not Exceptions and pass through.
    """

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, UnusableImage) or not isinstance(error, Exception):
            return False
        if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise UnusableImage("decompression_bomb", _detail(error)) from None
        truncated = isinstance(error, EOFError) or _TRUNCATION_WORDS.search(str(error))
        raise UnusableImage("truncated" if truncated else "undecodable", _detail(error)) from None


_inside_pillow = _InsidePillow()


def _claimed_by(prefix: bytes) -> list[str]:
    """Formats whose signature check accepts `prefix` (the file's first 16 bytes)."""
    Image.init()
    claimed = []
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept and accept(prefix):
                claimed.append(name)
        except Exception:  # a signature check that trips over a short prefix claims nothing
            pass
    return claimed


def _open(data: bytes) -> Image.Image:
    """The image Pillow identifies in `data`, header read, pixels not yet decoded."""
    with _inside_pillow:
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            pass  # no plugin took it: say below whether any format's signature matched
    claimed = _claimed_by(data[:16])
    if claimed:
        # A known signature whose header Pillow cannot read: cut short or corrupt.
        raise UnusableImage("undecodable", f"starts like {'/'.join(claimed)}, but Pillow cannot read its header")
    raise UnusableImage("not_an_image", f"no image format recognized; the file starts {data[:16]!r}")


# --- The pixel budget ---------------------------------------------------------------------

# 64 Mpx: Pillow keeps RGB, RGBA and CMYK at 4 bytes a pixel, so 256 MiB of decoded pixels,
# about 0.5 GB with the RGB copy a mode conversion makes. It never binds for WIDER: 8 photos of
# 1,024 px decoded at 1/2 or 1/4 scale hold under 2 Mpx, and a 24 Mpx JPEG drafts to 0.4 Mpx.
# It binds for big lossless images (a 9000x9000 PNG is 81 Mpx, 324 MB), which then go one by one.
DEFAULT_PIXEL_BUDGET = 64 * 2**20


class PixelBudget:
    """Decoded pixels held at once by prepare() across the process, at most `capacity`.

    A condition-variable semaphore counted in pixels. Images are admitted in arrival order
    (so a big image is not starved by a stream of small ones), each when it fits, or when it is
    alone: an image larger than the whole budget still proceeds, by itself. Each image holds
    one lease for its whole decode, never two, so there is no deadlock.
    `high_water` is the most pixels ever held at once, for tests and benchmarks.
    """

    def __init__(self, capacity: int = DEFAULT_PIXEL_BUDGET):
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._capacity = self._checked(capacity)
        self.in_use = 0
        self.high_water = 0

    @staticmethod
    def _checked(capacity: int) -> int:
        if capacity < 1:
            raise ValueError(f"the pixel budget must be >= 1 pixel, got {capacity}")
        return capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    def set_capacity(self, capacity: int) -> None:
        """Changes the budget; images already holding pixels keep them."""
        with self._changed:
            self._capacity = self._checked(capacity)
            self._changed.notify_all()

    def reset_high_water(self) -> None:
        with self._changed:
            self.high_water = self.in_use

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Blocks until `pixels` fit (or nothing else is held), holds them for the block."""
        turn = object()
        with self._changed:
            self._queue.append(turn)
            try:
                self._changed.wait_for(
                    lambda: self._queue[0] is turn and (self.in_use == 0 or self.in_use + pixels <= self._capacity)
                )
                self.in_use += pixels
                self.high_water = max(self.high_water, self.in_use)
            finally:  # admitted or interrupted, the next in line gets its turn
                self._queue.remove(turn)
                self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


# Process-wide: every shard writer's threads (and every DoFn instance in this process) share it.
PIXEL_BUDGET = PixelBudget()

# Pillow allocates an image in blocks of up to 16 MB by default. glibc serves blocks that size
# from per-thread heaps and keeps them once freed, so 8 threads that each once held a 9000x9000
# image stay at 8 x 324 MB of RSS, budget or not (measured: BENCHMARKS.md). In blocks of up to
# 64 MB, a big image is mostly blocks over glibc's largest mmap threshold (32 MB), which are
# mapped and unmapped on their own: its memory goes back when it is freed. Small images are one
# block either way. (PILLOW_BLOCK_SIZE in the environment still has the last word.)
PILLOW_BLOCK_BYTES = 64 * 2**20
if "PILLOW_BLOCK_SIZE" not in os.environ:
    Image.core.set_block_size(PILLOW_BLOCK_BYTES)


# --- Decoding and storing -----------------------------------------------------------------


def source_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the source image in `data`, as its header says: no pixel is decoded
    (Pillow reads the header only; about 25 us for a WIDER JPEG). Raises UnusableImage."""
    if not data:
        raise UnusableImage("empty", "the file has 0 bytes")
    im = _open(data)
    try:
        return im.size
    finally:
        im.close()


def within_pixel_limit(width: int, height: int) -> bool:
    """Whether `prepare` decodes an image of that size (over Pillow's limit: a decompression bomb)."""
    return width * height <= Image.MAX_IMAGE_PIXELS


def prepare(data: bytes, config: BuildConfig, budget: PixelBudget | None = None) -> PreparedImage:
    """Decodes source bytes and returns the stored image. Raises UnusableImage.

    data: the whole source file. budget: the pixel budget to decode under (default: the
    process-wide PIXEL_BUDGET); it is held from just before the pixels are decoded until the
    full-size pixels are freed, and counts the decoded size (after JPEG draft).
    """
    if not data:
        raise UnusableImage("empty", "the file has 0 bytes")
    im = _open(data)
    try:
        width, height = im.size
        if not within_pixel_limit(width, height):
            # Pillow only warns between 1x and 2x its limit; we hold the line at 1x.
            raise UnusableImage(
                "decompression_bomb",
                f"{width}x{height} = {width * height} pixels exceeds Pillow's limit of {Image.MAX_IMAGE_PIXELS}",
            )
        placement = Placement.fit(width, height, config.input_size, config.resize)
        request = (placement.scaled_width, placement.scaled_height)
        with _inside_pillow:
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale while staying at least the scaled size.
            im.draft("RGB", request)
            decoded_pixels = im.width * im.height
        with (budget or PIXEL_BUDGET).hold(decoded_pixels):
            scaled = _decode_and_scale(im, data, request)
            im.close()  # frees the full-size pixels before the budget is handed back
    finally:
        im.close()
    return PreparedImage(_store(scaled, placement, config), placement)


def _decode_and_scale(im: Image.Image, data: bytes, size: tuple[int, int]) -> Image.Image:
    """Decodes `im` (opened from `data`, drafted towards `size`), returns it RGB at `size`."""
    with _inside_pillow:
        im.load()
        # jpeg_cut's first clue, read here: only this module turns Pillow's errors into UnusableImage.
        corner = im.getpixel((im.width - 1, im.height - 1)) if im.format in ("JPEG", "MPO") else None
    if corner is not None and jpeg_cut.scan_was_cut(im, corner, data, size):
        raise UnusableImage(
            "truncated",
            "the JPEG's scan data stops early (a cut file with an end marker added): libjpeg fills the rest with grey",
        )
    rgb = _to_rgb(im)
    with _inside_pillow:
        return rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _store(scaled: Image.Image, placement: Placement, config: BuildConfig) -> bytes:
    """The stored bytes: `scaled` pasted on the canvas, as raw RGB or JPEG."""
    with _inside_pillow:
        if (placement.scaled_width, placement.scaled_height) != (config.input_size,) * 2:
            canvas = Image.new("RGB", (config.input_size, config.input_size))
            canvas.paste(scaled, (placement.left, placement.top))
            scaled = canvas
        if config.image_format == "raw":
            return scaled.tobytes()
        return _encode_jpeg(scaled, config.jpeg_quality)


# Rows of 16/32-bit or float pixels converted at a time: the float64 temporaries of the
# conversion then stay at a few MB instead of 8-24 bytes per pixel of a 9000x9000 image.
_CONVERT_CHUNK_PIXELS = 2**20


def _to_rgb(im: Image.Image) -> Image.Image:
    """`im` (loaded, any mode) as RGB: itself when it is RGB already."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        with _inside_pillow:
            array = np.asarray(im)
        if array.size == 0:
            raise UnusableImage("undecodable", f"a {im.mode} image of {im.width}x{im.height} pixels holds no pixels")
        peak = array.max()
        # 16/32-bit grey: Pillow's convert clips to 255; scale to 8 bits instead.
        top = 65535.0 if im.mode.startswith("I;16") or peak > 255 else 255.0
        factor = 255.0 if peak <= 1 else 1.0  # float images in [0, 1] or already in [0, 255]
        grey = np.empty(array.shape, np.uint8)
        rows = max(1, _CONVERT_CHUNK_PIXELS // array.shape[1])
        for first in range(0, array.shape[0], rows):
            block = array[first : first + rows].astype(np.float64)
            # The arithmetic of the whole-image expression it replaces: the stored bytes stay.
            values = block * factor if im.mode == "F" else block / top * 255.0
            # NaN (float files) becomes 0, as the cast made it, minus the cast's RuntimeWarning.
            grey[first : first + rows] = np.clip(np.nan_to_num(values + 0.5, nan=0.0), 0, 255)
        with _inside_pillow:
            im = Image.fromarray(grey, "L")
    with _inside_pillow:
        return im.convert("RGB")


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
