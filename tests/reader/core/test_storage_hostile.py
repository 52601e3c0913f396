"""Red-team cases against the storage layer (reader.core.storage) and the build's wiring to it:
real faults (an endpoint that refuses connections, a bucket that is not there, a fork while a
client is being made), run through the real CLIs in their own processes where a user would meet
them. Each case failed before the fix it came with."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

from tests.support import cloud_fixtures
from tests.support.paths import FIXTURE_ANNOTATIONS, ROOT

TIMEOUT = 120


def _refusing_endpoint() -> str:
    """http://127.0.0.1:PORT where nothing listens (the port bound, then let go): connections refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _build(out: pathlib.Path, images_dir: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={images_dir}",
               f"--output_dir={out}", "--split=val", "--num_shards=2", "--max_error_fraction=1", *extra]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": cloud_fixtures.S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": cloud_fixtures.S3_SECRET}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("facegrid-build: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("fault", ["endpoint refuses connections", "no such bucket"])
def test_a_store_fault_reading_the_source_images_fails_the_build_and_drops_no_image(fault, tmp_path):
    """Before: every image of an s3:// images_dir the store could not serve was an errors-file
    line ("unreadable: EndpointConnectionError ..."), and with --max_error_fraction=1 the build
    committed a build of 0 records, exit 0: good images dropped for a fault of the store."""
    out = tmp_path / "out"
    if fault == "no such bucket":
        with cloud_fixtures.s3_server() as s3:
            done = _build(out, "s3://no-such-images-bucket/images", *s3.beam_flags())
        expected = "NoSuchBucket"
    else:
        done = _build(out, "s3://images/images", f"--s3_endpoint_url={_refusing_endpoint()}",
                      f"--s3_region_name={cloud_fixtures.S3_REGION}")  # fmt: skip
        expected = "EndpointConnectionError"
    assert done.returncode == 1, done.stderr[-3000:]
    line = _one_error_line(done)
    assert line.startswith("facegrid-build: s3://") and "/images/" in line and ": cannot read: " in line, line
    assert expected in line, line
    assert not (out / "val.manifest.json").exists()
    assert not [p.name for p in out.glob("*") if p.suffix == ".tfrecord"] if out.exists() else True


def test_an_s3_client_made_from_the_environment_is_not_reused_once_the_environment_changes(monkeypatch):
    """Settings left to boto3's chain (None) are read from AWS_* when the client is made. Before:
    the client cache was keyed by settings and pid only, so after AWS_ENDPOINT_URL (or the keys,
    region, profile) changed in the process, the client of the old values was reused: here the
    second server's object read as the first server's endpoint, refused connections."""
    from reader.core import storage

    for name, value in (("AWS_ACCESS_KEY_ID", cloud_fixtures.S3_KEY_ID), ("AWS_SECRET_ACCESS_KEY", cloud_fixtures.S3_SECRET),
                        ("AWS_DEFAULT_REGION", cloud_fixtures.S3_REGION)):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    previous = storage.configure_s3(storage.S3Settings())
    try:
        for content in (b"first server", b"second server"):
            with cloud_fixtures.s3_server() as s3:
                s3.client.create_bucket(Bucket="env")
                s3.client.put_object(Bucket="env", Key="f", Body=content)
                monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
                assert storage.read_or_none("s3://env/f", storage.MANIFEST) == content
    finally:
        storage.configure_s3(previous)


def test_a_store_fault_in_a_worker_process_is_one_line_without_a_traceback(tmp_path):
    """--direct_running_mode=multi_processing: before, Beam's worker process printed the failing
    step's traceback (some 140 lines) straight to the launcher's stderr above the one line; the
    in-process runners printed the line alone. (The fault: the images' endpoint refuses.)"""
    done = _build(tmp_path / "out", "s3://images/images", f"--s3_endpoint_url={_refusing_endpoint()}",
                  f"--s3_region_name={cloud_fixtures.S3_REGION}", "--direct_running_mode=multi_processing",
                  "--direct_num_workers=2")  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "EndpointConnectionError" in _one_error_line(done)
    shown = [line for line in done.stderr.splitlines() if " INFO " not in line and line.strip()]
    assert len(shown) == 1, "\n".join(shown[:20])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{scheme: a directory there}: local disk, gs:// on the GCS emulator, s3:// on moto."""
    with cloud_fixtures.every_store(str(tmp_path_factory.mktemp("hostile")), "hostile", "fuzz") as found:
        yield found


@pytest.mark.parametrize("scheme", ["file", "gs", "s3"])
def test_seeded_operations_keep_every_file_whole_or_earlier(stores, scheme):
    """Seeded runs of writes (whole, empty, failing part-way), deletes (repeated), reads within and
    over a bound and listings, held to a model of what the directory must hold: a failed write
    leaves nothing or the earlier file, a delete of what is gone is no error, a file over its
    bound is refused in one line naming it and never quoting it."""
    import random

    from reader.core import storage

    rng = random.Random(f"storage-{scheme}")
    directory = storage.join(stores[scheme], f"ops-{scheme}")
    model: dict[str, bytes] = {}
    names = [f"f{i}" for i in range(5)]
    for _ in range(60):
        name = rng.choice(names)
        path = storage.join(directory, name)
        op = rng.choice(["write", "write", "fail", "delete", "read", "bounded", "list"])
        if op == "write":
            data = rng.randbytes(rng.choice([0, 1, 17, 4096]))
            storage.write_bytes(path, data)
            model[name] = data
        elif op == "fail":
            with pytest.raises(RuntimeError, match="part-way"), storage.create(path) as f:
                f.write(rng.randbytes(100))
                raise RuntimeError("the write failed part-way")
        elif op == "delete":
            storage.delete([path, path])
            model.pop(name, None)
        elif op == "read":
            assert storage.read_or_none(path, storage.MANIFEST) == model.get(name)
        elif op == "bounded" and model.get(name):
            secret = model[name]
            with pytest.raises(storage.RefusedFile) as refused:
                storage.read_or_none(path, storage.Bound(len(secret) - 1, "a test file may hold"))
            assert str(refused.value) == f"{path}: {len(secret)} bytes, more than a test file may hold ({len(secret) - 1})"
        elif op == "list":
            assert [(e.name, e.size) for e in storage.list_dir(directory)] == [(n, len(model[n])) for n in sorted(model)]
    assert [(e.name, e.size) for e in storage.list_dir(directory)] == [(n, len(model[n])) for n in sorted(model)]
    storage.delete([storage.join(directory, n) for n in names])
    assert storage.list_dir(directory) == []
