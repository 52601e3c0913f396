"""The commit is all or nothing: a crash before any single operation of it, on local disk, S3
(moto's server) and GCS (the emulator), leaves one whole build, the earlier or the new, and the
finalize step run again (as a runner retries it) completes the new one. Then the rules by which
a build tells leftovers of crashed builds from files of builds still running.

The crashes are real: a process runs the build's finalize step and dies with os._exit right
before its K-th operation on the store (tests/support/commit_faults.py), for every K.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import beam_flags, cli, commit, leases, transforms
from pipeline.commit import OutputSpec
from reader.check import split as check_split
from reader.core import layout, storage
from reader.core.config import BuildConfig
from tests.support import builds, cloud_fixtures, commit_faults
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES, ROOT

SPLIT = "val"
BUCKET = "facegrid-commit"
B = "b0b0b0b0b0b0"  # the id of the build that is committing in these tests
_COLLECTED: dict[str, list] = {}


@pytest.fixture(scope="module")
def s3():
    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket=BUCKET)
        before = storage.configure_s3(storage.S3Settings(endpoint_url=server.endpoint, region_name=cloud_fixtures.S3_REGION))
        keys = {"AWS_ACCESS_KEY_ID": cloud_fixtures.S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": cloud_fixtures.S3_SECRET}
        saved = {name: os.environ.get(name) for name in keys}
        os.environ.update(keys)  # the checker's boto3 finds them where users keep theirs
        try:
            yield server
        finally:
            storage.configure_s3(before)
            for name, value in saved.items():
                os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    env = {
        "STORAGE_EMULATOR_HOST": None,
        "GOOGLE_APPLICATION_CREDENTIALS": str(
            cloud_fixtures.write_fake_google_credentials(tmp_path_factory.mktemp("adc") / "adc.json")
        ),
    }
    with cloud_fixtures.gcs_emulator(BUCKET) as emulator:
        env["STORAGE_EMULATOR_HOST"] = emulator.endpoint
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)  # this process builds and commits there too, through Beam's GCS client
        try:
            yield emulator, env
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _store(kind: str, request, tmp_path) -> commit_faults.Store:
    prefix = f"out-{request.node.name.split('[')[0][-20:]}-{time.monotonic_ns()}"
    if kind == "local":
        return commit_faults.local_store(tmp_path / "out")
    if kind == "s3":
        return commit_faults.s3_store(request.getfixturevalue("s3"), BUCKET, prefix)
    emulator, env = request.getfixturevalue("gcs")
    return commit_faults.gcs_store(emulator, BUCKET, prefix, env)


def _collect(element, bucket: str):
    _COLLECTED.setdefault(bucket, []).append(element)


def _pending(store: commit_faults.Store, num_shards: int, *flags: str) -> commit_faults.Pending:
    """Build B of the fixture set with its shards written and its finalize step not yet run.
    Its lease names no process (as on Dataflow): alive by its heartbeat."""
    config = BuildConfig(jpeg_quality=80)
    handle = commit.begin(OutputSpec(store.root, SPLIT, num_shards, B))
    _COLLECTED.clear()
    options = PipelineOptions([*builds.IN_MEMORY, *store.flags, *flags])
    with beam.Pipeline(runner=beam_flags.local_runner(options), options=options) as p:  # workers get the store's flags
        written = p | transforms.WriteShards(
            str(FIXTURE_IMAGES), num_shards, config, p | "Handle" >> beam.Create([handle]), str(FIXTURE_ANNOTATIONS)
        )
        _ = written | "Shards" >> beam.Map(_collect, "shards")
    return commit_faults.Pending(handle, list(_COLLECTED.get("shards", [])), config)


def _build(store: commit_faults.Store, *flags: str) -> dict[str, bytes]:
    builds.run_build(
        FIXTURE_ANNOTATIONS,
        FIXTURE_IMAGES,
        store.root,
        SPLIT,
        "--max_error_fraction=0.5",
        *flags,
        runner=[*builds.IN_MEMORY, *store.flags],
    )
    return store.files()


def assert_one_whole_build(store: commit_faults.Store, builds: dict[str, dict[str, bytes]], tmp_path: pathlib.Path) -> str:
    """The split is exactly one of `builds` (id -> its files): every file its manifest names
    holds that build's bytes, and the checker passes it. Returns the build's id."""
    found = store.files()
    manifest = json.loads(found[layout.manifest_name(SPLIT)])
    build = manifest["build"]
    assert build in builds, f"the manifest names build {build}, none of {sorted(builds)}"
    named = [s["file"] for s in manifest["shards"]] + [manifest["errors_file"], layout.manifest_name(SPLIT)]
    for name in named:
        assert found.get(name) == builds[build][name], f"{name} is not build {build}'s"
    if store.root.startswith("s3://"):
        where = store.root  # the checker reads S3 itself
    else:  # local, and GCS (TensorFlow's GCS client, which the checker uses there, cannot reach the emulator)
        where = tmp_path / f"mirror-{time.monotonic_ns()}"
        where.mkdir()
        for name, data in found.items():
            (where / name).write_bytes(data)
    report = check_split.check_split(str(where), SPLIT, workers=1, leakage=False).report
    assert report.ok, report.summary()
    return build


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_a_crash_before_any_operation_of_the_commit_leaves_one_whole_build_and_a_retry_completes_it(kind, request, tmp_path):
    store = _store(kind, request, tmp_path)
    earlier = _build(store, "--num_shards=2")
    a = json.loads(earlier[layout.manifest_name(SPLIT)])["build"]
    pending = _pending(store, 8)
    # One result per shard, a shard no image landed in included (its writer wrote it empty).
    assert sorted(s.index for s in pending.shards) == list(range(8)) and any(s.entry.bytes == 0 for s in pending.shards)
    before_commit = store.files()
    state = tmp_path / "pending.pickle"
    state.write_bytes(pickle.dumps(pending))

    # The commit run to its end: build B, whole, and the operations it took.
    ops = commit_faults.list_operations(pending)
    committed = store.files()
    assert json.loads(committed[layout.manifest_name(SPLIT)])["build"] == B
    assert not any(layout.build_of(name, SPLIT) == a for name in committed)  # the earlier build removed
    kinds = {op.split()[0] for op in ops}
    assert {"create", "delete"} <= kinds and ("rename" in kinds) == (kind == "local")
    assert len(ops) >= 8

    builds = {a: earlier, B: committed}
    outcomes = []
    crasher = commit_faults.Crasher(state, store.flags, store.env, ROOT)
    for k in range(len(ops)):
        store.restore(before_commit)
        assert crasher.crash(k) == commit_faults.CRASHED, f"did not die before {ops[k]!r}"
        outcomes.append(assert_one_whole_build(store, builds, tmp_path))
        # The runner retries the step: it completes the build, and leaves nothing else behind.
        commit_faults.finalize(pending)
        assert store.files() == committed, f"after a crash before {ops[k]!r} and a retry"
    crasher.close()
    # Crashes before the manifest leave the earlier build; after it, the new one.
    manifest_op = next(i for i, op in enumerate(ops) if op.endswith(layout.manifest_name(SPLIT)))
    last = manifest_op + (1 if kind == "local" else 0)  # locally the manifest is written, then renamed
    assert outcomes == [a] * (last + 1) + [B] * (len(ops) - last - 1), list(zip(ops, outcomes))


def test_rerunning_a_crashed_commit_after_another_build_committed_is_refused(tmp_path, request):
    store = _store("local", request, tmp_path)
    pending = _pending(store, 2)
    # Another build judges B dead, commits, and removes B's files.
    other = _build(store, "--num_shards=3")
    other_build = json.loads(other[layout.manifest_name(SPLIT)])["build"]
    for name in list(store.files()):
        if layout.build_of(name, SPLIT) == B:
            (tmp_path / "out" / name).unlink()
    with pytest.raises(commit.BuildError, match=f"not committed, files of build {B} are not as written"):
        commit_faults.finalize(pending)
    assert assert_one_whole_build(store, {other_build: other}, tmp_path) == other_build


# ---- who is alive ---------------------------------------------------------------------------


def _lease(directory: pathlib.Path, build: str, host: str | None, pid: int | None, age_s: float = 0.0) -> pathlib.Path:
    path = directory / layout.lease_name(SPLIT, build)
    path.write_bytes(leases.Lease(build, SPLIT, host, pid, time.time()).to_bytes())
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_leftovers_of_dead_builds_go_and_files_of_running_builds_stay(tmp_path, request):
    store = _store("local", request, tmp_path)
    out = tmp_path / "out"
    committed = _build(store, "--num_shards=2")
    current = json.loads(committed[layout.manifest_name(SPLIT)])["build"]
    builds = {
        "111111111111": (leases.host_id(), os.getpid(), 0.0, True),  # a local build still running
        "222222222222": (leases.host_id(), _dead_pid(), 0.0, False),  # its process is gone
        "888888888888": (leases.host_id(), os.getpid(), leases.LEASE_TIMEOUT_S + 60, False),  # a process id used again
        "333333333333": ("another-host", 4242, 60.0, True),  # elsewhere, heartbeat a minute ago
        "999999999999": (leases.host_id().rsplit("/", 1)[0] + "/pid:[1]", 1, 60.0, True),  # this host name, another PID namespace
        "444444444444": ("another-host", 4242, leases.LEASE_TIMEOUT_S + 60, False),  # no heartbeat for too long
        "555555555555": (None, None, leases.LEASE_TIMEOUT_S - 60, True),  # Dataflow, within the timeout
    }
    for build, (host, pid, age, _) in builds.items():
        _lease(out, build, host, pid, age)
        (out / layout.shard_name(SPLIT, 0, 2, build)).write_bytes(b"a shard in progress")
    (out / layout.shard_name(SPLIT, 1, 2, "666666666666")).write_bytes(b"no lease at all")
    (out / layout.lease_name(SPLIT, "777777777777")).write_bytes(b"\x00 not json")  # unreadable, fresh: by its age
    (out / layout.temp_name(SPLIT, current, "x.tfrecord", "ab12cd34")).write_bytes(b"a crashed attempt of the current build")
    (out / "val-00007-of-00009.tfrecord").write_bytes(b"a shard of a build before build ids")
    (out / "train-00000-of-00001.aaaaaaaaaaaa.tfrecord").write_bytes(b"another split")
    (out / "README.txt").write_bytes(b"not a build's")

    removed = commit.remove_leftovers(OutputSpec(str(out), SPLIT, 2))

    kept = set(store.files())
    for build, (*_, alive) in builds.items():
        assert (layout.shard_name(SPLIT, 0, 2, build) in kept) == alive, build
        assert (layout.lease_name(SPLIT, build) in kept) == alive, build
    assert layout.shard_name(SPLIT, 1, 2, "666666666666") in removed
    assert layout.lease_name(SPLIT, "777777777777") in kept
    assert {"val-00007-of-00009.tfrecord", layout.temp_name(SPLIT, current, "x.tfrecord", "ab12cd34")} <= set(removed)
    assert {"train-00000-of-00001.aaaaaaaaaaaa.tfrecord", "README.txt", *committed} <= kept


def test_a_file_that_goes_while_the_directory_is_listed_is_left_out_of_the_listing_alone(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"x")
    with commit_faults.removed_while_listed(tmp_path / "b"):
        assert [e.name for e in storage.list_dir(str(tmp_path))] == ["a", "c"]


def test_a_build_commits_while_another_renames_its_files_into_place(tmp_path, request):
    """Two builds at once once failed under load with "another build judged this one dead and
    removed them": a file of the other build, renamed into place between the committing build's
    reading the directory and its looking at each file, made the whole listing come back empty,
    and the commit found none of its own files."""
    store = _store("local", request, tmp_path)
    out = tmp_path / "out"
    pending = _pending(store, 2)
    other = "c0c0c0c0c0c0"  # running, in this process
    _lease(out, other, leases.host_id(), os.getpid())
    temp = out / layout.temp_name(SPLIT, other, layout.shard_name(SPLIT, 0, 1, other), "ab12cd34")
    temp.write_bytes(b"being written")
    with commit_faults.removed_while_listed(temp):
        assert commit_faults.finalize(pending)["build"] == B
    assert not temp.exists()  # it went while the commit listed the directory
    assert json.loads((out / layout.manifest_name(SPLIT)).read_text())["build"] == B
    assert (out / layout.lease_name(SPLIT, other)).exists()  # the running build's lease stays


def test_a_build_starting_while_another_tidies_the_directory_keeps_its_files(tmp_path):
    """Before every store operation of a build's start (its output probe, its lease, its first
    shard), another build that has just committed tidies the directory: the starting build's
    files are never taken for a crashed build's. A temporary file renamed into place once
    preceded the lease (and the probe): with no lease, it was removed and the start failed."""
    out = tmp_path / "out"
    builds.build(out, "--num_shards=2")  # the build that tidies up after its commit
    build, options = cli.parse_args([cli.PROGRAM, *commit_faults.build_flags(out, "--num_shards=3"), *builds.IN_MEMORY])
    seen, busy = [], []

    def tidy(kind, name):
        if busy:  # the tidying's own deletes
            return
        busy.append(1)
        seen.append(f"{kind} {name}")
        commit.remove_leftovers(OutputSpec(str(out), SPLIT, 1))
        busy.clear()

    with commit_faults.operations(tidy):
        cli.check_inputs(build, options)  # the probe
        handle = commit.begin(build.output)
        handle.write(handle.shard_name(0), b"a shard")
        commit.remove_leftovers(OutputSpec(str(out), SPLIT, 1))
    assert {layout.lease_name(SPLIT, handle.build), handle.shard_name(0)} <= {p.name for p in out.iterdir()}
    assert any(op.startswith("create .val.") and op.endswith(".probe") for op in seen), seen
    assert f"create {layout.lease_name(SPLIT, handle.build)}" in seen, seen


def test_a_failed_build_that_had_committed_keeps_its_files(tmp_path, request):
    store = _store("local", request, tmp_path)
    committed = _build(store, "--num_shards=2")
    build = json.loads(committed[layout.manifest_name(SPLIT)])["build"]
    (tmp_path / "out" / layout.lease_name(SPLIT, build)).write_bytes(b"{}")
    commit.abandon(str(tmp_path / "out"), SPLIT, build)  # the launcher saw the job fail after its commit
    assert store.files() == committed


def test_storage_errors_name_the_path(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"x")
    with pytest.raises(storage.StorageError, match=rf"^{target}/a: cannot write: Not a directory$"):
        storage.write_bytes(str(target / "a"), b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"build": "cccccccccccc", "split": "val", "host": "HOST", "pid": 99999999999999999999, "started": 0}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than json can go
        b'{"build": "cccccccccccc", "split": "val", "host": "HOST", "pid": -5, "started": 0}',
        b'{"build": "cccccccccccc", "split": "val", "host": "HOST", "pid": true, "started": 0}',
        None,  # a directory where the lease should be
    ],
)
def test_an_odd_lease_is_judged_by_its_age_and_never_fails_a_commit(tmp_path, request, content):
    store = _store("local", request, tmp_path)
    out = tmp_path / "out"
    lease = out / layout.lease_name(SPLIT, "cccccccccccc")
    shard = out / layout.shard_name(SPLIT, 0, 1, "cccccccccccc")
    if content is None:
        lease.mkdir()
    else:
        lease.write_bytes(content.replace(b"HOST", leases.host_id().encode()))
    shard.write_bytes(b"a shard of a build whose lease makes no sense")
    first = _build(store, "--num_shards=2")  # exit 0: committed, and tidied without an error
    assert shard.exists()  # fresh: it may be a build still running
    stale = time.time() - leases.LEASE_TIMEOUT_S - 60
    os.utime(lease, (stale, stale))
    second = _build(store, "--num_shards=2")
    assert not shard.exists() and (content is None) == lease.exists()  # a directory is not a file of ours
    assert json.loads(second[layout.manifest_name(SPLIT)])["build"] != json.loads(first[layout.manifest_name(SPLIT)])["build"]


@pytest.mark.parametrize("kind", ["gcs", "s3", "local"])
def test_a_directory_name_with_glob_characters_touches_no_other_directory(kind, request, tmp_path):
    """Beam's match takes a path as a glob pattern: listing `ou*` once listed `out` as well, and
    a commit there removed the files of the build in `out`."""
    plain = _store(kind, request, tmp_path)
    pattern = commit_faults.Store(plain.root.rstrip("/") + "[1]*?", plain.flags, plain.env, None, None, None)
    committed = _build(plain, "--num_shards=2")
    builds.run_build(
        FIXTURE_ANNOTATIONS,
        FIXTURE_IMAGES,
        pattern.root,
        SPLIT,
        "--max_error_fraction=0.5",
        "--num_shards=3",
        runner=[*builds.IN_MEMORY, *plain.flags],
    )
    assert plain.files() == committed
