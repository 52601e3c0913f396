"""The readers' file access, for every scheme a build writes, without Beam:
    local    the standard library
    gs://    `tf.io.gfile`, imported only then
    s3://    boto3 (TensorFlow 2.21's tf.io.gfile has no s3 filesystem), configured by boto3's
             own chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
             AWS_DEFAULT_REGION, ~/.aws) unless `configure_s3` names an endpoint or region
`open_binary` gives a seekable file; on s3:// it reads with ranged GETs, `readahead` bytes at a
time, so a sequential scan costs one request per MiB and a random read one request.
A file that does not exist raises FileNotFoundError on every scheme. (The build writes through
Beam's filesystems instead: pipeline.storage, which opens files for reading with `open_fd` and
the bounds here.)

Every file of a build that any tool reads is opened here, by one rule (DESIGN.md, "Files the
tools open"): a regular file of its data directory, whose size is within its kind's `Bound`,
looked at before it is opened and again once open, never with a blocking open. What breaks the
rule raises RefusedFile, one line naming the file and never quoting it.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import stat
import threading
from typing import BinaryIO

READAHEAD = 1 << 20  # bytes fetched per request when reading s3:// sequentially


# ---- which files may be read, and how much of them -----------------------------------------


class RefusedFile(OSError):
    """A file refused before any byte of it was read: `PATH: why`, one line. Not a
    FileNotFoundError: the file is there, and is not one to read."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # crosses process boundaries (the checker's workers, Beam's) whole
        return type(self), (self.path, self.problem)


@dataclasses.dataclass(frozen=True)
class Bound:
    """The most bytes one kind of file may hold; `kind` names the kind in a refusal
    ("N bytes, more than a manifest may hold (M)")."""

    limit: int
    kind: str

    def check(self, path: str, size: int) -> None:
        if size > self.limit:
            raise RefusedFile(path, f"{size} bytes, more than {self.kind} ({self.limit})")


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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
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
        raise RefusedFile(path, f"not a regular file ({_kind(status.st_mode)})")
    if bound is not None:
        bound.check(path, status.st_size)


def check_file(path: str, bound: Bound | None) -> None:
    """Raises what `open_binary` would for `path` (FileNotFoundError, RefusedFile), reading nothing."""
    if is_local(path):
        os.close(open_fd(path, bound))
    else:
        open_binary(path, bound).close()


def read_bytes(path: str, bound: Bound) -> bytes:
    """The whole file at `path` (any scheme), opened by `open_binary`'s rule; at most
    `bound.limit` bytes are read, a file that grew past them since it was looked at is refused."""
    with open_binary(path, bound) as f:
        data = f.read(bound.limit + 1)
    if len(data) > bound.limit:
        raise RefusedFile(path, f"more than {bound.kind} ({bound.limit} bytes)")
    return data


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def scheme(path: str) -> str:
    return "file" if is_local(path) else path.split("://", 1)[0]


def join(directory: str, name: str) -> str:
    return os.path.join(directory, name) if is_local(directory) else f"{directory.rstrip('/')}/{name}"


def open_binary(path: str, bound: Bound | None, readahead: int = READAHEAD) -> BinaryIO:
    """Opens a local, gs:// or s3:// file of a build for reading bytes, by the rule of `open_fd`
    (object stores hold no links, FIFOs or devices: there, the object's size within `bound`).
    Raises FileNotFoundError when it does not exist, RefusedFile when the rule refuses it.
    readahead: bytes fetched per s3:// request (0: exactly what each read asks, for random access)."""
    if is_local(path):
        return os.fdopen(open_fd(path, bound), "rb")
    if scheme(path) == "s3":
        opened = S3File(path, readahead)
        if bound is not None:
            bound.check(path, opened.size)
        return opened
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    status = tf.io.gfile.stat(path)
    if status.is_directory:
        raise RefusedFile(path, "not a regular file (a directory)")
    if bound is not None:
        bound.check(path, status.length)
    return tf.io.gfile.GFile(path, "rb")


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path.removeprefix("file://"))
    if scheme(path) == "s3":
        try:
            _s3_head(path)
        except FileNotFoundError:
            return False
        return True
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def list_dir(directory: str) -> list[str]:
    """The names of the files directly in `directory`, sorted; raises FileNotFoundError when the
    directory (local) or bucket (s3://) does not exist."""
    if is_local(directory):
        return sorted(os.listdir(directory.removeprefix("file://")))
    if scheme(directory) == "s3":
        bucket, prefix = _s3_bucket_key(directory.rstrip("/") + "/")
        names = []
        try:
            pages = _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                names += [o["Key"][len(prefix) :] for o in page.get("Contents", ()) if o["Key"] != prefix]
        except Exception as e:
            raise _s3_error(directory, e) from None
        return sorted(names)
    import tensorflow as tf

    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory))


# ---- s3:// -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Where s3:// requests go: None leaves the value to boto3's own chain (environment, config
    files). Mirrors the build's Beam flags --s3_endpoint_url and --s3_region_name."""

    endpoint_url: str | None = None
    region_name: str | None = None
    # The build's other S3 flags (Beam's S3Options), so that the checker takes the same command line.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    api_version: str | None = None
    verify: str | None = None
    disable_ssl: bool = False


NO_CREDENTIALS = ("give --s3_access_key_id and --s3_secret_access_key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                  "(or ~/.aws/credentials)")  # fmt: skip
_s3 = {"settings": S3Settings()}
_s3_clients: dict[tuple[int, S3Settings], object] = {}
_s3_lock = threading.Lock()


def configure_s3(settings: S3Settings) -> S3Settings:
    """Makes `settings` this process's s3:// settings; returns the previous ones (to restore).
    The checker passes them on to its worker processes."""
    previous, _s3["settings"] = _s3["settings"], settings
    return previous


def s3_settings() -> S3Settings:
    return _s3["settings"]


def _s3_client():
    """One boto3 client per process and settings (clients are thread-safe; a forked child makes
    its own, since a client's connections must not be shared across processes)."""
    key = (os.getpid(), _s3["settings"])
    client = _s3_clients.get(key)
    if client is None:
        with _s3_lock:
            client = _s3_clients.get(key)
            if client is None:
                import boto3

                settings = key[1]
                client = _s3_clients[key] = boto3.session.Session().client("s3", **_client_arguments(settings))
    return client


def _client_arguments(settings: S3Settings) -> dict:
    """boto3's client() arguments for `settings`, as Beam's S3 filesystem passes its S3Options."""
    given = {"endpoint_url": settings.endpoint_url, "region_name": settings.region_name, "api_version": settings.api_version,
             "aws_access_key_id": settings.access_key_id, "aws_secret_access_key": settings.secret_access_key,
             "aws_session_token": settings.session_token,
             "verify": {"false": False, "0": False, "true": True, "1": True}.get(str(settings.verify).lower(), settings.verify)}  # fmt: skip
    return {name: value for name, value in given.items() if value is not None} | ({"use_ssl": False} if settings.disable_ssl else {})


def _s3_bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.removeprefix("s3://").partition("/")
    return bucket, key


def _s3_error(path: str, error: Exception) -> OSError:
    """A boto3 failure as an OSError naming the path (FileNotFoundError for a missing object or
    bucket), one line: no botocore traceback reaches a user."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return FileNotFoundError(f"{path}: no such file on S3 ({code})")
        return OSError(f"{path}: S3 refused: {code}: {response.get('Error', {}).get('Message', '')}".rstrip(": "))
    if type(error).__name__ in ("NoCredentialsError", "PartialCredentialsError"):  # botocore's, not imported here
        return OSError(f"{path}: no S3 credentials: {NO_CREDENTIALS}")
    return OSError(f"{path}: S3 unreachable: {type(error).__name__}: {error}")


def _s3_head(path: str) -> int:
    """The object's size in bytes; FileNotFoundError when there is none."""
    bucket, key = _s3_bucket_key(path)
    try:
        return int(_s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception as e:
        raise _s3_error(path, e) from None


class S3File(io.RawIOBase):
    """A seekable, read-only view of one S3 object, read with ranged GETs (see `open_binary`)."""

    def __init__(self, path: str, readahead: int = READAHEAD):
        super().__init__()
        self.path, self._readahead = path, readahead
        self._bucket, self._key = _s3_bucket_key(path)
        self.size = _s3_head(path)
        self._pos = 0
        self._buffer, self._buffer_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, {0: pos, 1: self._pos + pos, 2: self.size + pos}[whence])
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if end <= self._pos:
            return b""
        offset = self._pos - self._buffer_start
        if offset < 0 or end > self._buffer_start + len(self._buffer):
            fetch_end = min(self.size, max(end, self._pos + self._readahead))
            self._buffer, self._buffer_start, offset = self._get(self._pos, fetch_end), self._pos, 0
        data = self._buffer[offset : offset + end - self._pos]
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
        try:
            body = _s3_client().get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end - 1}")["Body"]
            return body.read()
        except Exception as e:
            raise _s3_error(self.path, e) from None
