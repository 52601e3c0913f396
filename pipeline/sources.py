"""Source image bytes, read confined to the images directory.

`read_source(images_dir, filename)` is the only way the build reads an image. Every failure
concerns that one image and raises images.UnusableImage with a reason of images.REASONS:

    path_escapes_images_dir  the annotation path is absolute, a URL, has `..` or backslashes
                             (images.confined_path, the first gate), or a symbolic link on the
                             way (at any component) resolves outside the resolved images_dir
    missing                  nothing there (a dangling link inside the directory included)
    not_a_regular_file       a directory, FIFO, socket or device: refused before it is read, so
                             a FIFO named .jpg cannot block the build
    file_too_large           over `max_bytes` (default MAX_SOURCE_BYTES)
    unreadable               anything else the file system refuses (permissions, I/O errors)

Local paths (no scheme, or file://) are read with os.open; gs:// and s3:// through the storage
layer (reader.core.storage: one ranged request an image). Object stores have no links, FIFOs or
devices, so only the path gate and the size cap apply there; there, a fault of the store itself
(unreachable, no credentials, no bucket, throttled, access refused) raises StorageError and
fails the build in one line naming the path, as a fault of its output does.

Confinement is checked twice on local disk: on the resolved path before anything is opened
(so a file outside is never opened, nor a device), then on the open descriptor itself, through
/proc/self/fd on Linux, so that a directory swapped for a link between the check and the open
cannot lead the read outside. A hard link is a file inside the directory like any other. (The
images directory's own path is resolved again only when it names another directory; the path
below it, for every image.)
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from pipeline import images
from pipeline.images import UnusableImage
from reader.core import storage

# 256 MiB: Pillow's pixel limit (MAX_IMAGE_PIXELS, 89.5 Mpx) in uncompressed 8-bit RGB is one
# byte short of it, so no image Pillow would decode as RGB needs more, while a 2 GB file read
# whole by each of 8 threads would take 16 GB. WIDER's JPEGs are under 2 MB.
MAX_SOURCE_BYTES = 256 * 2**20
_READ_CHUNK = 1 << 20
# O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def read_source(images_dir: str, filename: str, max_bytes: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of the image `filename` (as written in the annotation file) under `images_dir`.

    images_dir: a local directory (plain path or file://), or a gs://, s3://, ... prefix.
    max_bytes: larger files are refused ("file_too_large") without being read whole.
    Returns the whole file (b"" for an empty one: images.prepare says "empty").
    Raises images.UnusableImage; never another exception for a problem of this one file.
    """
    relative = images.confined_path(filename)
    if "://" in images_dir and not images_dir.startswith("file://"):
        return _read_remote(storage.join(images_dir, relative), max_bytes)
    return _read_local(images_dir.removeprefix("file://"), relative, filename, max_bytes)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_ROOTS: dict[str, tuple[str, tuple[int, int]]] = {}  # images_dir -> (its realpath, the directory's device and inode)


def _resolved_root(images_dir: str) -> str:
    """os.path.realpath(images_dir), resolved again whenever `images_dir` names another directory
    than it did (a link repointed, a directory replaced, another working directory): one stat
    an image instead of one lstat per component of the directory's path."""
    try:
        status = os.stat(images_dir)
    except OSError:
        return os.path.realpath(images_dir)
    identity = (status.st_dev, status.st_ino)
    cached = _ROOTS.get(images_dir)
    if cached is None or cached[1] != identity:
        if len(_ROOTS) > 64:
            _ROOTS.clear()
        cached = _ROOTS[images_dir] = (os.path.realpath(images_dir), identity)
    return cached[0]


def _resolve(root: str, relative: str) -> tuple[str, os.stat_result | None]:
    """(os.path.realpath(root/relative), its status when already known) for a resolved `root`:
    the components of `relative` looked at with lstat, and realpath's own walk only where one is
    a link or is missing. (The common case, no link below the root, in two or three system
    calls instead of one per component of the whole path, and the file's lstat is its stat.)"""
    path, status = root, None
    if posixpath.normpath(relative) != relative or relative.startswith(".."):  # not confined_path's: realpath judges
        return os.path.realpath(os.path.join(root, relative)), None
    for part in relative.split("/"):
        path = os.path.join(path, part)
        try:
            status = os.lstat(path)
        except OSError:
            status = None
        if status is None or stat.S_ISLNK(status.st_mode):
            return os.path.realpath(os.path.join(root, relative)), None
    return path, status


def _read_local(images_dir: str, relative: str, filename: str, max_bytes: int) -> bytes:
    root = _resolved_root(images_dir)
    resolved, before = _resolve(root, relative)
    path = os.path.join(images_dir, relative)  # as the user named it, for the details
    if not _inside(root, resolved):
        raise UnusableImage(
            "path_escapes_images_dir", f"{filename!r}: a symbolic link on its path leads out of the images directory"
        )
    try:
        before = before or os.stat(resolved)
    except OSError as e:
        raise _unusable(path, e) from None
    _check_regular(before, path, max_bytes)
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW: the last component became a link since realpath
            raise UnusableImage("unreadable", f"{path} changed into a symbolic link while it was opened") from None
        raise _unusable(path, e) from None
    try:
        opened = _opened_path(fd)
        if opened is not None and not _inside(root, opened):
            raise UnusableImage(
                "path_escapes_images_dir",
                f"{filename!r}: its path changed to lead out of the images directory while it was opened",
            )
        after = os.fstat(fd)
        _check_regular(after, path, max_bytes)  # what was opened, not what was looked at
        return _read_all(fd, path, max_bytes)
    except OSError as e:
        raise _unusable(path, e) from None
    finally:
        os.close(fd)


def _check_regular(status: os.stat_result, path: str, max_bytes: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise UnusableImage("not_a_regular_file", f"{path} is {storage.file_kind(status.st_mode)}, not a file")
    if status.st_size > max_bytes:
        raise UnusableImage("file_too_large", f"{path} has {status.st_size} bytes, over the limit of {max_bytes}")


def _opened_path(fd: int) -> str | None:
    """Where the kernel says descriptor `fd` points, or None where /proc does not tell."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _read_all(fd: int, path: str, max_bytes: int) -> bytes:
    """Reads to the end, refusing to hold more than `max_bytes` (a file that grew since fstat)."""
    chunks, total = [], 0
    while chunk := os.read(fd, _READ_CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise UnusableImage("file_too_large", f"{path} has more than the limit of {max_bytes} bytes")
    return b"".join(chunks)


def _unusable(path: str, error: OSError) -> UnusableImage:
    """The UnusableImage for an OSError of the local file system on `path`."""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return UnusableImage("missing", f"no file at {path}")
    if error.errno == errno.ENXIO:  # a socket, or a device without a driver
        return UnusableImage("not_a_regular_file", f"{path} cannot be opened as a file")
    if error.errno == errno.ELOOP:
        return UnusableImage("unreadable", f"{path}: symbolic links loop")
    return UnusableImage("unreadable", f"{path}: {error.strerror or error}")


def _read_remote(path: str, max_bytes: int) -> bytes:
    try:
        data = storage.read_range(path, 0, max_bytes + 1)
    except Exception as e:  # the store's own exception types vary (OSError, botocore's, google's...)
        # A fault of the store (unreachable, no credentials, no bucket, throttled, refused) is
        # the build's, never this image's: recorded as unusable, every image would be dropped
        # and the build committed without them.
        raise storage.StorageError(path, f"cannot read: {storage.describe(e)}") from None
    if data is None:
        raise UnusableImage("missing", f"no file at {path}")
    if len(data) > max_bytes:
        raise UnusableImage("file_too_large", f"{path} has more than the limit of {max_bytes} bytes")
    return data
