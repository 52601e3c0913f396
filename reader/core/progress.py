"""Progress of long work, shown one way everywhere (the build, sample rendering, the checker):

    rendering: 1,234/3,226 images (38%), 41.2/s, 0:48 left

On a terminal it is a bar redrawn in place and ended by a newline; anywhere else (a log file, a
pipe, a Dataflow worker) it is that line at the start, every `interval` seconds, and at the end
(`..., 1:21 in all`), written to a stream or to a logger. Safe to call from several threads.
No TensorFlow, no Beam: every part of facegrid uses it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

ETA_AFTER = 5.0  # seconds of work, from the first unit done, before under 1% of it estimates the time left


def duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Work done of `total`, shown as it goes. Call it with (done, total), or `advance(n)`.

    label, unit: `{label}: {done}/{total} {unit}{share}`; share: what part of the work this
      process sees, when it is not all of it (" in worker process 7"). total None: a part of
      unknown size (`{label}: {done} {unit}{share}, {rate}/s`).
    stream: where the bar or the lines go (a bar only when it is a terminal); with `log`, the
      lines go to that logger at INFO instead (a bar still goes to a terminal stream).
    interval: seconds between lines off a terminal; redraw: between redraws of the bar.
    clock: seconds, monotonic (a parameter so that tests can drive it).
    """

    def __init__(self, label: str, total: int | None = 0, *, unit: str = "images", share: str = "", stream: TextIO | None = None,
                 log: logging.Logger | None = None, interval: float = 15.0, redraw: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, width: int = 28):  # fmt: skip
        self.label, self.total, self.unit, self.share = label, total, unit, share
        self._stream, self._log, self._clock, self._width = stream, log, clock, width
        self._bar = stream is not None and bool(getattr(stream, "isatty", lambda: False)())
        self._every = redraw if self._bar else interval
        self._lock = threading.Lock()
        self._start = self._shown = clock()
        self.done = 0
        self._first: float | None = None  # when the first unit was done
        self._first_done = 0
        self._started = self._ended = False

    @property
    def is_bar(self) -> bool:
        """True when drawn in place on a terminal (other lines written meanwhile would break it)."""
        return self._bar

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        elapsed = now - self._start
        rate = self.done / elapsed if self.done and elapsed > 0 else None
        if self.total is None:
            return f"{self.label}: {self.done:,} {self.unit}{self.share}" + (f", {rate:,.1f}/s" if rate else "")
        percent = min(100, 100 * self.done // self.total) if self.total else 100  # a retried bundle counts twice
        text = f"{self.label}: {self.done:,}/{self.total:,} {self.unit}{self.share} ({percent}%)"
        if rate:
            text += f", {rate:,.1f}/s"
            if self.done >= self.total:
                text += f", {duration(elapsed)} in all"
            elif self.done * 100 >= self.total or (self._first is not None and now - self._first >= ETA_AFTER):
                # The first units alone, after a slow start (imports, worker processes), say little;
                # the time left comes from the pace since the first one.
                since, done_then = (now - self._first, self._first_done) if self._first is not None else (0, 0)
                pace = (self.done - done_then) / since if since > 0 and self.done > done_then else rate
                text += f", {duration((self.total - self.done) / pace)} left"
        return text

    def __call__(self, done: int, total: int | None = None) -> None:
        with self._lock:
            if total is not None:
                self.total = total
            self.done = done
            self._show()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            self._show()

    def _show(self) -> None:
        now = self._clock()
        if self._first is None and self.done:
            self._first, self._first_done = now, self.done
        finished = self.total is not None and self.done >= self.total
        if self._ended or not (finished or not self._started or now - self._shown >= self._every):
            return
        self._started, self._shown, self._ended = True, now, finished
        if self._bar:
            filled = min(self._width, self._width * self.done // self.total) if self.total else self._width
            self._stream.write(
                f"\r[{'#' * filled}{'.' * (self._width - filled)}] {self.line(now)}\033[K" + ("\n" if finished else "")
            )
            self._stream.flush()
        elif self._log is not None:
            self._log.info("%s", self.line(now))
        elif self._stream is not None:
            self._stream.write(self.line(now) + "\n")
            self._stream.flush()
