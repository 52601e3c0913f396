"""The checker's task runner: how a split's work is scheduled, none of what it checks.

    default_workers  processes to use when not told: one per core this process may run on
    plan_tasks       shards -> tasks: whole-shard hashes and other splits' keys first, then each
                     shard's records in chunks sized so that every worker stays busy
    run_tasks        tasks -> results as they complete: in this process for small jobs, else in a
                     pool of worker processes (fork when safe, spawn otherwise) that are handed
                     this process's s3 settings; progress counted in records

What a task does is reader.check.shards; what its results mean is reader.check.split.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from reader.check import shards as check_shards
from reader.core import storage
from reader.core.config import BuildConfig

INLINE_BELOW = 256  # records: fewer are checked in this process; worker start-up would cost more
# Records per chunk: at least CHUNK_MIN, so that a task's pickling and file opening stay small
# against its work; at most CHUNK_MAX; else about CHUNKS_PER_WORKER chunks per worker, so that
# workers that drew short chunks take more while a long one runs.
CHUNK_MIN, CHUNK_MAX, CHUNKS_PER_WORKER = 16, 256, 8

Progress = Callable[[int, int], None]  # (records done, records in all)


def default_workers() -> int:
    """Worker processes when the caller does not say: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunk_records(records: int, workers: int) -> int:
    """Records per chunk task, for `records` records in all over `workers` processes."""
    return max(CHUNK_MIN, min(CHUNK_MAX, math.ceil(records / max(1, workers * CHUNKS_PER_WORKER))))


def plan_tasks(
    shards: Sequence[tuple[str, check_shards.ShardIndex]],
    others: Sequence[tuple[str, str, int]],
    config: BuildConfig,
    workers: int,
) -> list[check_shards.Task]:
    """The tasks of one check.

    shards: (path, index) of each shard of the split to hash and whose records to check.
    others: (path, file, records) of each shard of another split, whose keys leakage needs.
    Returns hash tasks, then keys tasks, then record chunks: whole-shard tasks are the longest,
    and started first they do not finish last.
    """
    chunk = chunk_records(sum(len(index.spans) for _, index in shards), workers)
    tasks: list[check_shards.Task] = [check_shards.HashTask(path, index.file) for path, index in shards]
    tasks += [check_shards.KeysTask(path, file, records) for path, file, records in others]
    for path, index in shards:
        tasks += check_shards.chunk_tasks(path, index, config, chunk)
    return tasks


def weight(task_or_result) -> int:
    """Records a task reads, or a result holds: the unit of progress (0 for hashes)."""
    if isinstance(task_or_result, (check_shards.ChunkTask, check_shards.KeysTask)):
        return task_or_result.records
    if isinstance(task_or_result, check_shards.ChunkResult):
        return len(task_or_result.records)
    if isinstance(task_or_result, check_shards.KeysResult):
        return len(task_or_result.keys)
    return 0


def runs_inline(tasks: Sequence[check_shards.Task], workers: int) -> bool:
    """Whether `tasks` are better run in this process than in `workers` worker processes."""
    checked = sum(t.records for t in tasks if isinstance(t, check_shards.ChunkTask))
    return workers <= 1 or checked < INLINE_BELOW or len(tasks) == 1


def run_tasks(tasks: list[check_shards.Task], workers: int, progress: Progress | None) -> Iterator[check_shards.Result]:
    """Runs `tasks` in up to `workers` processes, or inline (runs_inline); yields each result as
    it completes, in no promised order, and calls `progress(records done, records in all)`
    before the first and after each. The pool is stopped when the caller stops iterating."""
    total = sum(weight(t) for t in tasks)
    done = 0
    if progress:
        progress(0, total)
    pool = None if runs_inline(tasks, workers) else _pool(min(workers, len(tasks)))
    results: Iterable = map(check_shards.run_task, tasks) if pool is None else pool.imap_unordered(check_shards.run_task, tasks)
    try:
        for result in results:
            done = min(total, done + weight(result))
            if progress:
                progress(done, total)
            yield result
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _pool(processes: int):
    """A pool of `processes` workers, each configured with this process's s3 settings: spawned
    workers would otherwise start with the defaults, not the endpoint the flags gave."""
    return _start_method().Pool(processes, initializer=storage.configure, initargs=(storage.settings(),))


def _start_method():
    """fork when it is safe, spawn otherwise.

    Forking skips each worker's interpreter start and imports (a third of a second of CPU per
    worker, a fifth of the whole check of the val split), but a forked child inherits every
    lock as it was: only a process with no other thread (no TensorFlow loaded, no test runner
    thread) may fork. Spawned workers import only numpy, Pillow and reader.
    """
    if sys.platform == "linux" and threading.active_count() == 1 and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
