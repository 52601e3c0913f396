"""Two builds of one split into one directory at once, many times: how often the contract breaks.

    python -m benchmarks.concurrent_builds --runs=N [--work_dir=build/bench/concurrent]
        [--burners=2] [--stagger=0]

Each run is tests/pipeline/test_faults.py's scenario (tests.support.commit_faults.two_builds_at_once): a build of
the fixture set, then two more started `stagger` seconds apart (0: together, where the
commits and their tidying overlap most). A run fails when either build does not exit 0, when
they do not each name their build, or when the directory is not the later commit, whole,
with nothing else left. `--burners` runs that many CPU-bound processes meanwhile (stress's
`--cpu N`), so the builds' steps stretch and interleave as they do on a loaded machine.
Prints each failure as it happens and the count at the end; `run` returns them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import shutil
import sys
import time

from absl import flags

from tests.support import commit_faults


def _burn() -> None:
    while True:
        pass


@contextlib.contextmanager
def burners(count: int):
    """`count` processes spinning on a core each, until the block ends."""
    processes = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            process.kill()
            process.join()


def run(runs: int, work_dir: str, burn: int = 0, stagger: float = 0.0) -> dict:
    """Runs the scenario `runs` times; returns {"runs", "failed", "failures": [...], "burners",
    "stagger", "seconds"}."""
    failures = []
    start = time.perf_counter()
    with burners(burn):
        for i in range(runs):
            out = pathlib.Path(work_dir, f"run-{i}")
            shutil.rmtree(out, ignore_errors=True)
            problem = commit_faults.two_builds_at_once(out, stagger)
            if problem is not None:
                failures.append(f"run {i}: {problem}")
                print(failures[-1], flush=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
            print(f"{i + 1}/{runs} runs, {len(failures)} failed", flush=True)
    return {
        "runs": runs, "failed": len(failures), "failures": failures, "burners": burn, "stagger": stagger,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("runs", 20, "Times to run the two builds at once.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string(
        "work_dir",
        "build/bench/concurrent",
        "Where the builds go (each run's directory is removed when it passed).",
        flag_values=fv,
    )
    flags.DEFINE_integer("burners", 2, "CPU-bound processes running meanwhile (0: none).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("stagger", 0.0, "Seconds between the starts of the two builds.", lower_bound=0, flag_values=fv)


def main(argv: list[str]) -> int:
    fv = flags.FlagValues()
    define_flags(fv)
    fv(argv)
    os.makedirs(fv.work_dir, exist_ok=True)
    result = run(fv.runs, os.path.abspath(fv.work_dir), fv.burners, fv.stagger)
    print(f"two builds at once: {result['failed']} of {result['runs']} runs failed ({result['burners']} CPU burners, "
          f"stagger {result['stagger']:g} s, {result['seconds']:.0f} s)")  # fmt: skip
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
