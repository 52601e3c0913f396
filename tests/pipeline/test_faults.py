"""Whole builds that go wrong, as processes: killed, crashed mid-build, run twice at once, out
of disk, on a read-only disk, into a bucket that is not there. After each, the output directory
holds one whole build (the checker passes it), the earlier one unless a build committed, and no
temporary file stays; rerunning the command completes the build and clears the leftovers.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from reader.core import layout
from tests.support import cloud_fixtures, commit_faults
from tests.support.paths import ROOT

SPLIT = "val"
TIMEOUT = 120


def _flags(out, *extra: str) -> list[str]:
    return commit_faults.build_flags(out, *extra, split=SPLIT)


def _build(out, *extra: str, crash_at: int | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline` in its own process (or one that dies before its `crash_at`-th store
    operation)."""
    command = [sys.executable, "-m", "pipeline", *_flags(out, *extra)]
    if crash_at is not None:
        command = [sys.executable, "-m", "tests.support.commit_faults", "--build", str(crash_at), *_flags(out, *extra)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def _manifest(out: pathlib.Path) -> dict:
    return json.loads((out / layout.manifest_name(SPLIT)).read_text())


def assert_whole(out: pathlib.Path, leftovers_allowed: bool = False) -> dict:
    """One whole build in `out`: the checker passes; with no leftovers, exactly its files."""
    problem = commit_faults.whole_build_problem(out, SPLIT, leftovers_allowed)
    assert problem is None, problem
    return _manifest(out)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if "INFO" not in line and line.strip()]
    assert len(lines) == 1 and lines[0].startswith("facegrid-build: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return lines[0]


# The store operations of such a rebuild (3 shards over an earlier build of 2): 0-1 the output
# probe (written, removed), 2 the lease (written in place), 3-8 the shards (each written,
# renamed), 9-10 a heartbeat, 11-12 the errors file, 13-14 the manifest (written, renamed: the
# commit), then the TFDS files, and the earlier build's files deleted.
@pytest.mark.parametrize("crash_at, committed", [(1, False), (3, False), (6, False), (14, False), (15, True)])
def test_a_build_that_died_midway_leaves_one_whole_build_and_a_rerun_completes_and_clears_it(tmp_path, crash_at, committed):
    out = tmp_path / "out"
    assert _build(out, "--num_shards=2").returncode == 0
    earlier = _manifest(out)
    crashed = _build(out, "--num_shards=3", crash_at=crash_at)
    assert crashed.returncode == commit_faults.CRASHED, crashed.stderr[-3000:]
    found = assert_whole(out, leftovers_allowed=True)
    assert (found != earlier) == committed
    assert any(layout.build_of(p.name, SPLIT) not in (None, found["build"]) for p in out.iterdir())  # something was left

    rerun = _build(out, "--num_shards=3")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # The crashed build's lease names a process of this host that is gone: its files go at once.
    assert assert_whole(out)["build"] not in (earlier["build"], found["build"])


def test_a_build_killed_with_sigkill_changes_nothing_and_the_rerun_clears_it(tmp_path):
    out = tmp_path / "out"
    assert _build(out, "--num_shards=2").returncode == 0
    earlier = _manifest(out)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *_flags(out, "--num_shards=4")], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while not any(layout.is_lease(p.name) for p in out.iterdir()):  # the build has started writing
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert assert_whole(out, leftovers_allowed=True) == earlier
    assert _build(out, "--num_shards=4").returncode == 0
    assert assert_whole(out)["build"] != earlier["build"]


@pytest.mark.parametrize("stagger", [0.0, 1.5])
def test_two_builds_at_once_end_as_one_whole_build(tmp_path, stagger):
    """Both exit 0, each naming its build; the one that committed last is the split, whole, and
    nothing else is left (tests.support.commit_faults.two_builds_at_once; benchmarks.concurrent_builds
    runs it many times)."""
    problem = commit_faults.two_builds_at_once(tmp_path / "out", stagger, TIMEOUT)
    assert problem is None, problem


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine allows no small filesystem for the test (mount: {done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_fails_the_build_in_one_line_and_leaves_the_earlier_build_and_no_temporary_file(tmp_path):
    with _tmpfs(tmp_path / "small", "1m") as out:
        assert _build(out, "--num_shards=2").returncode == 0  # JPEG: 0.3 MB
        earlier = assert_whole(out)
        failed = _build(out, "--num_shards=2", "--image_format=raw")  # raw pixels: 1.5 MB
        assert failed.returncode == 1
        line = _one_line_error(failed)
        assert "No space left on device" in line and str(out) in line, line
        assert assert_whole(out) == earlier  # exactly the earlier build's files: the partial shard is gone


def test_a_read_only_output_is_refused_before_the_build_starts(tmp_path):
    with _tmpfs(tmp_path / "ro", "4m") as out:
        assert _build(out, "--num_shards=2").returncode == 0
        earlier = assert_whole(out)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        refused = _build(out, "--num_shards=3")
        assert refused.returncode == 2
        assert _one_line_error(refused) == (
            f"facegrid-build: --output_dir={out}: cannot write there: Read-only file system; --help lists every flag"
        )
        assert assert_whole(out) == earlier


def test_a_bucket_that_is_not_there_is_refused_before_the_build_starts():
    with cloud_fixtures.s3_server() as s3:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *_flags("s3://no-such-bucket/out"), *s3.beam_flags()],
            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    assert done.returncode == 2
    line = _one_line_error(done)
    assert line.startswith("facegrid-build: --output_dir=s3://no-such-bucket/out: cannot write there: NoSuchBucket"), line


# On S3: 0-1 the probe, 2 the lease, 3-5 the shards, 6 a heartbeat, 7 the errors file, 8 the manifest.
@pytest.mark.parametrize("at", [4, 8])  # while the shards are written; right before the commit
def test_a_bucket_that_vanishes_during_the_build_fails_it_in_one_line(at):
    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket="vanishing")
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.commit_faults", "--vanish", str(at), "vanishing",
             *_flags("s3://vanishing/out", "--num_shards=3"), *s3.beam_flags()],
            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("facegrid-build: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors[0].startswith("facegrid-build: s3://vanishing/out/") and "NoSuchBucket" in errors[0], errors[0]
