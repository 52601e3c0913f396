"""Peak memory of the build's worker processes, the figure deploy/README.md sizes Dataflow workers by.

Generates a WIDER-layout sample of 1,024-px JPEGs (pipeline.sample), then builds its train split
three times with `python -m pipeline`, polling every process of the run with psutil:

- `in_memory`: the default local build: one process, runner and SDK worker together, running
  one bundle (one shard) at a time.
- `multi_processing`: Beam's local FnApiRunner with one SDK worker process per worker, each
  running one bundle (one shard) at a time, as one Dataflow SDK process with one bundle does.
- `multi_threading`: one process whose SDK worker runs `--threads` bundles at once, as one
  Dataflow SDK process does with its default 12 harness threads. The runner lives in the same
  process, so this over-counts a Dataflow SDK process slightly.

Every shard writer prepares `--image_threads` images at once (the build's default, 8).

    python deploy/measure_memory.py --work_dir=build/memory [--num_images=400] [--workers=2]
        [--threads=12] [--json=build/memory/memory.json]

Prints one JSON object: per run, the peak resident memory (MB) of each worker process, of the
runner, and of the whole process tree, with wall time and images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

_WORKER_MARK = "sdk_worker_main"  # the module Beam starts each multi_processing worker with


def _sample(work_dir: str, num_images: int):
    from pipeline import sample  # noqa: PLC0415 (only this script needs it)

    source = os.path.join(work_dir, f"source-{num_images}")
    marker = os.path.join(source, ".complete")
    paths = sample.Sample(
        images_dir=os.path.join(source, "images"),
        train_annotations=os.path.join(source, "wider_face_split", "wider_face_train_bbx_gt.txt"),
        val_annotations=os.path.join(source, "wider_face_split", "wider_face_val_bbx_gt.txt"),
    )
    if not os.path.exists(marker):
        paths = sample.write_sample(source, num_images=num_images, seed=0)
        open(marker, "w").close()
    return paths


def _role(process: psutil.Process, root_pid: int) -> str | None:
    """'runner' for the launched build, 'worker' for an SDK worker process, None for the shells
    Beam starts workers through."""
    if process.pid == root_pid:
        return "runner"
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if _WORKER_MARK in cmdline and not cmdline.startswith(("/bin/sh", "sh ")):
        return "worker"
    return None


def measure_build(command: list[str], poll_seconds: float = 0.02) -> dict:
    """Runs `command`; returns peak RSS in MB per role and pid, and the wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peaks: dict[int, tuple[str, int]] = {}
    peak_total = 0
    while process.poll() is None:
        total = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                rss = p.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            role = _role(p, process.pid)
            if role is not None and rss > peaks.get(p.pid, (role, 0))[1]:
                peaks[p.pid] = (role, rss)
        peak_total = max(peak_total, total)
        time.sleep(poll_seconds)
    stderr = process.stderr.read().decode(errors="replace")
    process.wait()
    seconds = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{stderr[-4000:]}")
    mb = 2**20
    workers = sorted(rss / mb for role, rss in peaks.values() if role == "worker")
    runner = max((rss / mb for role, rss in peaks.values() if role == "runner"), default=0.0)
    return {
        "seconds": round(seconds, 1),
        "peak_worker_mb": [round(w, 1) for w in workers],
        "peak_runner_mb": round(runner, 1),
        "peak_tree_mb": round(peak_total / mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--num_images", type=int, default=400, help="sample size; 3/4 of it is the train split")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="multi_processing worker processes")
    parser.add_argument("--threads", type=int, default=12, help="bundles at once in the multi_threading run")
    parser.add_argument("--num_shards", type=int, default=24)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    paths = _sample(args.work_dir, args.num_images)
    with open(paths.train_annotations) as f:
        images = sum(1 for line in f if line.rstrip().lower().endswith((".jpg", ".jpeg", ".png")))
    base = [
        sys.executable, "-m", "pipeline",
        f"--annotations={paths.train_annotations}",
        f"--images_dir={paths.images_dir}",
        "--split=train",
        f"--num_shards={args.num_shards}",
    ]  # fmt: skip
    runs = {
        "in_memory": [],
        "multi_processing": ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"],
        "multi_threading": ["--direct_running_mode=multi_threading", f"--direct_num_workers={args.threads}"],
    }
    result = {"images": images, "image_width_px": 1024, "cpu_count": os.cpu_count(), "runs": {}}
    for name, extra in runs.items():
        output_dir = os.path.join(args.work_dir, f"shards-{args.num_images}-{name}")
        figures = measure_build([*base, f"--output_dir={output_dir}", *extra])
        figures["images_per_second"] = round(images / figures["seconds"], 1)
        figures["flags"] = extra
        result["runs"][name] = figures
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
