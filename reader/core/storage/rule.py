"""Which files of a build a tool may read, and how much of them; what the stores hand back and raise.

The rule (DESIGN.md, "Files the tools open"): a regular file of its data directory, whose size is
within its kind's `Bound`, looked at before it is opened and again once open, never with a
blocking open. What breaks it raises RefusedFile, one line naming the file and never quoting it.
A fault of the store itself raises StorageError, one line naming the path.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat


class StorageError(RuntimeError):
    """The store refused an operation: `path: what happened`. A fault of the build's storage,
    never of one image."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __reduce__(self):  # Beam pickles a worker's exception back to the launcher
        return type(self), (self.path, self.problem)


class RefusedFile(StorageError, OSError):
    """A file refused before any byte of it was read: `PATH: why`, one line (not a regular file,
    a link leading out of its directory, larger than its kind may be). Not a FileNotFoundError:
    the file is there, and is not one to read; never a fault of the store. An OSError to the
    readers, a StorageError to the build."""

    def __init__(self, path: str, problem: str):
        OSError.__init__(self, f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return self.args[0]


def describe(error: BaseException) -> str:
    """A one-line account of a storage exception (OSError's strerror, S3's error code, ...)."""
    if isinstance(error, StorageError):
        return error.problem
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code', '')}: {response['Error'].get('Message', '')}".strip(": ")
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip(": ")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of a directory listing. `updated`: seconds since the epoch, by the store's clock."""

    name: str
    path: str
    size: int
    updated: float


@dataclasses.dataclass(frozen=True)
class Bound:
    """The most bytes one kind of file may hold; `kind` names the kind in a refusal
    ("N bytes, more than a manifest may hold (M)")."""

    limit: int
    kind: str

    def check(self, path: str, size: int) -> None:
        if size > self.limit:
            raise RefusedFile(path, f"{size} bytes, more than {self.kind} ({self.limit})")

    def refuse_longer(self, path: str, data: bytes) -> bytes:
        """`data` (read as at most limit + 1 bytes), or RefusedFile when it grew past the bound."""
        if len(data) > self.limit:
            raise RefusedFile(path, f"more than {self.kind} ({self.limit} bytes)")
        return data


# A manifest is ~150 bytes a shard plus ~2 KB: 16 MiB is ~100,000 shards, 1,000 times WIDER's.
MANIFEST = Bound(16 << 20, "a manifest may hold")
# A lease is one JSON object of ~150 bytes (build, split, host, pid, started).
LEASE = Bound(64 << 10, "a lease may hold")
# One line (~200 bytes, a path and a detail) per unusable image: 256 MiB, the most a source image
# may hold, is over a million entries, 30 times every image of WIDER FACE.
ERRORS_FILE = Bound(256 << 20, "an errors file may hold")
# (The TFDS files beside the shards are written by each build, never read back by these tools:
# a rename replaces whatever is in their place.)


def shard_bound(size: int) -> Bound:
    """A shard holds exactly the bytes its manifest entry says (`size`): never read past them."""
    return Bound(max(int(size), 0), "its manifest entry says")


def index_bound(shards: int, records: int) -> Bound:
    """A split's record index cache: two decimal numbers (< 20 digits each) a record, and the
    manifest's shard entries again (< 1 KB each)."""
    return Bound(4096 + 1024 * max(shards, 0) + 48 * max(records, 0), "the index of its manifest's records may hold")


def file_kind(mode: int) -> str:
    """What a file of `mode` (os.stat's st_mode) is, said with its article: "a FIFO", ..."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "a special file"


def _inside(root: str, path: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (then refused by
# its fstat); O_NOFOLLOW: the file opened is the one looked at, not a link put there since.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_fd(path: str, bound: Bound | None) -> int:
    """A blocking descriptor of the local file `path` (plain or file://), for reading.

    The rule: `path` must be a regular file (a directory, FIFO, socket or device is refused
    before it is opened, and again on the open descriptor, so one put there meanwhile cannot
    block or feed the read); a symbolic link is followed only when it resolves inside the
    file's own directory, the data directory (a link to a shard beside it is a shard); and its
    size must be within `bound` (None: a file streamed in fixed pieces and located by an index
    already bounded, never held whole). Raises RefusedFile for what breaks the rule,
    FileNotFoundError when there is nothing (a dangling link included), OSError otherwise.
    """
    local = path.removeprefix("file://")
    status = os.lstat(local)
    target = local
    if stat.S_ISLNK(status.st_mode):
        directory = os.path.dirname(os.path.abspath(local))
        target = os.path.realpath(local)
        if not _inside(os.path.realpath(directory), target):
            raise RefusedFile(path, f"a link leading out of {directory}")
        status = os.stat(target)
    _check_status(path, status, bound)
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # made a link, or a socket, since it was looked at
            raise RefusedFile(path, "changed into something other than a regular file while it was opened") from None
        raise
    try:
        _check_status(path, os.fstat(fd), bound)  # what was opened, not what was looked at
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_status(path: str, status: os.stat_result, bound: Bound | None) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise RefusedFile(path, f"not a regular file ({file_kind(status.st_mode)})")
    if bound is not None:
        bound.check(path, status.st_size)
