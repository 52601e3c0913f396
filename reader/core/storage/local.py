"""Files of a build on local disk (plain paths or file://).

A file is written to a temporary name in the same directory, fsynced, then renamed (rename is
atomic on POSIX); the directory is fsynced too, so a commit survives power loss. Every read
opens by the rule (`rule.open_fd`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import BinaryIO

from reader.core.storage.rule import Bound, Entry, StorageError, describe, open_fd


def local_path(path: str) -> str:
    """A local path as the os module takes it (file:// dropped)."""
    return path.removeprefix("file://")


def list_entries(directory: str) -> list[Entry]:
    try:
        with os.scandir(local_path(directory)) as it:
            found = [d for d in it if d.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StorageError(directory, f"cannot list: {describe(e)}") from None
    entries = []
    for d in found:
        try:
            st = d.stat(follow_symlinks=False)
        except FileNotFoundError:
            # Gone since the directory was read: renamed or removed meanwhile (another build's
            # temporary file, or a file it tidied away). That file alone is left out; taking
            # the whole directory for gone once made a committing build find none of its files.
            continue
        except OSError as e:
            raise StorageError(d.path, f"cannot list: {describe(e)}") from None
        entries.append(Entry(d.name, d.path, st.st_size, st.st_mtime))
    return entries


def list_names(directory: str) -> list[str]:
    return os.listdir(local_path(directory))


def stat(path: str, follow_links: bool = True) -> Entry | None:
    try:
        st = os.stat(local_path(path)) if follow_links else os.lstat(local_path(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(path, describe(e)) from None
    return Entry(os.path.basename(path), path, st.st_size, st.st_mtime)


def open_binary(path: str, bound: Bound | None) -> BinaryIO:
    return os.fdopen(open_fd(path, bound), "rb")


def exists(path: str) -> bool:
    return os.path.exists(local_path(path))


def get_range(path: str, offset: int, length: int) -> bytes:
    with open_binary(path, None) as f:  # a span an index found: never more than `length`
        f.seek(offset)
        return f.read(length)


@contextlib.contextmanager
def create(path: str, temp: str | None, in_place: bool = False):
    path, temp = local_path(path), temp and local_path(temp)
    directory = os.path.dirname(path) or "."
    temp = path if in_place else temp or os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
    os.makedirs(directory, exist_ok=True)
    f = open(temp, "wb")  # noqa: SIM115 (opened outside the try: a failed open leaves no temp file to remove)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if not in_place:
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # filesystems that cannot sync a directory
            raise
    finally:
        os.close(fd)


def delete(paths: list[str]) -> None:
    for path in paths:
        try:
            os.remove(local_path(path))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(e.filename or path, f"cannot delete: {describe(e)}") from None


def ensure_dir(directory: str) -> None:
    try:
        os.makedirs(local_path(directory), exist_ok=True)
    except OSError as e:
        raise StorageError(directory, f"cannot create the directory: {describe(e)}") from None
