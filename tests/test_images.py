import io
import os
import shutil
import stat
import struct
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from pipeline import images
from pipeline.images import UnusableImage
from reader.core.config import BuildConfig
from tests.conftest import FIXTURE_IMAGES

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


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from pipeline.sample import synthetic

    return synthetic.photo(synthetic.no_faces(), 683, np.random.default_rng(1))


def _jpeg(im: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90, **options)
    return out.getvalue()


@pytest.mark.parametrize("config", [JPEG, BuildConfig(input_size=512, image_format="raw")], ids=["224 (1/4 scale)", "512 (1/2 scale)"])
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


# --- The pixel budget: memory of images in flight is bounded (issue 10) ---------------------


def test_the_budget_never_holds_more_than_its_capacity_under_many_threads():
    budget = images.PixelBudget(1000)
    rng = np.random.default_rng(0)
    sizes = rng.integers(50, 700, 200).tolist()
    over = []

    def work(pixels):
        with budget.hold(pixels):
            if budget.in_use > budget.capacity:
                over.append(budget.in_use)
            time.sleep(0.0005)

    threads = [threading.Thread(target=lambda chunk=sizes[i::16]: [work(p) for p in chunk]) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not over and budget.in_use == 0
    assert max(sizes) <= budget.high_water <= 1000


def test_an_image_larger_than_the_whole_budget_proceeds_alone_and_waits_its_turn():
    budget = images.PixelBudget(1000)
    with budget.hold(5000):  # alone: admitted at once
        assert budget.in_use == 5000
    small_held, big_done, release = threading.Event(), threading.Event(), threading.Event()

    def small():
        with budget.hold(10):
            small_held.set()
            release.wait(5)

    def big():
        with budget.hold(5000):
            assert budget.in_use == 5000  # nothing else held at the same time
        big_done.set()

    threading.Thread(target=small).start()
    assert small_held.wait(5)
    threading.Thread(target=big).start()
    assert not big_done.wait(0.2)  # waits while the small one is held
    release.set()
    assert big_done.wait(5) and budget.in_use == 0 and budget.high_water == 5000


def test_the_budget_admits_in_arrival_order_so_a_big_image_is_not_starved():
    budget = images.PixelBudget(100)
    order = []
    first = threading.Event()

    def hold(name, pixels, pause):
        with budget.hold(pixels):
            order.append(name)
            first.set()
            time.sleep(pause)

    holder = threading.Thread(target=hold, args=("small-1", 60, 0.2))
    holder.start()
    assert first.wait(5)
    big = threading.Thread(target=hold, args=("big", 90, 0))
    big.start()
    time.sleep(0.05)  # big is waiting at the head of the line
    late = threading.Thread(target=hold, args=("small-2", 30, 0))  # would fit now, but comes later
    late.start()
    for thread in (holder, big, late):
        thread.join(5)
    assert order == ["small-1", "big", "small-2"]


def test_a_wait_that_is_interrupted_gives_up_its_turn(monkeypatch):
    budget = images.PixelBudget(100)

    def interrupted(predicate, timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(budget._changed, "wait_for", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with budget.hold(10):
            pass
    monkeypatch.undo()
    with budget.hold(10):  # the line is not stuck behind the interrupted waiter
        assert budget.in_use == 10
    assert budget.in_use == 0


def test_prepare_holds_the_budget_for_the_decoded_size_after_draft():
    budget = images.PixelBudget()
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1536, 2048, 3), dtype=np.uint8))
    images.prepare(_jpeg(big), JPEG, budget)
    assert budget.high_water == 512 * 384 and budget.in_use == 0  # decoded at 1/4 scale
    budget.reset_high_water()
    out = io.BytesIO()
    big.save(out, format="PNG", compress_level=1)
    images.prepare(out.getvalue(), JPEG, budget)
    assert budget.high_water == 2048 * 1536 and budget.in_use == 0  # no draft for PNG


def test_many_threads_preparing_big_images_stay_within_the_budget():
    import concurrent.futures

    ramp = np.linspace(0, 255, 1500, dtype=np.float32)
    out = io.BytesIO()
    Image.fromarray(np.stack([ramp[:, None] + 0 * ramp[None, :]] * 3, -1).astype(np.uint8)).save(out, format="PNG")
    data = out.getvalue()  # 1500 x 1500: 2.25 Mpx each
    budget = images.PixelBudget(5_000_000)  # room for two at a time, not three
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: images.prepare(data, RAW, budget), range(16)))
    assert len(results) == 16 and budget.in_use == 0
    assert 1500 * 1500 <= budget.high_water <= 2 * 1500 * 1500


def test_the_budget_is_handed_back_when_an_image_is_unusable(photo):
    budget = images.PixelBudget()
    whole = _jpeg(photo)
    for data in (whole[: len(whole) // 2] + b"\xff\xd9", whole[: len(whole) // 2]):
        with pytest.raises(UnusableImage):
            images.prepare(data, JPEG, budget)
        assert budget.in_use == 0


def test_the_default_budget_is_process_wide_and_settable():
    assert images.PIXEL_BUDGET.capacity == images.DEFAULT_PIXEL_BUDGET == 64 * 2**20
    budget = images.PixelBudget(10)
    budget.set_capacity(20)
    assert budget.capacity == 20
    with pytest.raises(ValueError, match="the pixel budget must be >= 1 pixel, got 0"):
        budget.set_capacity(0)


# --- Reading sources: confined to the images directory, regular files only (issue 10) ------
# (pipeline/sources.py; these would sit in tests/test_sources.py)

from pipeline import sources  # noqa: E402


@pytest.fixture
def tree(tmp_path):
    """images/ with a photo, and outside/ beside it with a photo and a private text file."""
    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "event").mkdir(parents=True)
    outside.mkdir()
    photo = _fixture("0--Parade/0_Parade_rgb_1.jpg")
    (root / "event" / "a.jpg").write_bytes(photo)
    (outside / "photo.jpg").write_bytes(photo)
    (outside / "private.txt").write_bytes(b"PRIVATE-KEY 1234 do not leak")
    return root, outside, photo


def _reason(images_dir, filename, **kwargs) -> str:
    with pytest.raises(UnusableImage) as caught:
        sources.read_source(str(images_dir), filename, **kwargs)
    return caught.value


def _read_in_thread(images_dir, filename, seconds=5.0):
    """read_source in a daemon thread: a FIFO that blocks fails the test instead of hanging it."""
    result = {}

    def run():
        try:
            result["value"] = sources.read_source(str(images_dir), filename)
        except UnusableImage as e:
            result["value"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"read_source blocked on {filename}"
    return result["value"]


def test_a_file_inside_is_read_whole(tree):
    root, _, photo = tree
    assert sources.read_source(str(root), "event/a.jpg") == photo
    assert sources.read_source(f"file://{root}", "event/./a.jpg") == photo


def test_a_fifo_named_jpg_is_refused_without_blocking(tree):
    root, _, _ = tree
    os.mkfifo(root / "event" / "fifo.jpg")
    error = _read_in_thread(root, "event/fifo.jpg")
    assert isinstance(error, UnusableImage) and error.reason == "not_a_regular_file" and "FIFO" in error.detail


def test_a_fifo_swapped_in_after_the_check_is_refused_on_the_descriptor(tree, monkeypatch):
    # The path is looked at first, then opened (O_NONBLOCK) and checked again on the descriptor.
    root, _, _ = tree
    os.mkfifo(root / "event" / "fifo.jpg")
    regular = os.stat(root / "event" / "a.jpg")

    def before_the_swap(real):
        return lambda path, *args, **kwargs: regular if str(path).endswith("fifo.jpg") else real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", before_the_swap(os.stat))
    monkeypatch.setattr(os, "lstat", before_the_swap(os.lstat))
    error = _read_in_thread(root, "event/fifo.jpg")
    assert isinstance(error, UnusableImage) and error.reason == "not_a_regular_file"


def test_directories_sockets_and_devices_are_refused(tree):
    import socket

    root, _, _ = tree
    (root / "event" / "dir.jpg").mkdir()
    assert _reason(root, "event/dir.jpg").reason == "not_a_regular_file"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "event" / "socket.jpg"))
        assert _reason(root, "event/socket.jpg").reason == "not_a_regular_file"
    try:
        os.mknod(root / "event" / "zero.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert _reason(root, "event/zero.jpg").reason == "not_a_regular_file"


def test_links_that_stay_inside_are_followed(tree):
    root, _, photo = tree
    os.symlink("a.jpg", root / "event" / "link.jpg")
    os.symlink("event", root / "alias")
    assert sources.read_source(str(root), "event/link.jpg") == photo
    assert sources.read_source(str(root), "alias/a.jpg") == photo
    assert sources.read_source(str(root), "alias/link.jpg") == photo
    os.symlink(root, root.parent / "images_link")  # images_dir itself may be a link
    assert sources.read_source(str(root.parent / "images_link"), "event/a.jpg") == photo


@pytest.mark.parametrize(
    "link, target, filename",
    [
        ("event/out.jpg", "../../outside/photo.jpg", "event/out.jpg"),
        ("event/private.jpg", "../../outside/private.txt", "event/private.jpg"),
        ("event/absolute.jpg", "ABSOLUTE/private.txt", "event/absolute.jpg"),
        ("event/outdir", "../../outside", "event/outdir/private.txt"),  # a directory on the way
        ("event/dangling_out.jpg", "../../outside/none.jpg", "event/dangling_out.jpg"),
    ],
)
def test_links_that_lead_out_are_refused_and_quote_nothing_of_the_outside(tree, link, target, filename):
    root, outside, _ = tree
    os.symlink(target.replace("ABSOLUTE", str(outside)), root / link)
    error = _reason(root, filename)
    assert error.reason == "path_escapes_images_dir"
    assert "PRIVATE" not in str(error) and "outside" not in str(error)  # neither its bytes nor where it leads


def test_a_directory_swapped_for_an_outward_link_is_caught_on_the_descriptor(tree, monkeypatch):
    # realpath sees no link (as if the swap came after it); the kernel's view of the open file
    # (/proc/self/fd) does.
    root, _, _ = tree
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd here")
    os.symlink("../outside", root / "swapped")
    real_realpath = os.path.realpath

    def realpath_before_the_swap(path, *args, **kwargs):
        return os.path.normpath(path) if "swapped" in str(path) else real_realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", realpath_before_the_swap)
    assert _reason(root, "swapped/photo.jpg").reason == "path_escapes_images_dir"


def test_paths_below_the_images_dir_resolve_as_realpath_resolves_them(tree):
    # sources resolves the images directory once and walks only the components below it,
    # handing to realpath wherever one is a link or missing: the answer must be realpath's.
    root, outside, _ = tree
    os.symlink("a.jpg", root / "event" / "link.jpg")
    os.symlink("event", root / "alias")
    os.symlink("../../outside", root / "event" / "outdir")
    os.symlink("none.jpg", root / "event" / "dangling.jpg")
    os.symlink("loop_b", root / "event" / "loop_a")
    os.symlink("loop_a", root / "event" / "loop_b")
    resolved_root = os.path.realpath(root)
    for relative in ("event/a.jpg", "event/link.jpg", "alias/a.jpg", "alias/link.jpg", "event/outdir/photo.jpg",
                     "event/dangling.jpg", "event/none.jpg", "none/a.jpg", "event/a.jpg/x.jpg", "alias/outdir/photo.jpg", "event/loop_a"):
        resolved, status = sources._resolve(resolved_root, relative)
        assert resolved == os.path.realpath(os.path.join(resolved_root, relative)), relative
        assert status is None or status == os.stat(resolved), relative  # when given, the file's own status


def test_an_images_dir_that_names_another_directory_later_is_resolved_again(tmp_path, monkeypatch):
    # A long-lived process (a notebook, in-process builds) may build from `images` -> v1, then
    # from `images` -> v2, or from a relative path in another working directory.
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "a.jpg").write_bytes(version.encode())
    os.symlink("v1", tmp_path / "images")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v1"
    os.unlink(tmp_path / "images")
    os.symlink("v2", tmp_path / "images")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v2"
    shutil.rmtree(tmp_path / "v1")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v2"
    monkeypatch.chdir(tmp_path)
    assert sources.read_source("v2", "a.jpg") == b"v2"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "v2").mkdir()
    (tmp_path / "w" / "v2" / "a.jpg").write_bytes(b"w")
    monkeypatch.chdir(tmp_path / "w")
    assert sources.read_source("v2", "a.jpg") == b"w"


def test_the_path_gate_comes_before_the_disk(tree, monkeypatch):
    root, _, _ = tree
    real_open = os.open

    def no_open_under_root(path, *args, **kwargs):
        assert not str(path).startswith(str(root.parent)), f"opened {path}"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_open_under_root)
    for filename in ("../outside/photo.jpg", "/etc/passwd", "gs://bucket/a.jpg", "a\\..\\..\\x.jpg"):
        assert _reason(root, filename).reason == "path_escapes_images_dir"


def test_missing_dangling_looping_and_empty_files(tree):
    root, _, _ = tree
    assert _reason(root, "event/none.jpg").reason == "missing"
    assert _reason(root, "event/a.jpg/x.jpg").reason == "missing"
    os.symlink("none.jpg", root / "event" / "dangling.jpg")
    assert _reason(root, "event/dangling.jpg").reason == "missing"
    os.symlink("loop_b", root / "event" / "loop_a")
    os.symlink("loop_a", root / "event" / "loop_b")
    assert _reason(root, "event/loop_a").reason == "unreadable"
    (root / "event" / "empty.jpg").write_bytes(b"")
    assert sources.read_source(str(root), "event/empty.jpg") == b""


def test_a_file_over_the_size_cap_is_refused(tree, monkeypatch):
    root, _, photo = tree
    error = _reason(root, "event/a.jpg", max_bytes=len(photo) - 1)
    assert error.reason == "file_too_large" and str(len(photo)) in error.detail
    assert sources.MAX_SOURCE_BYTES == 256 * 2**20


def test_a_file_that_grows_past_the_cap_while_read_is_refused(tree, monkeypatch):
    root, _, photo = tree
    real_read, opened = os.read, []
    real_open = os.open

    def open_recording(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith("a.jpg"):
            opened.append(fd)
        return fd

    def growing(fd, n):
        return real_read(fd, n) or (b"more" if fd in opened else b"")  # the photo never ends

    monkeypatch.setattr(os, "open", open_recording)
    monkeypatch.setattr(os, "read", growing)
    assert _reason(root, "event/a.jpg", max_bytes=len(photo) + 100).reason == "file_too_large"


def test_remote_images_are_read_through_the_storage_layer():
    """On moto's S3 server: one ranged read an image, the same reasons as on local disk."""
    from reader.core import storage
    from tests import cloud_fixtures

    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket="images")
        server.client.put_object(Bucket="images", Key="event/a.jpg", Body=b"JPEG bytes")
        server.client.put_object(Bucket="images", Key="event/empty.jpg", Body=b"")
        previous = storage.configure_s3(
            storage.S3Settings(server.endpoint, cloud_fixtures.S3_REGION, cloud_fixtures.S3_KEY_ID, cloud_fixtures.S3_SECRET)
        )
        try:
            assert sources.read_source("s3://images", "event/a.jpg") == b"JPEG bytes"
            assert sources.read_source("s3://images", "event/empty.jpg") == b""
            assert _reason("s3://images", "event/none.jpg").reason == "missing"
            assert _reason("s3://images", "event/a.jpg", max_bytes=4).reason == "file_too_large"
            assert _reason("s3://images", "../a.jpg").reason == "path_escapes_images_dir"
            with pytest.raises(storage.StorageError, match=r"^s3://no-such-bucket/event/a.jpg: cannot read: NoSuchBucket"):
                sources.read_source("s3://no-such-bucket", "event/a.jpg")  # the store's fault, not the image's
        finally:
            storage.configure_s3(previous)


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
