import io
import os

import numpy as np
import pytest
from PIL import Image

from pipeline import images
from pipeline.images import ImageConfig, UnusableImage
from tests.conftest import FIXTURE_IMAGES

JPEG = ImageConfig()
RAW = ImageConfig(image_format="raw")


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
    config = ImageConfig(resize="letterbox", image_format="raw")
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
    low = images.prepare(source, ImageConfig(jpeg_quality=30)).encoded
    high = images.prepare(source, ImageConfig(jpeg_quality=95)).encoded
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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 8}, "input_size must be between 16 and 4096, got 8"),
        ({"resize": "crop"}, "resize must be 'stretch' or 'letterbox', got 'crop'"),
        ({"image_format": "png"}, "image_format must be 'jpeg' or 'raw', got 'png'"),
        ({"jpeg_quality": 0}, "jpeg_quality must be between 1 and 100, got 0"),
    ],
)
def test_config_validates_itself(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ImageConfig(**kwargs)
