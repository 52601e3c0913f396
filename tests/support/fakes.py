"""Stand-ins the tests drive by hand: a clock and a stream that says it is a terminal (progress),
and a model that guesses the same grid for every image (evaluation)."""

import io

import numpy as np


class Clock:
    """A monotonic clock the test moves by setting `now`."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class GuessingModel:
    """Predicts a 0.3 x 0.3 box centred in every cell of a 7 x 7 grid, objectness falling along
    the cells: detections at every score, the same for every image."""

    def predict_on_batch(self, images):
        grid = np.zeros((len(images), 7, 7, 5), np.float32)
        grid[..., :4] = (0.3, 0.3, 0.5, 0.5)
        grid[..., 4] = np.linspace(0.9, 0.05, 49, dtype=np.float32).reshape(7, 7)
        return grid
