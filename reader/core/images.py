"""A record's stored image, decoded: the one decoder of `Record.pixels`, `ShardSequence` and the
checker. Never imports TensorFlow (`make_dataset` decodes with `tf.io` inside tf.data).

image/format "raw" is the bytes themselves, uint8 height x width x 3. "jpeg" is decoded by
Pillow with its defaults: in full (no draft), with libjpeg's accurate integer DCT, the pixels
`make_dataset(..., dct_method="INTEGER_ACCURATE")` gives too.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from reader.core.schema import IMAGE_FORMATS


def decode_stored_image(encoded: bytes, image_format: str, height: int, width: int, *, any_mode: bool = False) -> np.ndarray:
    """The stored image as uint8 [height, width, 3] (read-only); raises ValueError saying what is
    wrong (never Pillow's own errors).

    image_format: "jpeg" or "raw", as image/format says. Raw bytes must number height x width
    x 3. A JPEG is decoded in full (a truncated stream fails), must be 8-bit RGB and of that
    size. any_mode: accept whatever Pillow opens, in any mode, converted to RGB (what the readers
    accept); the size is still held to height x width.
    """
    if image_format == "raw":
        if len(encoded) != height * width * 3:
            raise ValueError(f"raw image: expected {height}x{width}x3 = {height * width * 3} bytes, found {len(encoded)}")
        return np.frombuffer(encoded, np.uint8).reshape(height, width, 3)
    if image_format != "jpeg":
        raise ValueError(f"image/format: expected one of {IMAGE_FORMATS}, found {image_format!r}")
    return _decode_jpeg(encoded, height, width, any_mode=any_mode, keep=True)


def image_problem(encoded: bytes, image_format: str, height: int, width: int, size: int) -> str | None:
    """What keeps a record's image from being the size x size x 3 image the manifest's
    input_size says (image/height and image/width, then the image itself), or None. Decodes a
    JPEG without copying its pixels out."""
    if (height, width) != (size, size):
        return (f"image/height, image/width: expected {size}, {size} (the manifest's input_size), "
                f"found {height}, {width}")
    try:
        if image_format == "jpeg":
            _decode_jpeg(encoded, size, size, any_mode=False, keep=False)
        else:
            decode_stored_image(encoded, image_format, size, size)
    except ValueError as e:
        return str(e)
    return None


def _decode_jpeg(encoded: bytes, height: int, width: int, *, any_mode: bool, keep: bool) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(encoded)) as im:
            if not any_mode and im.format != "JPEG":
                raise ValueError(f"image/format says jpeg, the bytes are {im.format or 'unknown'}")
            if not any_mode and im.mode != "RGB":
                raise ValueError(f"expected an RGB JPEG, found mode {im.mode}")
            if im.size != (width, height):
                raise ValueError(f"expected {width}x{height} pixels, found {im.size[0]}x{im.size[1]}")
            im.load()
            if not keep:
                return None
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except ValueError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, DecompressionBombError, ...
        raise ValueError(f"JPEG does not decode: {type(e).__name__}: {e}") from None
