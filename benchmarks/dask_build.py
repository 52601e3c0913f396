"""Issue 20's figures: the val build on a 2-worker local Dask cluster against the default local build.

Both run as a user runs them, as fresh processes, start-up included, in interleaved rounds
(local, Dask, local, Dask, ...) so that a slow minute of a shared machine hits both; each side's
figure is its best round. The Dask build is `python -m pipeline ... --runner=DaskRunner` with
no scheduler named: Beam's DaskRunner starts a local cluster sized to the machine (on 2 cores:
2 worker processes of 1 thread, which facegrid has Dask fork from the command's process), runs
the build on it and closes it, all inside the timing.

Then where the difference goes: the same build against a cluster already running (`dask
scheduler` and 2 `dask worker` processes, started and waited for outside the timing), once
more while the scheduler records every task it runs (its task stream): time computing, by kind
of task (Beam's ParDos; the GroupByKey's shuffle; Create), moving results between workers, and
deserializing them; and how many tasks ran in all (Beam's DaskRunner computes a side input again
inside every task that reads it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from benchmarks.build import beam_command
from benchmarks.data import BenchData
from benchmarks.measure import Measurement, measure

ROUNDS = 3
ROOT = pathlib.Path(__file__).resolve().parents[1]
DASK = ["--runner=DaskRunner"]


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


@dataclasses.dataclass(frozen=True)
class LoopbackCluster:
    """A Dask cluster of separate processes on 127.0.0.1: its scheduler file, and the processes
    started (the scheduler, then one `dask worker` nanny per worker, each over its worker process)."""

    scheduler_file: str
    processes: list


@contextlib.contextmanager
def running_cluster(work_dir: str, workers: int = 2) -> Iterator[LoopbackCluster]:
    """`dask scheduler` and `workers` single-threaded `dask worker` processes on 127.0.0.1 (each
    worker under its nanny, which restarts it when it dies), importing this checkout; returns
    once every worker has joined. Torn down on exit, logs in a directory under `work_dir`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    root = tempfile.mkdtemp(dir=work_dir, prefix="dask-")
    scheduler_file = f"{root}/scheduler.json"
    dask = str(pathlib.Path(sys.executable).with_name("dask"))  # the `dask` command of this environment
    processes = []

    def start(name: str, *args: str) -> None:
        with open(f"{root}/{name}.log", "wb") as log:
            processes.append(subprocess.Popen([dask, *args], env=env, cwd=root, stdout=log, stderr=log, start_new_session=True))

    try:
        start("scheduler", "scheduler", "--host=127.0.0.1", "--port=0", "--no-dashboard", f"--scheduler-file={scheduler_file}")
        deadline = time.monotonic() + 60
        while not os.path.exists(scheduler_file):
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise RuntimeError(f"the Dask scheduler did not start; see {root}/scheduler.log")
            time.sleep(0.05)
        for i in range(workers):
            start(
                f"worker{i}", "worker", f"--scheduler-file={scheduler_file}", "--host=127.0.0.1", "--nthreads=1", "--nworkers=1",
                "--no-dashboard", "--death-timeout=60", f"--local-directory={root}/worker{i}",
            )  # fmt: skip
        from distributed import Client

        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield LoopbackCluster(scheduler_file, processes)
    finally:
        for process in reversed(processes):  # the nannies take their workers with them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _kind(key) -> str:
    """What a Dask task of Beam's DaskRunner does, from its key."""
    from dask.utils import key_split

    name = key_split(key)
    if name.startswith(("shuffle", "groupby", "partd")):
        return "GroupByKey (shuffle)"
    if name.startswith("from_sequence"):
        return "Create"
    if "apply_dofn_to_bundle" in name or name.startswith("map"):
        return "ParDo"
    return name


def task_stream(scheduler_file: str, command: list[str], log_path: str) -> tuple[float, dict]:
    """Runs `command` (a Dask build against the running cluster) while the scheduler records its
    tasks; returns its wall time and where the workers' time went."""
    from distributed import Client, get_task_stream

    with Client(scheduler_file=scheduler_file, timeout=60) as client, get_task_stream(client) as stream:
        seconds = measure(command, log_path=log_path).seconds
        tasks = stream.data
    by_action: dict[str, float] = collections.defaultdict(float)
    compute_by_kind: dict[str, float] = collections.defaultdict(float)
    count_by_kind: dict[str, int] = collections.Counter()
    for task in tasks:
        kind = _kind(task["key"])
        count_by_kind[kind] += 1
        for span in task.get("startstops", ()):
            took = span["stop"] - span["start"]
            by_action[span["action"]] += took
            if span["action"] == "compute":
                compute_by_kind[kind] += took
    return seconds, {
        "tasks": len(tasks),
        "tasks_by_kind": dict(count_by_kind),
        "seconds_by_action": {k: round(v, 3) for k, v in by_action.items()},
        "compute_seconds_by_kind": {k: round(v, 3) for k, v in compute_by_kind.items()},
    }


def run(data: BenchData, work_dir: str, rounds: int = ROUNDS) -> dict:
    """Times the val build locally and on Dask, then takes the Dask build apart."""
    local_dir, dask_dir = f"{work_dir}/val_shards_local_vs_dask", f"{work_dir}/val_shards_dask"
    locals_, dasks = [], []
    for round_ in range(rounds):
        locals_.append(
            measure(
                beam_command(data.annotations, data.images_dir, _fresh(local_dir), "val"), log_path=f"{work_dir}/dask_local.log"
            )
        )
        dasks.append(
            measure(
                beam_command(data.annotations, data.images_dir, _fresh(dask_dir), "val", *DASK),
                log_path=f"{work_dir}/dask_build.log",
            )
        )
        print(f"dask round {round_ + 1}/{rounds}: local {locals_[-1].seconds:.1f} s, Dask {dasks[-1].seconds:.1f} s", flush=True)
    same = _same_bytes(local_dir, dask_dir)
    local: Measurement = min(locals_, key=lambda m: m.seconds)
    dask: Measurement = min(dasks, key=lambda m: m.seconds)
    import_seconds = _import_seconds()
    with running_cluster(work_dir) as cluster:
        scheduler_file = cluster.scheduler_file
        flags = [*DASK, f"--dask_scheduler_file={scheduler_file}"]
        command = beam_command(data.annotations, data.images_dir, _fresh(dask_dir), "val", *flags)
        warm = []
        for _ in range(2):
            _fresh(dask_dir)
            warm.append(measure(command, log_path=f"{work_dir}/dask_warm.log").seconds)
        streamed_seconds, stream = task_stream(
            scheduler_file,
            beam_command(data.annotations, data.images_dir, _fresh(dask_dir), "val", *flags),
            f"{work_dir}/dask_stream.log",
        )
    return {
        "images": 3226,
        "rounds": rounds,
        "local_seconds_each": [round(m.seconds, 2) for m in locals_],
        "dask_seconds_each": [round(m.seconds, 2) for m in dasks],
        "ratio_each_round": [round(d.seconds / loc.seconds, 3) for loc, d in zip(locals_, dasks)],
        "local_seconds": round(local.seconds, 2),
        "dask_seconds": round(dask.seconds, 2),
        "dask_ratio": round(dask.seconds / local.seconds, 3),
        "local_peak_total_mb": round(local.peak_total_mb),
        "dask_peak_total_mb": round(dask.peak_total_mb),
        "bytes_identical": same,
        "import_dask_runner_seconds": round(import_seconds, 2),
        "dask_warm_cluster_seconds": round(min(warm), 2),
        "dask_warm_ratio": round(min(warm) / local.seconds, 3),
        "dask_streamed_seconds": round(streamed_seconds, 2),
        **stream,
    }


def _import_seconds() -> float:
    """What a command line naming Dask pays to import Beam's DaskRunner (dask.distributed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import apache_beam.runners.dask.dask_runner"], check=True)
    took = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import apache_beam"], check=True)
    return took - (time.perf_counter() - start)


def _same_bytes(a: str, b: str) -> bool:
    """Whether two builds of the same inputs wrote the same shards and errors file."""
    import json

    def built(directory: str) -> dict[str, bytes]:
        manifest = json.loads(pathlib.Path(directory, "val.manifest.json").read_text())
        names = [s["file"] for s in manifest["shards"]] + [manifest["errors_file"]]
        return {n.replace(manifest["build"], "B"): pathlib.Path(directory, n).read_bytes() for n in names}

    return built(a) == built(b)


if __name__ == "__main__":
    import json

    from benchmarks.data import WIDER_SPLIT

    work = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/bench")
    val = str(WIDER_SPLIT / "wider_face_val_bbx_gt.txt")
    from pipeline.sample import render_images

    bench = BenchData(val, f"{work}/val_images", f"{work}/val_shards", f"{work}/val_shards_raw")
    render_images(val, bench.images_dir)
    print(json.dumps(run(bench, work, int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS), indent=2))
