"""Issue 2's figures: the Beam build against the single-process loop, and its peak memory.

Both run as fresh processes, start-up included, over the same generated images; the Beam
build runs as a user runs it (`python -m pipeline`, default runner: multi_processing, one
worker per core).
"""

from __future__ import annotations

import shutil
import sys

from benchmarks.data import BenchData
from benchmarks.measure import Measurement, measure

NUM_SHARDS = 8


def beam_command(annotations: str, images_dir: str, output_dir: str, split: str, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", f"--annotations={annotations}", f"--images_dir={images_dir}",
        f"--output_dir={output_dir}", f"--split={split}", f"--num_shards={NUM_SHARDS}", *flags,
    ]


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def run(data: BenchData, work_dir: str, train: tuple[str, str] | None = None) -> dict:
    """Times the val build both ways (writing data.shards_jpeg and data.shards_raw as it goes);
    with `train` = (annotations, images_dir), also the train build's peak memory."""
    loop = measure(
        [sys.executable, "-m", "benchmarks.build_loop", data.annotations, data.images_dir, _fresh(f"{work_dir}/loop_shards"), "val", str(NUM_SHARDS)],
        log_path=f"{work_dir}/build_loop.log",
    )
    beam = measure(beam_command(data.annotations, data.images_dir, _fresh(data.shards_jpeg), "val"), log_path=f"{work_dir}/build_val.log")
    measure(beam_command(data.annotations, data.images_dir, _fresh(data.shards_raw), "val", "--image_format=raw"), log_path=f"{work_dir}/build_val_raw.log")
    figures = {
        "images": 3226,
        "loop_seconds": loop.seconds,
        "beam_seconds": beam.seconds,
        "beam_speedup": loop.seconds / beam.seconds,
        "loop_peak_mb": loop.peak_total_mb,
        "beam_val_peak_total_mb": beam.peak_total_mb,
        "beam_val_peak_process_mb": beam.peak_process_mb,
    }
    if train is not None:
        big: Measurement = measure(
            beam_command(train[0], train[1], _fresh(f"{work_dir}/train_shards"), "train"), log_path=f"{work_dir}/build_train.log"
        )
        figures.update(
            train_images=12880,
            beam_train_seconds=big.seconds,
            beam_train_peak_total_mb=big.peak_total_mb,
            beam_train_peak_process_mb=big.peak_process_mb,
            memory_growth=big.peak_total_mb / beam.peak_total_mb,
        )
    return figures
