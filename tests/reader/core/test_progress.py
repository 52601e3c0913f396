"""Progress of long work (reader.core.progress): the build's, sample rendering's, the checker's.
Done of all, rate, time left; a bar on a terminal, lines elsewhere, a last line at the end."""

import io
import logging
import re
import subprocess
import sys

from reader.core.progress import Progress, duration
from tests.support.fakes import Clock, Terminal
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES


def test_off_a_terminal_a_line_at_the_start_every_interval_and_at_the_end():
    clock, stream = Clock(), io.StringIO()
    show = Progress("rendering", stream=stream, interval=10, clock=clock)
    show(0, 3226)
    for done in range(1, 3227):
        clock.now += 0.025  # 40 images/s
        show(done, 3226)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "rendering: 0/3,226 images (0%)"
    assert lines[1] == "rendering: 400/3,226 images (12%), 40.0/s, 1:11 left"
    assert lines[-1] == "rendering: 3,226/3,226 images (100%), 40.0/s, 1:21 in all"
    assert len(lines) == 2 + 3226 // 400


def test_on_a_terminal_a_bar_redrawn_in_place():
    clock, stream = Clock(), Terminal()
    show = Progress("train", 4, stream=stream, clock=clock, width=10, share=" in worker process 7")
    for done in range(1, 5):  # one image a second, from threads or not: advance counts
        clock.now = done
        show.advance()
    text = stream.getvalue()
    assert show.is_bar and text.count("\r") == 4 and text.count("\n") == 1
    assert "\r[#####.....] train: 2/4 images in worker process 7 (50%), 1.0/s, 0:02 left\033[K" in text
    assert text.endswith("[##########] train: 4/4 images in worker process 7 (100%), 1.0/s, 0:04 in all\033[K\n")


def test_no_time_left_from_the_first_images_alone():
    """A build's first image done 0.2 s in once said "11:11 left" for an 11-second build."""
    clock, stream = Clock(), io.StringIO()
    show = Progress("val", 3226, stream=stream, interval=15, clock=clock)
    clock.now = 0.21
    show(1)
    clock.now = 5.5
    show(1900)  # not shown (every 15 s), but known: 1% of the work done, the time left is estimated
    assert show.line() == "val: 1,900/3,226 images (58%), 345.5/s, 0:04 left"
    clock.now = 10.9
    show(3226)
    assert stream.getvalue().splitlines() == [
        "val: 1/3,226 images (0%), 4.8/s",
        "val: 3,226/3,226 images (100%), 296.0/s, 0:11 in all",
    ]
    # Rendering started its worker processes for 9 s before the first image: no "18:26:10 left".
    clock, stream = Clock(), io.StringIO()
    show = Progress("rendering", stream=stream, interval=10, clock=clock)
    show(0, 3226)
    clock.now = 9.0
    show(1)
    clock.now = 12.0
    assert show.line() == "rendering: 1/3,226 images (0%), 0.1/s"
    clock.now = 15.0
    show(20)
    # 6 s of work since the first image, 19 more images: the time left from that pace, not from 15 s.
    assert stream.getvalue().splitlines()[1] == "rendering: 20/3,226 images (0%), 1.3/s, 16:52 left"


def test_lines_can_go_to_a_logger(caplog):
    clock = Clock()
    show = Progress("val", 10, unit="records", stream=io.StringIO(), log=logging.getLogger("facegrid.test"), clock=clock)
    with caplog.at_level(logging.INFO, logger="facegrid.test"):
        for _ in range(10):
            clock.now += 0.1
            show.advance()
    assert [r.getMessage() for r in caplog.records] == [
        "val: 1/10 records (10%), 10.0/s, 0:01 left",
        "val: 10/10 records (100%), 10.0/s, 0:01 in all",
    ]


def test_a_part_of_unknown_size_says_its_count_and_rate(caplog):
    clock = Clock()
    show = Progress("val", None, share=" in worker process 7", log=logging.getLogger("facegrid.test"), interval=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="facegrid.test"):
        for _ in range(30):
            clock.now += 0.1
            show.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "val: 1 images in worker process 7, 10.0/s" and len(lines) == 3  # at the start, then every second
    assert all(re.fullmatch(r"val: \d+ images in worker process 7, 10\.0/s", line) for line in lines)


def test_more_done_than_all_never_draws_past_the_end():
    terminal = Terminal()
    show = Progress("val", 2, stream=terminal, width=10, redraw=0)
    show(3, 2)  # a retried bundle counts its images twice
    assert terminal.getvalue().startswith("\r[##########] val: 3/2 images (100%)")


def test_durations():
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0:00", "1:00", "1:01", "1:00:00", "1:02:05"]


def test_a_build_reports_every_image_done(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}",
         f"--output_dir={tmp_path}", "--split=val", "--num_shards=3", "--max_error_fraction=0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INFO val: 16/16 images (100%)" in done.stderr
