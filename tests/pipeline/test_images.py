"""images.prepare: any image to one of the configured size, or UnusableImage saying why (pipeline/images.py)."""

import io
import os
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from pipeline import images
from pipeline.images import UnusableImage
from reader.core.config import BuildConfig
from tests.support.paths import FIXTURE_IMAGES

JPEG = BuildConfig()
RAW = BuildConfig(image_format="raw")


def _fixture(name: str) -> bytes:
    return (FIXTURE_IMAGES / name).read_bytes()


def _decoded(prepared, config=JPEG) -> np.ndarray:
    if config.image_format == "raw":
        return np.frombuffer(prepared.encoded, np.uint8).reshape(config.input_size, config.input_size, 3)
    with Image.open(io.BytesIO(prepared.encoded)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        return np.asarray(im)


@pytest.mark.parametrize(
    "name",
    [
        "0--Parade/0_Parade_rgb_1.jpg",
        "0--Parade/0_Parade_gray_3.jpg",
        "0--Parade/0_Parade_cmyk_4.jpg",
        "0--Parade/0_Parade_progressive_5.jpg",
        "12--Group/12_Group_png_named_jpg_6.jpg",
        "12--Group/12_Group_rgba_7.png",
    ],
)
def test_every_mode_becomes_224_rgb(name):
    prepared = images.prepare(_fixture(name), JPEG)
    pixels = _decoded(prepared)
    assert pixels.shape == (224, 224, 3)
    assert pixels.std() > 20  # a photograph, not a flat fill
    with Image.open(FIXTURE_IMAGES / name) as source:
        assert (prepared.placement.source_width, prepared.placement.source_height) == source.size


def test_gray_source_gives_equal_channels_and_cmyk_matches_rgb():
    gray = _decoded(images.prepare(_fixture("0--Parade/0_Parade_gray_3.jpg"), RAW), RAW).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() == 0
    rgb = _decoded(images.prepare(_fixture("0--Parade/0_Parade_rgb_1.jpg"), RAW), RAW).astype(int)
    cmyk = _decoded(images.prepare(_fixture("0--Parade/0_Parade_cmyk_4.jpg"), RAW), RAW).astype(int)
    assert np.abs(rgb - cmyk).mean() < 12  # same photo through Pillow's CMYK round trip


def test_downscale_is_antialiased():
    # One-pixel black and white stripes average to mid grey; nearest-neighbour would keep them.
    stripes = np.zeros((896, 896, 3), np.uint8)
    stripes[:, ::2] = 255
    out = io.BytesIO()
    Image.fromarray(stripes).save(out, format="PNG")
    pixels = _decoded(images.prepare(out.getvalue(), RAW), RAW)
    assert abs(pixels.mean() - 127.5) < 3 and pixels.std() < 8


def test_no_exif_rotation():
    # A landscape JPEG tagged "rotate 90°": WIDER boxes refer to the stored grid, so it stays landscape.
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (400, 200), "red").save(out, format="JPEG", exif=exif)
    placement = images.prepare(out.getvalue(), JPEG).placement
    assert (placement.source_width, placement.source_height) == (400, 200)


def test_letterbox_pads_with_black():
    config = BuildConfig(resize="letterbox", image_format="raw")
    tall = _fixture("0--Parade/0_Parade_tall_2.jpg")  # 320 x 400
    prepared = images.prepare(tall, config)
    pixels = _decoded(prepared, config)
    p = prepared.placement
    assert (p.scaled_width, p.scaled_height, p.left, p.top) == (179, 224, 22, 0)
    assert pixels[:, : p.left].max() == 0 and pixels[:, p.left + p.scaled_width :].max() == 0
    assert pixels[:, p.left + 5 : p.left + p.scaled_width - 5].std() > 20


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 256 * 256).reshape(256, 256)).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format="PNG")
    pixels = _decoded(images.prepare(out.getvalue(), RAW), RAW)
    assert pixels.min() < 10 and pixels.max() > 245 and 100 < pixels.mean() < 155


def test_jpeg_quality_and_raw_output():
    source = _fixture("0--Parade/0_Parade_rgb_1.jpg")
    low = images.prepare(source, BuildConfig(jpeg_quality=30)).encoded
    high = images.prepare(source, BuildConfig(jpeg_quality=95)).encoded
    assert len(low) < len(high)
    raw = images.prepare(source, RAW).encoded
    assert len(raw) == 224 * 224 * 3
    np.testing.assert_allclose(_decoded(images.prepare(source, JPEG)).astype(float), _decoded_raw(raw), atol=40)
    assert np.abs(_decoded(images.prepare(source, JPEG)).astype(float) - _decoded_raw(raw)).mean() < 2


def _decoded_raw(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).reshape(224, 224, 3).astype(float)


def test_same_input_same_bytes():
    source = _fixture("0--Parade/0_Parade_progressive_5.jpg")
    assert images.prepare(source, JPEG).encoded == images.prepare(source, JPEG).encoded


def test_jpeg_bytes_do_not_depend_on_how_they_are_encoded(monkeypatch):
    # Linux encodes through an in-memory file (Pillow then releases the GIL); elsewhere, or
    # where a sandbox refuses memfd_create, through BytesIO.
    source = _fixture("0--Parade/0_Parade_rgb_1.jpg")
    through_file = images.prepare(source, JPEG).encoded
    assert through_file[:2] == b"\xff\xd8" and through_file[-2:] == b"\xff\xd9"

    def refused(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    assert images.prepare(source, JPEG).encoded == through_file
    monkeypatch.delattr(os, "memfd_create", raising=False)
    assert images.prepare(source, JPEG).encoded == through_file


@pytest.mark.parametrize(
    "name, reason",
    [
        ("99--Broken/99_truncated.jpg", "truncated"),
        ("99--Broken/99_empty.jpg", "empty"),
        ("99--Broken/99_not_an_image.jpg", "not_an_image"),
        ("99--Broken/99_bomb.png", "decompression_bomb"),
    ],
)
def test_unusable_images_say_why(name, reason):
    with pytest.raises(UnusableImage) as caught:
        images.prepare(_fixture(name), JPEG)
    assert caught.value.reason == reason and caught.value.detail


def test_pillow_limit_is_held_at_one_times(monkeypatch):
    # Pillow itself only warns between 1x and 2x its limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 - 1)
    with pytest.raises(UnusableImage, match="decompression_bomb: 320x240 = 76800 pixels exceeds"):
        images.prepare(_fixture("0--Parade/0_Parade_rgb_1.jpg"), JPEG)


@pytest.mark.parametrize("path", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "~/x.jpg", "a\\..\\x.jpg", "gs://b/x.jpg", "", "."])
def test_paths_leaving_the_images_dir(path):
    with pytest.raises(UnusableImage) as caught:
        images.confined_path(path)
    assert caught.value.reason == "path_escapes_images_dir"


def test_paths_inside_the_images_dir_are_normalized():
    assert images.confined_path("0--Parade/./a/../0_Parade_1.jpg") == "0--Parade/0_Parade_1.jpg"


# --- One image is never fatal: whatever Pillow raises becomes UnusableImage (issue 10) -------


def _encoded(fmt: str, size=(80, 64), **options) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "fmt, cut, reason",
    [
        ("JPEG", 400, "truncated"),  # was OSError: Truncated File Read
        ("PNG", 20, "truncated"),  # was OSError: Truncated File Read
        ("WEBP", 16, "undecodable"),  # was OSError: could not create decoder object
        ("BMP", 20, "truncated"),
        ("BMP", 30, "truncated"),
        ("ICO", 0.5, "truncated"),  # cut inside the largest embedded image: was OSError: image file is truncated
        ("JPEG2000", 30, "truncated"),  # was OSError: Expected to read 8 bytes but only got 0.
        ("JPEG2000", 60, "truncated"),
        ("PNG", 30, "undecodable"),  # a PNG signature whose header Pillow cannot read
        ("GIF", 100, "undecodable"),
    ],
)
def test_a_file_cut_inside_its_header_is_unusable(fmt, cut, reason):
    data = _encoded(fmt)
    cut = int(len(data) * cut) if cut < 1 else cut
    assert len(data) > cut
    with pytest.raises(UnusableImage) as caught:
        images.prepare(data[:cut], JPEG)
    assert caught.value.reason == reason and caught.value.detail


_PILLOW_ERRORS = [
    (OSError("broken data stream when reading image file"), "truncated"),
    (OSError("unrecognized data stream contents"), "undecodable"),
    (EOFError(), "truncated"),
    (SyntaxError("not a TIFF file"), "undecodable"),
    (ValueError("buffer is not large enough"), "undecodable"),
    (struct.error("unpack requires a buffer of 4 bytes"), "truncated"),
    (IndexError("index out of range"), "undecodable"),
    (KeyError(7), "undecodable"),
    (AssertionError(), "undecodable"),
    (NotImplementedError("Unknown pixel format flags 0"), "undecodable"),
    (RecursionError("maximum recursion depth exceeded"), "undecodable"),
    (MemoryError(), "undecodable"),
    (UserWarning("Corrupt EXIF data"), "undecodable"),  # a warning that `-W error` raised
    (Image.DecompressionBombWarning("Image size exceeds limit"), "decompression_bomb"),
    (Image.DecompressionBombError("Image size exceeds limit"), "decompression_bomb"),
]


def _raising(error):
    def call(*args, **kwargs):
        raise error

    return call


@pytest.mark.parametrize("error, reason", _PILLOW_ERRORS, ids=[type(e).__name__ for e, _ in _PILLOW_ERRORS])
@pytest.mark.parametrize(
    "owner, method, source, config",
    [
        pytest.param(Image, "open", "0--Parade/0_Parade_rgb_1.jpg", JPEG, id="open"),
        pytest.param(JpegImagePlugin.JpegImageFile, "draft", "0--Parade/0_Parade_rgb_1.jpg", JPEG, id="draft"),
        pytest.param(ImageFile.ImageFile, "load", "0--Parade/0_Parade_rgb_1.jpg", JPEG, id="load"),
        pytest.param(Image.Image, "convert", "0--Parade/0_Parade_gray_3.jpg", JPEG, id="convert"),
        pytest.param(Image.Image, "resize", "0--Parade/0_Parade_rgb_1.jpg", JPEG, id="resize"),
        pytest.param(Image.Image, "paste", "0--Parade/0_Parade_tall_2.jpg", BuildConfig(resize="letterbox"), id="paste"),
        pytest.param(Image.Image, "tobytes", "0--Parade/0_Parade_rgb_1.jpg", RAW, id="tobytes"),
        pytest.param(Image.Image, "save", "0--Parade/0_Parade_rgb_1.jpg", JPEG, id="save"),
    ],
)
def test_any_exception_raised_inside_pillow_becomes_unusable(monkeypatch, owner, method, source, config, error, reason):
    data = _fixture(source)
    monkeypatch.setattr(owner, method, _raising(error))
    with pytest.raises(UnusableImage) as caught:
        images.prepare(data, config)
    assert caught.value.reason == reason
    assert caught.value.detail.startswith(f"{type(error).__name__}: ")


def test_warnings_that_a_filter_makes_errors_become_unusable(monkeypatch):
    # Between 1x and 2x its limit Pillow warns; under `-W error` the warning is raised from open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnusableImage) as caught:
            images.prepare(_fixture("0--Parade/0_Parade_rgb_1.jpg"), JPEG)
    assert caught.value.reason == "decompression_bomb" and caught.value.detail.startswith("DecompressionBombWarning: ")


def test_a_bug_in_our_own_code_still_fails_loudly(monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("our bug")

    monkeypatch.setattr(images.Placement, "fit", broken)
    with pytest.raises(ZeroDivisionError, match="our bug"):
        images.prepare(_fixture("0--Parade/0_Parade_rgb_1.jpg"), JPEG)


def test_a_known_signature_that_pillow_cannot_read_is_undecodable_not_a_non_image():
    with pytest.raises(UnusableImage) as caught:
        images.prepare(b"\x89PNG\r\n\x1a\n" + bytes(40), JPEG)
    assert caught.value.reason == "undecodable" and "PNG" in caught.value.detail
    with pytest.raises(UnusableImage) as caught:
        images.prepare(b"<html>404 Not Found</html>\n", JPEG)
    assert caught.value.reason == "not_an_image" and "<html>" in caught.value.detail


def test_wide_sixteen_bit_grey_converts_in_chunks_to_the_same_bytes(monkeypatch):
    # The chunked conversion (bounded temporaries) must store what one whole-image expression did.
    rng = np.random.default_rng(3)
    monkeypatch.setattr(images, "_CONVERT_CHUNK_PIXELS", 1000)  # 16 rows of 60 per chunk, 7 chunks
    for array, mode in [
        (rng.integers(0, 65536, (100, 60), dtype=np.uint16), "I;16"),
        (rng.integers(-1000, 70000, (100, 60)).astype(np.int32), "I"),
        (rng.integers(0, 256, (100, 60)).astype(np.int32), "I"),
        (rng.normal(0.5, 0.4, (100, 60)).astype(np.float32), "F"),
        (rng.normal(100, 90, (100, 60)).astype(np.float32), "F"),
    ]:
        im = Image.fromarray(array)
        assert im.mode == mode
        values = array.astype(np.float64)
        if mode == "F":
            expected = values * (255.0 if values.max() <= 1 else 1.0)
        else:
            expected = values / (65535.0 if mode == "I;16" or values.max() > 255 else 255.0) * 255.0
        expected = np.clip(expected + 0.5, 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(images._to_rgb(im))[..., 0], expected), mode


# --- JPEGs cut short and given an end marker: libjpeg's grey fill is not a record (issue 10) ---


def _jpeg(im: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "config", [JPEG, BuildConfig(input_size=512, image_format="raw")], ids=["224 (1/4 scale)", "512 (1/2 scale)"]
)
@pytest.mark.parametrize(
    "mode, options, fraction",
    [
        ("RGB", {}, 0.5),
        ("RGB", {}, 0.1),
        ("RGB", {}, 0.97),
        ("RGB", {"restart_marker_rows": 1}, 0.5),
        ("L", {}, 0.5),
        ("CMYK", {}, 0.5),
        ("RGB", {"progressive": True}, 0.03),  # inside the first (DC) scan: a grey bottom
        ("RGB", {"progressive": True}, 0.2),  # in a middle scan: blurred, blocky bottom
        ("L", {"progressive": True}, 0.3),
    ],
)
def test_a_jpeg_cut_then_given_an_end_marker_is_truncated(photo, mode, options, fraction, config):
    whole = _jpeg(photo.convert(mode), **options)
    images.prepare(whole, config)  # the complete file is a record
    cut = whole[: int(len(whole) * fraction)] + b"\xff\xd9"
    with pytest.raises(UnusableImage) as caught:
        images.prepare(cut, config)
    assert caught.value.reason == "truncated"


def test_a_jpeg_cut_just_after_the_ff_of_a_stuffed_byte_is_truncated(photo):
    whole = _jpeg(photo)
    scan = whole.index(b"\xff\xda")
    stuffed = whole.index(b"\xff\x00", scan + len(whole) // 3)
    with pytest.raises(UnusableImage) as caught:
        images.prepare(whole[: stuffed + 1] + b"\xff\xd9", JPEG)  # ends FF FF D9
    assert caught.value.reason == "truncated"


@pytest.mark.parametrize("options", [{}, {"progressive": True}])
def test_a_complete_jpeg_whose_corner_is_mid_grey_is_a_record(photo, options):
    # libjpeg's fill colour in the corner raises the suspicion; the probe decode clears it.
    pixels = np.array(photo)
    pixels[-200:, -300:] = 128
    data = _jpeg(Image.fromarray(pixels), **options)
    for config in (JPEG, BuildConfig(input_size=512, image_format="raw")):
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.draft("RGB", (config.input_size, config.input_size))
            assert decoded.getpixel((decoded.width - 1, decoded.height - 1)) == (128, 128, 128)
        images.prepare(data, config)


def test_the_checked_in_photos_are_not_taken_for_cut_files():
    for path in sorted(FIXTURE_IMAGES.rglob("*")):
        if path.is_file() and "99--Broken" not in str(path):
            for config in (JPEG, BuildConfig(input_size=512), BuildConfig(input_size=64, image_format="raw")):
                images.prepare(path.read_bytes(), config)


def test_a_long_run_of_fill_bytes_is_walked_in_linear_time():
    # Fill bytes (0xFF) may precede any marker; a progressive JPEG with 2 MB of them in its first
    # scan decodes to the same pixels. The scan walk once took quadratic time over such a run
    # (37 s of CPU, holding the GIL, for 96,000 of them): one valid file could stall a build.
    import subprocess
    import sys

    code = """
import io, sys, numpy as np
from PIL import Image
from pipeline import images
from reader.core.config import BuildConfig
out = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "JPEG", quality=90, progressive=True)
data = out.getvalue()
sos = data.index(b"\\xff\\xda")
i = data.index(b"\\xff\\x00", sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big"))
padded = data[:i] + b"\\xff" * 2_000_000 + data[i:]
assert images.prepare(padded, BuildConfig()).encoded == images.prepare(data, BuildConfig()).encoded
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # quadratic: hours
