"""reader.core.storage, the one storage layer, on each of its stores: local disk, gs:// on the
GCS emulator and s3:// on moto's S3 server (both on loopback). Every store answers the same
calls the same way; the atomic writes under faults are tests/test_commit.py's."""

from __future__ import annotations

import pytest

from reader.core import storage
from tests.support import cloud_fixtures

BUCKET = "facegrid-storage"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{scheme: a directory there}, the servers up for the module."""
    with cloud_fixtures.every_store(str(tmp_path_factory.mktemp("local")), BUCKET, "dir") as found:
        yield found


SCHEMES = ["file", "gs", "s3"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_store_answers_alike(stores, scheme):
    directory = stores[scheme]
    path = storage.join(directory, "a.bin")
    data = bytes(range(256)) * 8193  # over 2 MiB: two readahead fetches and a part

    assert storage.read_or_none(path, storage.MANIFEST) is None and storage.stat(path) is None and not storage.exists(path)
    assert storage.read_range(path, 0, 10) is None
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(path, storage.MANIFEST)

    storage.write_bytes(path, data)
    storage.write_bytes(storage.join(directory, "empty"), b"")
    assert [(e.name, e.size) for e in storage.list_dir(directory)] == [("a.bin", len(data)), ("empty", 0)]
    assert storage.list_names(directory) == ["a.bin", "empty"]
    assert storage.stat(path).size == len(data) and storage.exists(path)
    assert storage.read_or_none(path, storage.MANIFEST) == data == storage.read_bytes(path, storage.MANIFEST)
    assert storage.read_or_none(storage.join(directory, "empty"), storage.MANIFEST) == b""
    assert storage.read_range(path, 1000, 24) == data[1000:1024]
    assert storage.read_range(storage.join(directory, "empty"), 0, 10) == b""  # an empty object has no byte 0
    for readahead in (0, storage.READAHEAD):
        with storage.open_binary(path, None, readahead=readahead) as f:
            f.seek(len(data) - 5)
            assert f.read(100) == data[-5:] and f.read(1) == b""
            f.seek(3)
            assert f.read(storage.READAHEAD + 7) == data[3 : storage.READAHEAD + 10]

    small = storage.Bound(len(data) - 1, "a test file may hold")
    with pytest.raises(
        storage.RefusedFile, match=rf"a.bin: {len(data)} bytes, more than a test file may hold \({len(data) - 1}\)$"
    ):
        storage.read_or_none(path, small)
    with pytest.raises(OSError):  # a refusal is an OSError to the readers, and a StorageError to the build
        storage.open_binary(path, small)

    with pytest.raises(RuntimeError, match="boom"), storage.create(storage.join(directory, "never")) as f:
        f.write(b"part of it")
        raise RuntimeError("boom")
    assert storage.stat(storage.join(directory, "never")) is None  # a failed write leaves nothing

    storage.delete([path, path, storage.join(directory, "empty")])  # a file already gone is no error
    assert storage.list_dir(directory) == []


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_missing_bucket_is_said_as_such(stores, scheme):
    with pytest.raises(FileNotFoundError, match=rf"^{scheme}://no-such-bucket-here/d: no such "):
        storage.list_names(f"{scheme}://no-such-bucket-here/d")
    with pytest.raises(storage.StorageError, match=rf"^{scheme}://no-such-bucket-here/d/f: cannot write: "):
        storage.write_bytes(f"{scheme}://no-such-bucket-here/d/f", b"x")


def test_another_scheme_is_refused_in_one_line():
    with pytest.raises(
        storage.StorageError,
        match=r"^hdfs://h/d/f: no hdfs:// storage here: facegrid reads and writes local, gs:// and s3:// paths$",
    ):
        storage.write_bytes("hdfs://h/d/f", b"x")
