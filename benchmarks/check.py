"""Issue 4's figure: how fast the checker checks the val build (3,226 records; goal >= 1,500/s).

The checker runs as a user runs it, `python -m reader.check --data_dir=... --split=val --json`,
as a fresh process with every core: the figure is records over wall time, interpreter start-up,
worker start-up and every check included. The report's own rate (the check alone, start-up
excluded) is given beside it, and the CPU time of the whole process tree, which says what the
check costs when other work shares the machine. Best and median of a few runs: other load on
the machine only ever slows a run down.

    python -m benchmarks.check --shards_jpeg=DIR [--shards_raw=DIR] [--runs=3]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.data import BenchData

GOAL = 1500  # records/s on the val build
RUNS = 3


def time_check(data_dir: str, split: str = "val", runs: int = RUNS) -> dict:
    """Runs the checker `runs` times on `data_dir`; returns records/s figures. Raises if the
    check does not pass (a benchmark of a failing check would time the wrong thing)."""
    rates, own_rates, seconds, cpu = [], [], [], []
    records = 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "reader.check", f"--data_dir={data_dir}", f"--split={split}", "--json", "--progress=never"],
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(
                f"facegrid-check exited with {done.returncode} on {data_dir}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        report = json.loads(done.stdout)
        records = report["records"]
        seconds.append(elapsed)
        rates.append(records / elapsed)
        own_rates.append(report["records_per_second"])
    return {
        "records": records,
        "runs": runs,
        "seconds_best": round(min(seconds), 3),
        "records_per_second_best": round(max(rates), 1),
        "records_per_second_median": round(statistics.median(rates), 1),
        "check_only_records_per_second_median": round(statistics.median(own_rates), 1),
        "cpu_seconds_median": round(statistics.median(cpu), 3),
        "cores": os.cpu_count(),
        "meets_goal": max(rates) >= GOAL,
    }


def run(data: BenchData, runs: int = RUNS) -> dict:
    """Times the checker on the jpeg and raw val builds; prints and returns the figures."""
    figures = {"goal_records_per_second": GOAL, "jpeg": time_check(data.shards_jpeg, runs=runs)}
    if data.shards_raw:
        figures["raw"] = time_check(data.shards_raw, runs=runs)
    for name in ("jpeg", "raw"):
        if name in figures:
            f = figures[name]
            print(
                f"check val ({name}): {f['records']} records, {f['records_per_second_best']:,.0f} records/s best, "
                f"{f['records_per_second_median']:,.0f} median over {f['runs']} runs, process start-up included "
                f"({f['check_only_records_per_second_median']:,.0f}/s the check alone; {f['cpu_seconds_median']:.2f} s CPU "
                f"on {f['cores']} cores); goal {GOAL:,}/s",
                flush=True,
            )
    return figures


def main(argv: list[str]) -> int:
    from absl import flags

    fv = flags.FlagValues()
    flags.DEFINE_string("shards_jpeg", None, "The val split built with --image_format=jpeg.", flag_values=fv)
    flags.DEFINE_string("shards_raw", None, "The val split built with --image_format=raw (optional).", flag_values=fv)
    flags.DEFINE_integer("runs", RUNS, "Runs per build.", lower_bound=1, flag_values=fv)
    fv(argv)
    if fv.shards_jpeg is None:
        print("benchmarks.check: --shards_jpeg is required", file=sys.stderr)
        return 2
    figures = run(BenchData("", "", fv.shards_jpeg, fv.shards_raw or ""), runs=fv.runs)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
