"""The build on a real Dask cluster: a scheduler and two worker processes, each started as its own
process on loopback (`dask scheduler`, `dask worker`, as on any cluster), the real command line
submitting to it (`--runner=DaskRunner --dask_scheduler_file=...`), and real SIGKILLs.

Every build is compared byte for byte with the same build made by the local runner (shards and
errors file; the build ids aside). After a worker is killed, the split must be one whole build:
the new one, equal to the local build (Dask ran the lost tasks again), or the earlier one, the
failed build saying so in one line; the checker passes it either way, and running the command
again completes the build. One cluster serves every test of this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from benchmarks import dask_build
from pipeline import beam_flags, cli, sample
from reader.check import split as check_split
from reader.core import layout, storage, tfds_metadata
from tests.support import cloud_fixtures
from tests.support.paths import ROOT

# One pytest-xdist process runs them all (make test: --dist=loadgroup), so one cluster serves them.
pytestmark = pytest.mark.xdist_group("dask")
SPLIT = "train"
NUM_SHARDS = 4
TIMEOUT = 120
# Processes of this test that import facegrid (the workers, the command line) import this checkout.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@dataclasses.dataclass
class Cluster:
    scheduler_file: pathlib.Path
    processes: list[subprocess.Popen]  # the scheduler, then one `dask worker` (a nanny) per worker

    def flags(self) -> list[str]:
        return ["--runner=DaskRunner", f"--dask_scheduler_file={self.scheduler_file}"]

    def workers(self) -> list[psutil.Process]:
        """The worker processes now running: each nanny's child started by multiprocessing's
        spawn (the nanny restarts it when it dies), not its resource tracker."""
        found = []
        for nanny in self.processes[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                found += psutil.Process(nanny.pid).children()
        return [p for p in found if _alive(p) and "spawn_main" in " ".join(_cmdline(p))]

    def wait_for_workers(self, n: int = 2) -> None:
        from distributed import Client

        with Client(scheduler_file=str(self.scheduler_file), timeout=30) as client:
            client.wait_for_workers(n, timeout=60)


def _cmdline(process: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        return process.cmdline()
    return []


def _alive(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded worker processes (each under its nanny), on 127.0.0.1."""
    with dask_build.running_cluster(str(tmp_path_factory.mktemp("dask"))) as running:
        yield Cluster(pathlib.Path(running.scheduler_file), running.processes)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> sample.Sample:
    """pipeline.sample's data set: 36 train images, 1,024 px wide photographs (a real build's work)."""
    return sample.write_sample(str(tmp_path_factory.mktemp("dask-source")), num_images=48, seed=0)


def _flags(source: sample.Sample, out, *extra: str) -> list[str]:
    return [
        f"--annotations={source.train_annotations}", f"--images_dir={source.images_dir}", f"--output_dir={out}",
        f"--split={SPLIT}", f"--num_shards={NUM_SHARDS}", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local(source, tmp_path_factory) -> dict[str, bytes]:
    """The local build's shards and errors file (the default runner, in this process)."""
    out = tmp_path_factory.mktemp("dask-local")
    assert cli.main(_flags(source, out)) == 0
    return _built(out)


def _built(out) -> dict[str, bytes]:
    """{file with BUILD for its build id: bytes} of every shard and the errors file the manifest
    names, local or s3://."""

    manifest = json.loads(storage.read_or_none(storage.join(str(out), layout.manifest_name(SPLIT)), storage.MANIFEST))
    bounds = {s["file"]: storage.shard_bound(s["bytes"]) for s in manifest["shards"]} | {
        manifest["errors_file"]: storage.ERRORS_FILE
    }
    return {
        name.replace(manifest["build"], "BUILD"): storage.read_or_none(storage.join(str(out), name), bound)
        for name, bound in bounds.items()
    }


def _command(source, out, cluster: Cluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *_flags(source, out, *extra), *cluster.flags()]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def assert_whole(out: pathlib.Path) -> dict:
    """One whole build in `out`: the checker passes it, and the manifest names every file there
    but the leases and temporary files of builds that may still be running. Returns the manifest."""
    report = check_split.check_split(str(out), SPLIT, workers=1, leakage=False).report
    assert report.ok, report.summary()
    return json.loads((out / layout.manifest_name(SPLIT)).read_text())


def _only_files_of(out: pathlib.Path, manifest: dict) -> None:
    named = {s["file"] for s in manifest["shards"]} | {manifest["errors_file"], layout.manifest_name(SPLIT), *tfds_metadata.FILES}
    present = {p.name for p in out.iterdir()}
    assert present == named, sorted(present ^ named)


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("facegrid-build:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


def test_the_command_line_knows_the_dask_runner_and_its_flags(source, tmp_path):
    _, options = cli.parse_args(
        ["facegrid-build", *_flags(source, tmp_path), "--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:1"]
    )
    assert beam_flags.runner_name(options) == "DaskRunner" and not beam_flags.in_process(options)
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    assert (dask.address, dask.npartitions) == ("tcp://127.0.0.1:1", NUM_SHARDS)  # a partition per shard unless told
    _, options = cli.parse_args(["facegrid-build", *_flags(source, tmp_path), "--runner=dask", "--dask_partition_size=2"])
    assert options.view_as(DaskOptions).npartitions is None and options.view_as(DaskOptions).partition_size == 2
    for flags, said in (
        (
            ["--runner=DaskRunner", "--dry_run=true"],
            "--dry_run translates a job for --runner=DataflowRunner; the Dask cluster DaskRunner",
        ),
        (
            ["--runner=DaskRunner", "--dask_client_adress=tcp://x:1"],
            "unknown flag --dask_client_adress (did you mean --dask_client_address?)",
        ),
        (["--runner=DaskRunner", "--dask_npartitions=0"], "--dask_npartitions=0: expected 1 or more"),
    ):
        with pytest.raises(cli.UsageError, match=re.escape(said)):
            cli.parse_args(["facegrid-build", *_flags(source, tmp_path), *flags])


def test_a_build_on_the_cluster_equals_the_local_build_byte_for_byte(cluster, source, local, tmp_path):
    # Before the graph gave each ParDo one output, Beam's DaskRunner handed the commit the shards
    # as errors: AttributeError: 'ShardWritten' object has no attribute 'filename'.
    done = _run(_command(source, tmp_path / "out", cluster))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = assert_whole(tmp_path / "out")
    _only_files_of(tmp_path / "out", manifest)
    assert _built(tmp_path / "out") == local
    # The summary is the committed manifest's, whatever the runner counts (DaskRunner counts nothing).
    assert (
        f"{manifest['counts']['images_annotated']} images -> {manifest['counts']['records']} records in {NUM_SHARDS} shards"
        in done.stdout
    )


def _earlier_build(source, out: pathlib.Path) -> dict:
    """A whole earlier build in `out` (other bytes: JPEG quality 80); returns its manifest."""
    assert cli.main(_flags(source, out, "--jpeg_quality=80")) == 0
    return json.loads((out / layout.manifest_name(SPLIT)).read_text())


def _kill_when(
    out: pathlib.Path, earlier: str, command: list[str], appears: re.Pattern, victims
) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Runs `command`; the moment a file of the new build whose name matches `appears` is in
    `out`, SIGKILLs the worker processes `victims(cluster_workers, path)` picks. Returns the
    finished command and the pids killed."""
    process = subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while not killed and process.poll() is None and time.monotonic() < deadline:
            for entry in os.scandir(out):
                if appears.search(entry.name) and earlier not in entry.name:
                    for worker in victims(entry.path):
                        worker.send_signal(signal.SIGKILL)
                        killed.append(worker.pid)
                    break
            else:
                time.sleep(0.002)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), killed


def _writing(cluster: Cluster, path: str) -> list[psutil.Process]:
    """The worker that has `path` open (the shard it is writing)."""
    for worker in cluster.workers():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(f.path == os.path.realpath(path) for f in worker.open_files()):
                return [worker]
    return []


def _assert_one_build_then_rerun(cluster, source, local, out, done, earlier: dict) -> None:
    """After a build whose worker was killed: one whole build, the new one equal to the local
    build or the earlier one with the failure in one line; the rerun completes the build."""
    manifest = assert_whole(out)
    print(f"after the kill: exit {done.returncode}, the split holds the {'new' if manifest != earlier else 'earlier'} build")
    if done.returncode == 0:
        assert manifest["build"] != earlier["build"] and _built(out) == local
    else:
        assert done.returncode == 1
        _one_line(done)
        assert manifest == earlier
    cluster.wait_for_workers(2)  # the nanny has started a new worker
    again = _run(_command(source, out, cluster))
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = assert_whole(out)
    _only_files_of(out, manifest)  # what the killed build left is gone
    assert _built(out) == local


def test_a_worker_killed_while_writing_a_shard_leaves_one_whole_build_and_the_rerun_completes_it(
    cluster, source, local, tmp_path
):
    out = tmp_path / "out"
    earlier = _earlier_build(source, out)
    # One image at a time per shard writer: a shard takes long enough to be caught half written.
    command = _command(source, out, cluster, "--image_threads=1")
    temporary_shard = re.compile(rf"^\.{SPLIT}\.[0-9a-f]{{12}}\.[0-9a-f]+\.{SPLIT}-\d{{5}}-of-.*\.tmp$")
    done, killed = _kill_when(out, earlier["build"], command, temporary_shard, lambda path: _writing(cluster, path))
    assert killed, f"no worker was caught writing a shard: {done.stderr[-2000:]}"
    _assert_one_build_then_rerun(cluster, source, local, out, done, earlier)


def test_the_commit_killed_on_its_worker_leaves_one_whole_build_and_the_rerun_completes_it(cluster, source, local, tmp_path):
    out = tmp_path / "out"
    earlier = _earlier_build(source, out)
    # The commit writes the build's errors file first: every worker is killed the moment it
    # appears, the commit's among them, in the middle of its commit.
    errors_file = re.compile(rf"{SPLIT}\.[0-9a-f]{{12}}\.errors\.jsonl(\.tmp)?$")
    done, killed = _kill_when(out, earlier["build"], _command(source, out, cluster), errors_file, lambda _: cluster.workers())
    assert len(killed) == 2, done.stderr[-2000:]
    _assert_one_build_then_rerun(cluster, source, local, out, done, earlier)


def test_two_builds_at_once_from_two_clients_end_as_one_whole_build(cluster, source, local, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    command = _command(source, out, cluster)
    builds = [
        subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [b.communicate(timeout=TIMEOUT) for b in builds]
    assert [b.returncode for b in builds] == [0, 0], results
    manifest = assert_whole(out)
    _only_files_of(out, manifest)
    assert _built(out) == local
    # Each says what it did: the later commit wins; the build committed over says so.
    said = [stdout for stdout, _ in results]
    assert sum(f"(build {manifest['build']})" in s for s in said) == 1
    assert sum("committed over it" in s for s in said) <= 1


def test_the_workers_read_and_write_s3(cluster, source, local):
    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket="facegrid-dask")
        root = pathlib.Path(source.images_dir).parent
        s3.upload_tree("facegrid-dask", "source", root)
        relative = pathlib.Path(source.train_annotations).relative_to(root)
        flags = [
            f"--annotations=s3://facegrid-dask/source/{relative.as_posix()}", "--images_dir=s3://facegrid-dask/source/images",
            "--output_dir=s3://facegrid-dask/shards", f"--split={SPLIT}", f"--num_shards={NUM_SHARDS}",
        ]  # fmt: skip
        done = _run([sys.executable, "-m", "pipeline", *flags, *s3.beam_flags(), *cluster.flags()])
        assert done.returncode == 0, done.stderr[-3000:]
        found = s3.files("facegrid-dask", "shards")
        manifest = json.loads(found[layout.manifest_name(SPLIT)])
        names = [s["file"] for s in manifest["shards"]] + [manifest["errors_file"]]
        assert {name.replace(manifest["build"], "BUILD"): found[name] for name in names} == local
        assert not any(layout.is_lease(name) for name in found)


def test_the_worker_image_carries_the_dask_extra():
    # deploy/DASK.md runs the scheduler and the workers from deploy/Dockerfile's image.
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dask"]
    lines = [line.strip() for line in (ROOT / "deploy" / "requirements-dask.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == extra
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "-r /opt/facegrid/requirements-dask.txt" in dockerfile and "apache_beam.runners.dask.dask_runner" in dockerfile
    assert "dask" in (ROOT / "Makefile").read_text().split("$(FULL): $(CORE)")[1].split("\n")[1]  # make test installs it


def test_relative_local_paths_reach_the_workers_as_the_command_line_meant_them(cluster, source, local, tmp_path):
    # The workers run in directories of their own: before the command line made local paths
    # absolute, a relative --annotations failed there (FileNotFoundError on the worker).
    root = pathlib.Path(source.images_dir).parent
    flags = [
        f"--annotations={pathlib.Path(source.train_annotations).relative_to(root)}", "--images_dir=images",
        f"--output_dir={os.path.relpath(tmp_path / 'out', root)}", f"--split={SPLIT}", f"--num_shards={NUM_SHARDS}",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *flags, *cluster.flags()],
        env=ENV,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _built(tmp_path / "out") == local


def test_with_no_scheduler_named_the_local_cluster_forks_its_workers_and_builds_the_same_bytes(source, local, tmp_path):
    # Beam starts a local cluster when no scheduler is named. Its workers are forked from the
    # command's process (started afresh by multiprocessing's spawn, each imported Beam and
    # facegrid again, and the cluster took seconds to start and to close).
    command = [sys.executable, "-m", "pipeline", *_flags(source, tmp_path / "out", "--runner=DaskRunner")]
    with subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as build:
        seen: dict[int, list[str]] = {}
        while build.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(build.pid).children(recursive=True):
                    seen.setdefault(child.pid, _cmdline(child))
            time.sleep(0.02)
        _, stderr = build.communicate(timeout=TIMEOUT)
    assert build.returncode == 0, stderr[-3000:]
    assert _built(tmp_path / "out") == local
    forked = [pid for pid, cmdline in seen.items() if cmdline == command]
    assert len(forked) >= 2, seen  # one worker process per core, at least 2 (of 1 thread each on 2 cores)
    assert not [cmdline for cmdline in seen.values() if "spawn_main" in " ".join(cmdline)], seen
    # Dask's INFO lines (every scheduler, nanny and worker start and close) stay out of the build's output.
    assert not [line for line in stderr.splitlines() if "Nanny" in line or "Scheduler" in line or "worker at" in line], stderr[
        -3000:
    ]
