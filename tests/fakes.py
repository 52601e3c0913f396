"""Stand-ins the progress tests drive by hand: a clock, and a stream that says it is a terminal."""

import io


class Clock:
    """A monotonic clock the test moves by setting `now`."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True
