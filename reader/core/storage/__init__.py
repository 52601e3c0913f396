"""Every file of a build, on local disk, gs:// or s3://, read by one rule and written whole or not at all.

The build's writes and commit, its sources and reuse, the readers and the checker all go through
here: one module per store (`local`, `s3` through boto3, `gcs` through google-cloud-storage),
one settings object and one client cache for each, and the rule every read obeys (`rule`).
Neither TensorFlow nor Beam: the pipeline hands its Beam options over once per process
(`configure`), the checker its flags. How each store makes a file appear atomically, and why no
build renames a file on an object store: docs/DESIGN.md, "Storage".

Reading (the readers' way: FileNotFoundError when there is nothing, RefusedFile for what the rule
refuses, OSError naming the path for the store's faults):
    open_binary, read_bytes, exists, list_names, check_file; open_input for a user's input file
Reading and writing a build (the build's way: None or [] when there is nothing, StorageError
naming the path for the store's faults, RefusedFile for what the rule refuses):
    list_dir, stat, read_or_none, read_range, create, write_bytes, delete, ensure_dir
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
from collections.abc import Iterator
from typing import BinaryIO

from reader.core.storage import gcs, local, s3
from reader.core.storage.gcs import GcsSettings
from reader.core.storage.local import local_path
from reader.core.storage.ranged import READAHEAD, RangedFile

# isort: off
from reader.core.storage.rule import (
    ERRORS_FILE, LEASE, MANIFEST, Bound, Entry, RefusedFile, StorageError, describe, file_kind, index_bound, open_fd,
    shard_bound,
)  # fmt: skip

# isort: on
from reader.core.storage.s3 import NO_CREDENTIALS, S3Settings

__all__ = [
    "ERRORS_FILE", "LEASE", "MANIFEST", "NO_CREDENTIALS", "READAHEAD", "SCHEMES", "Bound", "Entry", "GcsSettings",
    "RefusedFile", "S3Settings", "Settings", "StorageError", "check_file", "configure", "configure_s3", "create",
    "delete", "describe", "ensure_dir", "exists", "file_kind", "index_bound", "is_local", "join", "list_dir", "list_names",
    "local_path", "open_binary", "open_fd", "open_input", "read_bytes", "read_or_none", "read_range", "s3_settings", "scheme",
    "settings", "shard_bound", "stat", "write_bytes",
]  # fmt: skip

SCHEMES = ("file", "gs", "s3")


# ---- paths -------------------------------------------------------------------------------------


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def scheme(path: str) -> str:
    return "file" if is_local(path) else path.split("://", 1)[0]


def join(directory: str, name: str) -> str:
    return os.path.join(directory, name) if is_local(directory) else f"{directory.rstrip('/')}/{name}"


def _store(path: str):
    found = {"file": local, "gs": gcs, "s3": s3}.get(scheme(path))
    if found is None:
        raise StorageError(path, f"no {scheme(path)}:// storage here: facegrid reads and writes local, gs:// and s3:// paths")
    return found


# ---- settings ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """This process's settings for every store (the build's Beam flags, the checker's)."""

    s3: S3Settings = S3Settings()
    gcs: GcsSettings = GcsSettings()


def configure(new: Settings) -> Settings:
    """Makes `new` this process's settings; returns the previous ones (to restore). Worker
    processes get them from whoever starts them (pipeline.worker_setup, the checker's pool)."""
    return Settings(s3.configure(new.s3), gcs.configure(new.gcs))


def settings() -> Settings:
    return Settings(s3.settings(), gcs.settings())


def configure_s3(new: S3Settings) -> S3Settings:
    return s3.configure(new)


def s3_settings() -> S3Settings:
    return s3.settings()


# ---- reading, the readers' way -----------------------------------------------------------------


def open_binary(path: str, bound: Bound | None, readahead: int = READAHEAD) -> BinaryIO:
    """Opens a local, gs:// or s3:// file of a build for reading bytes, seekable, by the rule
    of `open_fd` (object stores hold no links, FIFOs or devices: there, the object's size
    within `bound`). Raises FileNotFoundError when it does not exist, RefusedFile when the rule
    refuses it. readahead: bytes fetched per request on an object store, read in order (0:
    exactly what each read asks, for random access)."""
    store = _store(path)
    if store is local:
        return local.open_binary(path, bound)
    size = store.size(path)
    if bound is not None:
        bound.check(path, size)
    return RangedFile(path, size, functools.partial(store.get, path), readahead)


def open_input(path: str) -> BinaryIO:
    """A user's input file (the annotation file), not a build's: on local disk opened as the
    user named it (a link anywhere followed, as any program would), on an object store read in
    order, buffered. FileNotFoundError when there is nothing."""
    if is_local(path):
        return open(local_path(path), "rb")
    return io.BufferedReader(open_binary(path, None), READAHEAD)


def read_bytes(path: str, bound: Bound) -> bytes:
    """The whole file at `path` (any scheme), opened by `open_binary`'s rule; at most
    `bound.limit` bytes are read, a file that grew past them since it was looked at is refused."""
    with open_binary(path, bound, readahead=bound.limit + 1) as f:
        data = f.read(bound.limit + 1)
    return bound.refuse_longer(path, data)


def check_file(path: str, bound: Bound | None) -> None:
    """Raises what `open_binary` would for `path` (FileNotFoundError, RefusedFile), reading nothing."""
    open_binary(path, bound).close()


def exists(path: str) -> bool:
    store = _store(path)
    if store is local:
        return local.exists(path)
    try:
        store.size(path)
    except FileNotFoundError:
        return False
    return True


def list_names(directory: str) -> list[str]:
    """The names in `directory`, sorted; FileNotFoundError when the directory (local) or bucket
    does not exist."""
    return sorted(_store(directory).list_names(directory))


# ---- reading and writing, the build's way ------------------------------------------------------


def list_dir(directory: str) -> list[Entry]:
    """The files directly in `directory` (hidden ones included), sorted by name. A directory
    that does not exist holds nothing."""
    entries = _store(directory).list_entries(directory)
    return sorted((e for e in entries if e.name and "/" not in e.name), key=lambda e: e.name)


def stat(path: str, follow_links: bool = True) -> Entry | None:
    """The file at `path`, or None when there is none. follow_links=False: a local link's own
    entry (its time is when the link was made), not its target's."""
    return local.stat(path, follow_links) if is_local(path) else _store(path).stat(path)


def read_or_none(path: str, bound: Bound) -> bytes | None:
    """The bytes of the file at `path`, or None when there is none. Raises RefusedFile for a file
    of more than `bound` bytes, or (local) not a regular file of its directory; StorageError
    when the store fails."""
    store = _store(path)
    try:
        if store is local:
            return read_bytes(path, bound)
        data = store.read_or_none(path, bound)
        return None if data is None else bound.refuse_longer(path, data)
    except RefusedFile:
        raise
    except FileNotFoundError:
        return None
    except Exception as e:
        if _is_missing(e):
            return None
        raise StorageError(path, f"cannot read: {describe(e)}") from None


def read_range(path: str, offset: int, length: int) -> bytes | None:
    """Up to `length` bytes of the file at `path` from byte `offset` (None when there is none):
    one ranged request on an object store."""
    try:
        return _store(path).get_range(path, offset, length)
    except FileNotFoundError:
        return None


def write_bytes(path: str, data: bytes, temp: str | None = None, *, in_place: bool = False) -> None:
    """Writes a whole file atomically: readers see the earlier file or this one, never a part.
    `temp`: the name it is written under first on local disk (default: beside it); `in_place`:
    see `create`."""
    with create(path, temp, in_place=in_place) as f:
        f.write(data)


@contextlib.contextmanager
def create(path: str, temp: str | None = None, *, in_place: bool = False) -> Iterator:
    """A binary file to write, that appears at `path` whole when the block ends without an
    exception, and not at all otherwise. `temp`: its name while written (local disk only).
    `in_place`: on local disk, written at `path` itself, where it appears at once and fills as
    it is written (removed if the block fails): for a file that must exist before any other
    of its build, which a temporary file of another name would precede (a lease)."""
    try:
        store = _store(path)
        with local.create(path, temp, in_place) if store is local else store.create(path) as f:
            yield f
    except StorageError:
        raise
    except OSError as e:  # ENOSPC, EROFS, EACCES, EDQUOT...
        raise StorageError(path, f"cannot write: {describe(e)}") from None
    except Exception as e:
        if _is_store_error(e):
            raise StorageError(path, f"cannot write: {describe(e)}") from None
        raise


def delete(paths: list[str]) -> None:
    """Deletes files; a file already gone is not an error (deletes are repeated on retries)."""
    if not paths:
        return
    try:
        _store(paths[0]).delete(paths)
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(e.filename or paths[0], f"cannot delete: {describe(e)}") from None
    except Exception as e:
        if _is_store_error(e):
            raise StorageError(paths[0], f"cannot delete: {describe(e)}") from None
        raise


def ensure_dir(directory: str) -> None:
    """Creates a local directory (and its parents); object stores need none."""
    if is_local(directory):
        local.ensure_dir(directory)


def _is_store_error(error: Exception) -> bool:
    """Errors the cloud clients raise (HTTP, credentials), told from our own bugs by module."""
    return type(error).__module__.startswith(("botocore", "boto3", "google", "urllib3", "requests", "s3transfer"))


def _is_missing(error) -> bool:
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
    return (
        isinstance(error, FileNotFoundError)
        or code in ("404", "NoSuchKey", "NotFound")
        or "not found" in str(error).lower()
        or "404" in str(error)
    )
