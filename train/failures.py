"""How `python -m train` and `python -m train.predict` report a run that failed on its data: one
line, no traceback. UnusableData and its kinds are the mistakes a run refuses before it starts.

The readers fail with one line naming the shard and record (reader.data): a ValueError or an
OSError when the dataset is made (a shard of another size, missing, unreadable), and inside a
running step as TensorFlow's InvalidArgumentError, whose message wraps that line in graph
details. `one_line` recovers it.
"""

from __future__ import annotations

import re


class UnusableData(ValueError):
    """Shards (or an output_dir) this run cannot use as asked: a mistake to correct, not a fault."""


class BuildMismatch(UnusableData):
    """Shards the model cannot train on: train and val built differently, or another grid."""


class RunMismatch(UnusableData):
    """An output_dir whose run cannot resume on the shards of data_dir (another input size)."""


def data_errors() -> tuple[type[BaseException], ...]:
    """What reading shards raises when they are damaged or gone (TensorFlow imported here)."""
    import tensorflow as tf

    return ValueError, OSError, tf.errors.OpError


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\](?:\s*\[\[|\s*$)", re.S)


def one_line(error: BaseException) -> str:
    """The line that says what went wrong: a reader's message as it wrote it, without what
    TensorFlow wraps around it."""
    text = getattr(error, "message", None) or str(error)
    found = _ASSERTION.search(text)
    if found:
        text = found.group(1)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    return first.replace('\\"', '"')
