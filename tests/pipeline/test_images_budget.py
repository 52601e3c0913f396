"""The pixel budget (images.PixelBudget): memory of images in flight is bounded (issue 10)."""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline import images
from pipeline.images import UnusableImage
from pipeline.sample import synthetic
from reader.core.config import BuildConfig

JPEG = BuildConfig()
RAW = BuildConfig(image_format="raw")


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
    with pytest.raises(KeyboardInterrupt), budget.hold(10):
        pass
    monkeypatch.undo()
    with budget.hold(10):  # the line is not stuck behind the interrupted waiter
        assert budget.in_use == 10
    assert budget.in_use == 0


def test_prepare_holds_the_budget_for_the_decoded_size_after_draft():
    budget = images.PixelBudget()
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1536, 2048, 3), dtype=np.uint8))
    images.prepare(synthetic.jpeg(big), JPEG, budget)
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
    whole = synthetic.jpeg(photo)
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
