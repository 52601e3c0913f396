"""The build's progress: images done of all, rate and time left; a bar on a terminal, log
lines elsewhere, and a last line when every image is done."""

import io
import logging
import subprocess
import sys

from pipeline import progress
from tests.conftest import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_lines_come_every_interval_and_at_the_end(caplog):
    clock = _Clock()
    shown = progress.Progress("val", 1000, stream=io.StringIO(), clock=clock)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        for _ in range(400):
            clock.now += 0.01
            shown.advance()
        clock.now += progress.LOG_EVERY_S
        shown.advance()  # 401 done in 19 s: a line
        for _ in range(599):
            shown.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "val: 401/1,000 images (40%), 21/s, 0:28 left"
    assert lines[-1].startswith("val: 1,000/1,000 images (100%), ") and "left" not in lines[-1]
    assert len(lines) == 2


def test_a_terminal_gets_a_bar_redrawn_in_place():
    clock, terminal = _Clock(), _Terminal()
    shown = progress.Progress("train", 4, stream=terminal, clock=clock, share="in worker process 7")
    for _ in range(4):
        clock.now += 1
        shown.advance()
    drawn = terminal.getvalue()
    assert drawn.count("\r") == 4 and drawn.endswith("\n")
    assert "[##############..............] train: 2/4 images in worker process 7 (50%), 1/s, 0:02 left" in drawn
    assert shown.is_bar


def test_a_build_reports_every_image_done(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}",
         f"--output_dir={tmp_path}", "--split=val", "--num_shards=3", "--max_error_fraction=0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INFO val: 16/16 images (100%)" in done.stderr
