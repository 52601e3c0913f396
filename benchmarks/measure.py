"""Wall time and peak memory of a command and every process it starts."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import psutil


@dataclasses.dataclass(frozen=True)
class Measurement:
    """seconds: wall time, process start included; peak_total_mb: the highest sum of resident
    memory over the process tree; peak_process_mb: the largest single process seen."""

    seconds: float
    peak_total_mb: float
    peak_process_mb: float


def measure(command: list[str], poll_seconds: float = 0.05, log_path: str | None = None) -> Measurement:
    """Runs `command` to completion, polling its process tree's memory. Raises on failure."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed once the command exits)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    root = psutil.Process(process.pid)
    peak_total = peak_process = 0
    while process.poll() is None:
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            peak_process = max(peak_process, rss)
        peak_total = max(peak_total, total)
        time.sleep(poll_seconds)
    seconds = time.perf_counter() - start
    if log_path:
        log.close()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}" + (f"; see {log_path}" if log_path else ""))
    return Measurement(seconds, peak_total / 2**20, peak_process / 2**20)
