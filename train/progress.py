"""What a training run shows while it runs.

On a terminal: Keras' own progress bar (step k/N, loss, time left), redrawn in place. Elsewhere
(a log file, a pipe, a batch job), where a redrawn bar would write a line per update, Keras
prints one line per epoch and `StepLines` adds a line every `interval` seconds with the step,
the loss, the rate and the time left in the epoch. Either way the run says where it starts
(afresh, or resumed after which epoch) and where its TensorBoard logs are (`Reporter.say`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import TextIO

import keras

from reader.core.progress import duration

MODES = ("auto", "bar", "lines")


@dataclasses.dataclass(frozen=True)
class Reporter:
    """How a run reports. mode: "bar" (Keras' progress bar), "lines" (a line every `interval`
    seconds), or "auto": the bar when `stream` is a terminal. stream: None for sys.stdout at the
    time of writing (where Keras writes too, so that the two interleave in order)."""

    mode: str = "auto"
    interval: float = 30.0
    stream: TextIO | None = None

    def __post_init__(self):
        if self.mode not in MODES or not self.interval >= 0:
            raise ValueError(f"progress mode must be one of {MODES} and interval >= 0 s, got {self.mode!r}, {self.interval}")

    @property
    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    @property
    def bar(self) -> bool:
        if self.mode == "auto":
            return bool(getattr(self.out, "isatty", lambda: False)())
        return self.mode == "bar"

    @property
    def keras_verbose(self) -> int:
        """fit's verbose: 1 draws the bar; 2 prints one line per epoch."""
        return 1 if self.bar else 2

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def callbacks(self, batch_size: int) -> list[keras.callbacks.Callback]:
        """The callbacks that show steps when the bar does not."""
        return [] if self.bar else [StepLines(self.out, self.interval, batch_size)]


class StepLines(keras.callbacks.Callback):
    """`epoch 2/10 step 340/805 (42%): loss 0.4123, 1.52 steps/s (24 images/s), 5:05 left in
    the epoch`, printed at the first step of the run (which waits for tracing and compiling),
    then every `interval` seconds, and at the last step of each epoch (validation follows).

    The loss is Keras' running mean over the epoch so far. The rate leaves out each epoch's
    first step, which waits for compiling or for the input pipeline to fill.
    clock: seconds, monotonic (a parameter so that tests can drive it).
    """

    def __init__(self, stream: TextIO, interval: float, batch_size: int, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._stream, self._interval, self._batch_size, self._clock = stream, interval, batch_size, clock
        self._epoch = 0
        self._first: tuple[int, float] | None = None  # (steps, time) at the end of the epoch's first step
        self._shown = clock()
        self._any = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._first = epoch, None

    def on_train_batch_end(self, batch, logs=None):
        now, step = self._clock(), batch + 1
        if self._first is None:
            self._first = (step, now)
        steps = self.params.get("steps") if self.params else None
        last = steps is not None and step >= steps
        if not self._any or last or now - self._shown >= self._interval:
            self._shown, self._any = now, True
            self._stream.write(self.line(step, steps, now, logs or {}) + "\n")
            self._stream.flush()

    def line(self, step: int, steps: int | None, now: float, logs: dict) -> str:
        epochs = self.params.get("epochs") if self.params else None
        text = f"epoch {self._epoch + 1}" + (f"/{epochs}" if epochs else "") + f" step {step:,}"
        if steps:
            text += f"/{steps:,} ({100 * step // steps}%)"
        if "loss" in logs:
            text += f": loss {float(logs['loss']):.4f}"
        first_step, first_time = self._first
        if step > first_step and now > first_time:
            rate = (step - first_step) / (now - first_time)
            text += f", {rate:.2f} steps/s ({rate * self._batch_size:,.0f} images/s)"
            if steps and step < steps:
                text += f", {duration((steps - step) / rate)} left in the epoch"
        if steps and step >= steps:
            text += "; validating"
        return text
