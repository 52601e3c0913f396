"""Progress of a build: images done of the split's total, the rate, the time left.

The shard writers of one process share one `Progress` per build (they run on several threads).
On a terminal it is a bar redrawn in place on stderr; otherwise (logs, a Dataflow worker) a line
every LOG_EVERY_S seconds, and one at the end. Worker processes each count their own images:
with one worker per process (the default local runner) that is the whole build; with several,
each line says it speaks for one process. On Dataflow the same counts are Beam counters
(`records`, `errors`) in the job's page.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

_LOG = logging.getLogger(__name__)
LOG_EVERY_S = 15.0
DRAW_EVERY_S = 0.2
BAR_WIDTH = 28


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts images done of `total`; shows them as a bar (`stream` a terminal) or as log lines.

    clock: seconds, monotonic (a parameter so that tests can drive it).
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 share: str = ""):  # fmt: skip
        self.label, self.total, self.share = label, total, share
        self._stream = stream if stream is not None else sys.stderr
        self._bar = bool(getattr(self._stream, "isatty", lambda: False)())
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._shown = self._start
        self.done = 0
        self._ended = False

    @property
    def is_bar(self) -> bool:
        """True when drawn in place on a terminal (other lines would break it)."""
        return self._bar

    def line(self) -> str:
        """`val: 1,234/3,226 images (38%), 205/s, 0:10 left`."""
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = f" {self.share}" if self.share else ""
        eta = "" if self.done >= self.total else (f", {_duration(left)} left" if left != float("inf") else "")
        percent = 100 * self.done // self.total if self.total else 100
        return f"{self.label}: {self.done:,}/{self.total:,} images{share} ({percent}%), {rate:,.0f}/s{eta}"

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = self._clock()
            finished = self.done >= self.total
            if self._bar:
                if finished or now - self._shown >= DRAW_EVERY_S:
                    self._shown = now
                    self._draw(finished)
            elif finished or now - self._shown >= LOG_EVERY_S:
                self._shown = now
                if finished:
                    self._ended = True
                _LOG.info("%s", self.line())

    def _draw(self, finished: bool) -> None:
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        self._stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.line()}\033[K")
        if finished and not self._ended:
            self._stream.write("\n")
            self._ended = True
        self._stream.flush()


_PER_BUILD: dict[str, Progress] = {}
_REGISTRY_LOCK = threading.Lock()


def for_build(build: str, split: str, total: int, share: str = "") -> Progress:
    """The one Progress of `build` in this process (shard writers on every thread share it)."""
    with _REGISTRY_LOCK:
        progress = _PER_BUILD.get(build)
        if progress is None:
            progress = _PER_BUILD[build] = Progress(split, total, share=share)
        return progress
