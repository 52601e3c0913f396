"""Issue 2's figures: the Beam build against the single-process loop, and its peak memory.

Both run as fresh processes, start-up included, over the same generated images, in interleaved
rounds (loop, Beam, loop, Beam, ...) so that a slow minute of a shared machine hits both; each
side's figure is its best round (its peak memory too). The Beam build runs as a user runs it (`python -m pipeline`,
default runner: FnApiRunner in_memory, shard writers on threads). One more val build with
Beam's multi_processing mode (one worker process per core) shows what the default saves.
"""

from __future__ import annotations

import os
import shutil
import sys

from benchmarks.data import BenchData
from benchmarks.measure import Measurement, measure

NUM_SHARDS = 8
ROUNDS = 3
MULTI_PROCESSING = ["--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count() or 1}"]


def beam_command(annotations: str, images_dir: str, output_dir: str, split: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        f"--annotations={annotations}",
        f"--images_dir={images_dir}",
        f"--output_dir={output_dir}",
        f"--split={split}",
        f"--num_shards={NUM_SHARDS}",
        *flags,
    ]


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _best(runs: list[Measurement]) -> Measurement:
    return min(runs, key=lambda m: m.seconds)


def run(data: BenchData, work_dir: str, train: tuple[str, str] | None = None, rounds: int = ROUNDS) -> dict:
    """Times the val build both ways (writing data.shards_jpeg and data.shards_raw as it goes);
    with `train` = (annotations, images_dir), also the train build's peak memory."""
    loop_command = [
        sys.executable,
        "-m",
        "benchmarks.build_loop",
        data.annotations,
        data.images_dir,
        f"{work_dir}/loop_shards",
        "val",
        str(NUM_SHARDS),
    ]
    loops, beams = [], []
    for round_ in range(rounds):
        _fresh(f"{work_dir}/loop_shards")
        loops.append(measure(loop_command, log_path=f"{work_dir}/build_loop.log"))
        beams.append(
            measure(
                beam_command(data.annotations, data.images_dir, _fresh(data.shards_jpeg), "val"),
                log_path=f"{work_dir}/build_val.log",
            )
        )
        print(f"build round {round_ + 1}/{rounds}: loop {loops[-1].seconds:.1f} s, Beam {beams[-1].seconds:.1f} s", flush=True)
    processes = measure(
        beam_command(data.annotations, data.images_dir, _fresh(f"{work_dir}/val_shards_mp"), "val", *MULTI_PROCESSING),
        log_path=f"{work_dir}/build_val_mp.log",
    )
    measure(
        beam_command(data.annotations, data.images_dir, _fresh(data.shards_raw), "val", "--image_format=raw"),
        log_path=f"{work_dir}/build_val_raw.log",
    )
    loop, beam = _best(loops), _best(beams)
    figures = {
        "images": 3226,
        "rounds": rounds,
        "loop_seconds_each": [round(m.seconds, 2) for m in loops],
        "beam_seconds_each": [round(m.seconds, 2) for m in beams],
        "speedup_each_round": [round(a.seconds / b.seconds, 3) for a, b in zip(loops, beams)],
        "loop_seconds": loop.seconds,
        "beam_seconds": beam.seconds,
        "beam_speedup": loop.seconds / beam.seconds,
        "loop_peak_mb": loop.peak_total_mb,
        "beam_val_peak_total_mb": beam.peak_total_mb,
        "beam_val_peak_process_mb": beam.peak_process_mb,
        "multi_processing_seconds": processes.seconds,
        "multi_processing_speedup": loop.seconds / processes.seconds,
        "multi_processing_peak_total_mb": processes.peak_total_mb,
    }
    if train is not None:
        big = measure(
            beam_command(train[0], train[1], _fresh(f"{work_dir}/train_shards"), "train"), log_path=f"{work_dir}/build_train.log"
        )
        figures.update(
            train_images=12880,
            beam_train_seconds=big.seconds,
            beam_train_peak_total_mb=big.peak_total_mb,
            beam_train_peak_process_mb=big.peak_process_mb,
            memory_growth=big.peak_total_mb / figures["beam_val_peak_total_mb"],
        )
    return figures
