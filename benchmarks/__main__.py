"""`make bench`: every benchmark figure of BENCHMARKS.md, measured in one run on this machine.

    python -m benchmarks --work_dir=build/bench [--train_memory] [--parts=build,read,read_s3,records,check,incremental,dask,feed,concurrent]
        [--incremental_splits=val,train] [--concurrent_runs=20] [--concurrent_burners=2]

Generates photo-like images for the real WIDER val annotation file (3,226 images; and for the
train file, 12,880, with --train_memory), builds them, then times the build, the readers (and
make_dataset on s3:// against local disk, benchmarks/read_s3.py; ShardRecords through a PyTorch
DataLoader against the 2-process decode limit, benchmarks/records.py) and the checker, an incremental rebuild of an edited val file against a clean one (train's too,
with --incremental_splits=val,train), the val build on a 2-worker local Dask cluster against the
local build (benchmarks/dask_build.py), training steps per second fed by make_dataset against
batches in memory (benchmarks/feed.py, its small CPU setting, on the val build), and runs two
builds of one split at once many times (benchmarks.concurrent_builds: how many runs broke the
contract); with --parts=...,learn, the learning benchmark (benchmarks/learn.py). Prints a Markdown report and
writes WORK_DIR/results.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys

from absl import flags

from benchmarks.data import WIDER_SPLIT, BenchData


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("work_dir", "build/bench", "Where generated images, shards and results go.", flag_values=fv)
    flags.DEFINE_string("split_dir", str(WIDER_SPLIT), "Folder of the real WIDER annotation files.", flag_values=fv)
    flags.DEFINE_bool("train_memory", True, "Also build the train file (12,880 images) to compare peak memory.", flag_values=fv)
    flags.DEFINE_list(
        "parts",
        ["build", "read", "read_s3", "records", "check", "incremental", "dask", "feed", "concurrent"],
        "Benchmarks to run.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "incremental_splits",
        ["val"],
        "Splits the incremental part edits and rebuilds: val, train (renders its 12,880 images).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "concurrent_runs", 20, "Runs of two builds at once (the concurrent part).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer(
        "concurrent_burners", 2, "CPU-bound processes running meanwhile (the concurrent part).", lower_bound=0, flag_values=fv
    )


def main(argv: list[str]) -> int:
    fv = flags.FlagValues()
    _define(fv)
    fv(argv)
    from pipeline.sample import render_images

    work = os.path.abspath(fv.work_dir)
    os.makedirs(work, exist_ok=True)
    val = str(pathlib.Path(fv.split_dir) / "wider_face_val_bbx_gt.txt")
    data = BenchData(val, f"{work}/val_images", f"{work}/val_shards", f"{work}/val_shards_raw")
    if set(fv.parts) - {"concurrent"}:  # the concurrent part builds the checked-in fixture set
        print(f"rendering images for {val} into {data.images_dir} (skips existing files)", flush=True)
        render_images(val, data.images_dir)
    train = None
    train_memory = fv.train_memory and "build" in fv.parts
    if train_memory or ("incremental" in fv.parts and "train" in fv.incremental_splits):
        train_file = str(pathlib.Path(fv.split_dir) / "wider_face_train_bbx_gt.txt")
        print(f"rendering images for {train_file} (skips existing files)", flush=True)
        render_images(train_file, f"{work}/train_images")
        train = (train_file, f"{work}/train_images") if train_memory else None

    results = {"machine": machine()}
    if "build" in fv.parts:
        from benchmarks import build

        results["build"] = build.run(data, work, train)
        print(json.dumps(results["build"], indent=2), flush=True)
    if "read" in fv.parts:
        from benchmarks import read

        results["read"] = read.run(data)
    if "read_s3" in fv.parts:
        from benchmarks import read_s3

        results["read_s3"] = read_s3.run(data.shards_jpeg)
    if "records" in fv.parts:
        from benchmarks import records

        results["records"] = records.run(data)
    if "check" in fv.parts:
        from benchmarks import check

        results["check"] = check.run(data)
    if "incremental" in fv.parts:
        from benchmarks import incremental

        results["incremental"] = incremental.run_splits(fv.incremental_splits, fv.split_dir, work)
    if "dask" in fv.parts:
        from benchmarks import dask_build

        results["dask"] = dask_build.run(data, work)
        print(json.dumps(results["dask"], indent=2), flush=True)
    if "learn" in fv.parts:  # not by default: minutes of training (benchmarks/learn.py)
        from benchmarks import learn

        metrics = learn.learn(f"{work}/learn", **learn.DEFAULTS)
        results["learn"] = {"summary": learn.summary(metrics), "curve": learn.curve(metrics)}
        print(results["learn"]["curve"], results["learn"]["summary"], sep="\n", flush=True)
    if "feed" in fv.parts:
        from benchmarks import feed

        results["feed"] = feed.run(data.shards_jpeg, feed.CPU_SETTINGS)
        print(results["feed"]["line"], flush=True)
    if "concurrent" in fv.parts:
        from benchmarks import concurrent_builds

        results["concurrent"] = concurrent_builds.run(fv.concurrent_runs, f"{work}/concurrent", fv.concurrent_burners)
        print(f"two builds at once: {results['concurrent']['failed']} of {fv.concurrent_runs} runs failed", flush=True)
    pathlib.Path(work, "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nmachine: {results['machine']}\nresults: {work}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
