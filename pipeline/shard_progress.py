"""The progress of a build as its shard writers show it: one display per build in a process,
shared by every writer and thread of that process."""

from __future__ import annotations

import logging
import os
import sys
import threading

from pipeline import commit
from reader.core import progress

_LOG = logging.getLogger(__name__)
_PROGRESS: dict[str, progress.Progress] = {}
_PROGRESS_LOCK = threading.Lock()


def progress_of(build: commit.BuildHandle, total: int) -> progress.Progress:
    """The one Progress of `build` in this process, shared by its shard writers on every thread:
    a bar on a terminal, a line in the log every 15 s. A worker process of several sees only its
    own images: it writes lines, never a bar (they would overwrite each other's), of its count
    and rate alone (on Dataflow the counters `records` and `errors` count them all)."""
    with _PROGRESS_LOCK:
        if build.build not in _PROGRESS:
            if build.output.pid == os.getpid():  # the launching process does all the work
                shown = progress.Progress(build.split, total, stream=sys.stderr, log=_LOG)
            else:
                shown = progress.Progress(build.split, None, share=f" in worker process {os.getpid()}", log=_LOG)
            _PROGRESS[build.build] = shown
        return _PROGRESS[build.build]
