"""A record's stored image, decoded: the one decoder of `Record.pixels`, `ShardSequence` and the
checker. Never imports TensorFlow (`make_dataset` decodes with `tf.io` inside tf.data).

image/format "raw" is the bytes themselves, uint8 height x width x 3. "jpeg" is decoded by
Pillow with its defaults: in full (no draft), with libjpeg's accurate integer DCT, the pixels
`make_dataset(..., dct_method="INTEGER_ACCURATE")` gives too.

The readers' decode (`decode_stored_image(..., any_mode=True)`) goes through OpenCV's
`cv2.imdecode` when OpenCV is installed: the same libjpeg-turbo decode (accurate integer DCT,
fancy upsampling: the same pixels, held to Pillow's in the tests), about 1.5 times as fast,
since Pillow unpacks every row to 4 bytes a pixel and back. Only for what both decode alike: a
3-component JPEG of the expected size that ends with its EOI marker (a stream cut short is left
to Pillow, which refuses it, where libjpeg under OpenCV would fill it with grey); anything else,
and every error message, is Pillow's.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from reader.core.config import IMAGE_FORMATS


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
    if any_mode:
        fast = _decode_jpeg_opencv(encoded, height, width)
        if fast is not None:
            return fast
    return _decode_jpeg(encoded, height, width, any_mode=any_mode, keep=True)


def image_problem(encoded: bytes, image_format: str, height: int, width: int, size: int) -> str | None:
    """What keeps a record's image from being the size x size x 3 image the manifest's
    input_size says (image/height and image/width, then the image itself), or None. Decodes a
    JPEG without copying its pixels out."""
    if (height, width) != (size, size):
        return f"image/height, image/width: expected {size}, {size} (the manifest's input_size), found {height}, {width}"
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


def _opencv():
    """cv2, or None when OpenCV is not installed (looked for once)."""
    if "cv2" not in _OPENCV:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _OPENCV["cv2"] = cv2
    return _OPENCV["cv2"]


_OPENCV: dict = {}
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_components(encoded: bytes) -> int | None:
    """The component count of the JPEG's frame header, or None when the segments before it do
    not read as a JPEG's (then Pillow decodes it, or says what is wrong)."""
    if encoded[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(encoded)
    while pos + 4 <= end and encoded[pos] == 0xFF:
        marker = encoded[pos + 1]
        if marker in _SOF_MARKERS:
            return encoded[pos + 9] if pos + 10 <= end else None
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2 + int.from_bytes(encoded[pos + 2 : pos + 4], "big")
    return None


def _decode_jpeg_opencv(encoded: bytes, height: int, width: int) -> np.ndarray | None:
    """uint8 [height, width, 3] decoded by OpenCV, or None where it is not installed or the
    stream is not one that it and Pillow decode alike (see the module docstring)."""
    cv2 = _opencv()
    if cv2 is None or not encoded.endswith(b"\xff\xd9") or _jpeg_components(encoded) != 3:
        return None
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None or image.shape != (height, width, 3):
        return None
    return image
