"""Every file a tool opens, put in place as something that is not a file of the data directory.

The cases are generated: each file any tool opens (the manifest, the errors file, a shard, the
record index cache, another build's lease, the three TFDS files) crossed with each way of not
being a regular file of the directory (a FIFO, a link to /dev/zero, a link to a file outside the
directory whose lines must never be printed, a directory), kept where a tool opens that file:
    the checker         python -m reader.check, a process bounded by a timeout
    make_dataset        where it reads the file (the manifest, the shards)
    ShardSequence       the manifest, the shards, the index cache
    a rebuild in place  python -m pipeline, as tests/pipeline/test_faults.py runs it: the cases where the
                        build opens the file (reuse reads the manifest and the shards, the commit
                        reads other builds' leases and writes the TFDS files), one per refusal
                        the build can meet, since a rebuild costs seconds
Each: no hang, the exit status DESIGN.md gives, one line naming the file, nothing of the outside
file printed; after a rebuild the checker passes. (DESIGN.md, "Files the tools open".)
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from pipeline import commit, leases
from reader.check import split as check_split
from reader.core import layout, storage, tfds_metadata
from tests.support import build_edits as fx
from tests.support import cloud_fixtures
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES, ROOT

TIMEOUT = 120  # seconds: a tool still running by then hangs
SECRET = "root:x:0:0:LEAKED-OUTSIDE-THE-DATA-DIRECTORY:/root:/bin/bash"
OTHER_BUILD = "0123456789ab"  # another build, still running or crashed, beside the committed one

KINDS = ("fifo", "dev_zero", "outside", "directory")
REFUSAL = {
    "fifo": "not a regular file (a FIFO)",
    "dev_zero": "a link leading out of",
    "outside": "a link leading out of",
    "directory": "not a regular file (a directory)",
}


def _name(role: str, manifest: dict) -> str:
    """The file name of `role` in a build directory whose manifest is `manifest`."""
    return {
        "manifest": layout.manifest_name(fx.SPLIT),
        "errors": manifest["errors_file"],
        "shard": manifest["shards"][-1]["file"],
        "index": layout.index_name(fx.SPLIT),
        "lease": layout.lease_name(fx.SPLIT, OTHER_BUILD),
        "dataset_info": tfds_metadata.DATASET_INFO,
        "features": tfds_metadata.FEATURES,
        "label_map": tfds_metadata.LABEL_MAP,
    }[role]


# Which tool opens which file (the build writes the TFDS files: renamed over a FIFO or a link,
# they replace it; a directory is what it cannot write).
OPENS = {
    "check": {"manifest", "errors", "shard"},
    "dataset": {"manifest", "shard"},
    "sequence": {"manifest", "shard", "index"},
    "build": {"manifest", "shard", "lease", "dataset_info", "features", "label_map"},
}
READ_CASES = [(role, kind) for role, kind in itertools.product(("manifest", "errors", "shard", "index"), KINDS)]
# Rebuilds, one per way the build meets a refusal (a link out is refused wherever it leads, so
# /dev/zero stands for both links): the lease, read after the commit (where a hang and a 4.9 GB
# read once were), as a FIFO and a link; the manifest, read by reuse, as a FIFO and as a
# directory (which nothing can be committed over); a shard, read by reuse; the TFDS files as a
# directory (the one thing their writes cannot replace).
REBUILD_CASES = [
    *(("lease", kind) for kind in ("fifo", "dev_zero")),
    *(("manifest", kind) for kind in ("fifo", "directory")),
    ("shard", "fifo"),
    *((role, "directory") for role in ("label_map", "dataset_info")),
]
assert all(role in OPENS["build"] for role, _ in REBUILD_CASES)


def _spoil(directory: pathlib.Path, name: str, kind: str, outside: pathlib.Path) -> pathlib.Path:
    """Puts a `kind` where `directory/name` is."""
    path = directory / name
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "outside":
        path.symlink_to(outside)
    else:
        path.mkdir()
    return path


# A file outside the data directory, whose lines look like what each file would hold.
OUTSIDE_TEXT = (
    "\n".join([json.dumps({"detail": SECRET, "faces": 0, "filename": SECRET, "line": 1, "reason": "missing"}), SECRET]) + "\n"
)


@pytest.fixture
def outside(tmp_path) -> pathlib.Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(OUTSIDE_TEXT)
    return path


def _release(path: pathlib.Path) -> None:
    """Lets a reader blocked opening the FIFO at `path` go on (after a failed test)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def _bounded(function, spoiled: pathlib.Path):
    """function() in a thread; fails the test when it has not returned within TIMEOUT."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as e:  # what the tool raised, to be judged by the test
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    if worker.is_alive():
        _release(spoiled)
        pytest.fail(f"still running after {TIMEOUT} s with {spoiled} in place: a hang")
    return outcome


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command[:3])} still running after {TIMEOUT} s: a hang")


def _naming_lines(output: str, name: str, refusal: str) -> list[str]:
    return [line for line in output.splitlines() if name in line and refusal in line]


def _check(data_dir: pathlib.Path) -> subprocess.CompletedProcess:
    return _run(
        [sys.executable, "-m", "reader.check", f"--data_dir={data_dir}", f"--split={fx.SPLIT}", "--workers=1", "--progress=never"]
    )


@pytest.mark.parametrize("role, kind", READ_CASES)
def test_the_checker_and_readers_refuse_a_file_that_is_not_one_in_one_line(role, kind, tmp_path, good_build, outside):
    data_dir = fx.copy_build(good_build, tmp_path / "data")
    manifest = fx.read_manifest(data_dir)
    name = _name(role, manifest)
    spoiled = _spoil(data_dir, name, kind, outside)
    refusal = REFUSAL[kind]

    checked = _check(data_dir)
    output = checked.stdout + checked.stderr
    assert SECRET not in output and "LEAKED" not in output
    assert "Traceback" not in output
    if role in OPENS["check"]:
        assert checked.returncode == 1, output[-3000:]
        assert len(_naming_lines(output, name, refusal)) == 1, output[-3000:]
    else:  # the checker does not open it
        assert checked.returncode == 0, output[-3000:]

    import reader

    if role in OPENS["dataset"]:
        outcome = _bounded(lambda: reader.make_dataset(str(data_dir), fx.SPLIT, 4, training=False), spoiled)
        error = outcome.get("error")
        assert isinstance(error, OSError | ValueError), outcome  # ManifestError is a ValueError, RefusedFile an OSError
        assert name in str(error) and refusal in str(error) and "\n" not in str(error) and "LEAKED" not in str(error)

    if role in OPENS["sequence"]:
        log = logging.getLogger("reader.data.shard_index")
        records = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        log.addHandler(handler)
        try:
            outcome = _bounded(lambda: reader.ShardSequence(str(data_dir), fx.SPLIT, 4, shuffle=False), spoiled)
        finally:
            log.removeHandler(handler)
        if role == "index":  # a cache: refused, said once, and the index built from the shards
            sequence = outcome.get("value")
            assert sequence is not None, outcome
            assert sequence.num_records == manifest["counts"]["records"]
            assert [line for line in records if name in line and refusal in line] == records and len(records) == 1, records
        else:
            error = outcome.get("error")
            assert isinstance(error, OSError | ValueError), outcome
            assert name in str(error) and refusal in str(error) and "\n" not in str(error)
    assert outside.read_text() == OUTSIDE_TEXT  # never written through the link either


def _build(out: pathlib.Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "pipeline", f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}",
                 f"--output_dir={out}", f"--split={fx.SPLIT}", "--max_error_fraction=0.5", "--num_shards=2"])  # fmt: skip


@pytest.mark.parametrize("role, kind", REBUILD_CASES)
def test_a_rebuild_in_place_never_hangs_on_a_file_that_is_not_one(role, kind, tmp_path, good_build, outside):
    data_dir = fx.copy_build(good_build, tmp_path / "data")
    earlier = fx.read_manifest(data_dir)
    name = _name(role, earlier)
    if role == "lease":  # another build, with a file the commit must judge by that lease
        (data_dir / layout.shard_name(fx.SPLIT, 0, 2, OTHER_BUILD)).write_bytes(b"a shard of another build")
    _spoil(data_dir, name, kind, outside)

    built = _build(data_dir)
    output = built.stdout + built.stderr
    assert SECRET not in output and "LEAKED" not in output and "Traceback" not in output
    if (role, kind) == ("manifest", "directory"):  # nothing can be committed there: a storage fault
        assert built.returncode == 1, output[-3000:]
        lines = [line for line in built.stderr.splitlines() if line.startswith("facegrid-build: ")]
        assert len(lines) == 1 and name in lines[0], output[-3000:]
        checked = _check(data_dir)
        assert checked.returncode == 1 and len(_naming_lines(checked.stdout + checked.stderr, name, REFUSAL[kind])) == 1
        return
    assert built.returncode == 0, output[-3000:]
    if role in ("manifest", "shard"):  # read by reuse: said in its notes, one line naming it
        assert len(_naming_lines(output, name, REFUSAL[kind])) == 1, output[-3000:]
    if role in ("label_map", "dataset_info"):  # only what cannot be written is affected
        assert len([line for line in output.splitlines() if f"could not write {name}" in line]) == 1, output[-3000:]
        for other in set(tfds_metadata.FILES) - {name}:
            assert (data_dir / other).is_file(), other
        if name != tfds_metadata.DATASET_INFO:  # TFDS still finds the split, at its new build
            splits = json.loads((data_dir / tfds_metadata.DATASET_INFO).read_text())["splits"]
            assert [s["name"] for s in splits] == [fx.SPLIT] and fx.read_manifest(data_dir)["build"] in splits[0][
                "filepathTemplate"
            ]
    if role == "lease":
        assert len(_naming_lines(output, name, REFUSAL[kind])) == 1, output[-3000:]
    report = check_split.check_split(str(data_dir), fx.SPLIT, workers=1, leakage=False).report
    assert report.ok, report.summary()
    assert fx.read_manifest(data_dir)["build"] != earlier["build"]
    assert outside.read_text() == OUTSIDE_TEXT


# ---- leases: age, date, and the bound ------------------------------------------------------


def _lease_dir(tmp_path: pathlib.Path, updated: float, content: bytes) -> tuple[commit.OutputSpec, pathlib.Path]:
    out = tmp_path / "out"
    out.mkdir()
    lease = out / layout.lease_name(fx.SPLIT, OTHER_BUILD)
    lease.write_bytes(content)
    os.utime(lease, (updated, updated))
    shard = out / layout.shard_name(fx.SPLIT, 0, 1, OTHER_BUILD)
    shard.write_bytes(b"a shard of another build")
    return commit.OutputSpec(str(out), fx.SPLIT, 1), shard


@pytest.mark.parametrize("ahead", [leases.LEASE_TIMEOUT_S + 60, 30 * 86400])
def test_a_lease_dated_further_ahead_than_the_timeout_is_not_believed(tmp_path, ahead):
    now = time.time()
    lease = leases.Lease(OTHER_BUILD, fx.SPLIT, "another-host", 1234, now)
    spec, shard = _lease_dir(tmp_path, now + ahead, lease.to_bytes())
    assert not leases.lease_alive(lease, now + ahead, now) and not leases.lease_alive(None, now + ahead, now)
    commit.remove_leftovers(spec, now=now)
    assert not shard.exists()


def test_a_lease_dated_a_little_ahead_is_clock_skew_and_holds(tmp_path):
    now = time.time()
    lease = leases.Lease(OTHER_BUILD, fx.SPLIT, "another-host", 1234, now)
    spec, shard = _lease_dir(tmp_path, now + 600, lease.to_bytes())
    commit.remove_leftovers(spec, now=now)
    assert shard.exists()


def test_a_lease_larger_than_a_lease_is_not_read_and_is_judged_by_its_age(tmp_path):
    now = time.time()
    big = b" " * (storage.LEASE.limit + 1)
    spec, shard = _lease_dir(tmp_path, now, big)
    with pytest.raises(storage.RefusedFile, match=rf"{storage.LEASE.limit + 1} bytes, more than a lease may hold"):
        storage.read_or_none(str(tmp_path / "out" / layout.lease_name(fx.SPLIT, OTHER_BUILD)), storage.LEASE)
    commit.remove_leftovers(spec, now=now)
    assert shard.exists()  # fresh: judged alive
    commit.remove_leftovers(spec, now=now + leases.LEASE_TIMEOUT_S + 1)
    assert not shard.exists()


# ---- object stores: the size bound ---------------------------------------------------------


BUCKET = "facegrid-bounds"


def test_s3_objects_larger_than_their_kind_are_refused_before_they_are_read(good_build, monkeypatch):
    """One oversized manifest on moto's S3 server: the readers' reads and the build's refuse it
    from its size, in one line, without reading it."""
    from reader.core import manifest as manifests

    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket=BUCKET)
        server.upload_tree(BUCKET, "data", good_build)
        name = layout.manifest_name(fx.SPLIT)
        size = storage.MANIFEST.limit + 1
        server.client.put_object(Bucket=BUCKET, Key=f"data/{name}", Body=b" " * size)
        lease = layout.lease_name(fx.SPLIT, OTHER_BUILD)
        server.client.put_object(Bucket=BUCKET, Key=f"data/{lease}", Body=b" " * (storage.LEASE.limit + 1))
        data_dir = f"s3://{BUCKET}/data"

        previous = storage.configure_s3(storage.S3Settings(server.endpoint, cloud_fixtures.S3_REGION))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", cloud_fixtures.S3_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", cloud_fixtures.S3_SECRET)
        try:
            with pytest.raises(manifests.ManifestError) as raised:
                manifests.load(data_dir, fx.SPLIT)
            with pytest.raises(storage.RefusedFile, match=r"more than a lease may hold"):
                storage.read_or_none(f"{data_dir}/{lease}", storage.LEASE)
            with pytest.raises(storage.RefusedFile, match=r"more than a manifest may hold"):
                storage.read_or_none(f"{data_dir}/{name}", storage.MANIFEST)
        finally:
            storage.configure_s3(previous)
        assert str(raised.value) == f"{data_dir}/{name}: {size} bytes, more than a manifest may hold ({storage.MANIFEST.limit})"


def test_a_link_inside_the_data_directory_is_followed(tmp_path, good_build):
    """The rule refuses links leading out of the directory, not links: a shard linked to a file
    beside it is that shard, for the checker and the readers."""
    import reader

    data_dir = fx.copy_build(good_build, tmp_path / "data")
    manifest = fx.read_manifest(data_dir)
    shard = data_dir / manifest["shards"][0]["file"]
    kept = data_dir / "kept-aside.bin"
    shard.rename(kept)
    shard.symlink_to(kept.name)
    checked = _check(data_dir)
    assert checked.returncode == 0, checked.stdout[-3000:]
    sequence = reader.ShardSequence(str(data_dir), fx.SPLIT, 4, shuffle=False, cache_index=False)
    assert sequence.num_records == manifest["counts"]["records"]


def test_a_refusal_pickles_whole():
    """Refusals cross process boundaries (the checker's workers, Beam's) with their path and problem."""
    import pickle

    for refused in (storage.RefusedFile("/d/f", "not a regular file (a FIFO)"), storage.StorageError("/d/f", "cannot list: EIO")):
        again = pickle.loads(pickle.dumps(refused))
        assert (type(again), str(again), again.path, again.problem) == (type(refused), str(refused), "/d/f", refused.problem)
