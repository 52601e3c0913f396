"""Files of a build on local disk, gs:// and s3://, each made visible whole or not at all.

Everything the build writes (and reads back of a build) goes through here, so that one module
knows how each store makes a file appear atomically:
    local   written to a temporary name in the same directory, fsynced, then renamed (rename
            is atomic on POSIX); the directory is fsynced too, so a commit survives power loss
    gs://   one upload through Beam's GCS filesystem: an object appears when its upload
            completes, never in part
    s3://   one upload through boto3 with Beam's S3 options: a single PUT for small objects and
            a multipart upload for large ones (aborted on failure). Beam's own S3 writer cannot
            write an empty object (a multipart upload of zero parts is refused by S3 as
            MalformedXML), and builds write empty shards and empty errors files.
No build renames or copies a file on gs:// or s3://: there a rename is a copy and a delete.
The S3 and GCS clients themselves are in pipeline/stores.py.

Failures of the store raise StorageError (pipeline/store_types.py), one line naming the path.
Files are opened for reading by reader.core.files' rule (regular files of the directory, within a
size bound per kind of file, never a blocking open); what it refuses raises RefusedFile.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import stores
from pipeline.store_types import Entry, RefusedFile, StorageError, describe
from reader.core import files
from reader.core.files import Bound

_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


def scheme(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else "file"


def is_local(path: str) -> bool:
    return scheme(path) == "file"


def local_path(path: str) -> str:
    """A local path (`is_local`) as the os module takes it."""
    return path.removeprefix("file://")


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)


def list_dir(directory: str) -> list[Entry]:
    """The files directly in `directory` (hidden ones included), sorted by name. A directory
    that does not exist holds nothing."""
    if is_local(directory):
        try:
            with os.scandir(local_path(directory)) as it:
                files = [d for d in it if d.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(directory, f"cannot list: {describe(e)}") from None
        entries = []
        for d in files:
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
        return sorted(entries, key=lambda e: e.name)
    prefix = directory.rstrip("/") + "/"
    if scheme(directory) == "s3":
        return stores.list_s3(prefix)
    if scheme(directory) == "gs":
        return stores.list_gcs(prefix)
    try:
        found = FileSystems.match([prefix + "*"])[0].metadata_list
    except Exception as e:  # BeamIOError, HTTP errors of the clients
        raise StorageError(directory, f"cannot list: {describe(e)}") from None
    entries = [Entry(m.path[len(prefix) :], m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found]
    return sorted((e for e in entries if e.name and "/" not in e.name), key=lambda e: e.name)


def stat(path: str, follow_links: bool = True) -> Entry | None:
    """The file at `path`, or None when there is none. follow_links=False: a local link's own
    entry (its time is when the link was made), not its target's."""
    if is_local(path):
        try:
            st = os.stat(local_path(path)) if follow_links else os.lstat(local_path(path))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(path, describe(e)) from None
        return Entry(os.path.basename(path), path, st.st_size, st.st_mtime)
    if scheme(path) == "s3":
        bucket, key = stores.s3_bucket_key(path)
        try:
            head = stores.s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as e:
            if _is_missing(e):
                return None
            raise StorageError(path, describe(e)) from None
        return Entry(key.rsplit("/", 1)[-1], path, head["ContentLength"], head["LastModified"].timestamp())
    if scheme(path) == "gs":
        bucket, name = path.removeprefix("gs://").split("/", 1)
        try:
            blob = stores.gcs_client().bucket(bucket).get_blob(name)
        except Exception as e:
            raise StorageError(path, describe(e)) from None
        return None if blob is None else Entry(name.rsplit("/", 1)[-1], path, blob.size or 0, blob.updated.timestamp())
    try:
        found = FileSystems.match([path])[0].metadata_list
    except Exception as e:
        raise StorageError(path, describe(e)) from None
    for m in found:
        if m.path == path:
            return Entry(path.rsplit("/", 1)[-1], path, m.size_in_bytes, m.last_updated_in_seconds)
    return None


def read_bytes(path: str, bound: Bound) -> bytes | None:
    """The bytes of the file at `path`, or None when there is none. Raises RefusedFile for a file
    of more than `bound` bytes, or (local) not a regular file of its directory."""
    try:
        if is_local(path):
            return files.read_bytes(local_path(path), bound)
        if scheme(path) == "s3":
            bucket, key = stores.s3_bucket_key(path)
            response = stores.s3_client().get_object(Bucket=bucket, Key=key)
            try:  # the size is in the response's headers: checked before the body is read
                bound.check(path, int(response["ContentLength"]))
                data = response["Body"].read(bound.limit + 1)
            finally:
                response["Body"].close()
        else:
            with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
                data = f.read(bound.limit + 1)
        if len(data) > bound.limit:
            raise files.RefusedFile(path, f"more than {bound.kind} ({bound.limit} bytes)")
        return data
    except files.RefusedFile as e:
        raise RefusedFile.of(e) from None
    except Exception as e:
        if _is_missing(e) or type(e).__name__ in ("NotFound", "NoSuchKey"):
            return None
        raise StorageError(path, f"cannot read: {describe(e)}") from None


def open_read(path: str, bound: Bound | None):
    """A file opened for reading: local (by reader.core.files' rule), or through Beam's
    filesystems (gs://, s3://: an object larger than `bound` refused before it is read).
    Raises RefusedFile, FileNotFoundError, OSError or the store's own errors."""
    if is_local(path):
        try:
            return os.fdopen(files.open_fd(local_path(path), bound), "rb")
        except files.RefusedFile as e:
            raise RefusedFile.of(e) from None
    if bound is not None:
        found = stat(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no such file")
        try:
            bound.check(path, found.size)
        except files.RefusedFile as e:
            raise RefusedFile.of(e) from None
    return FileSystems.open(path, compression_type=_UNCOMPRESSED)


def read_range(path: str, offset: int, length: int) -> bytes | None:
    """Up to `length` bytes of the file at `path` from byte `offset` (None when there is none):
    one ranged GET on S3, through the client this module keeps (Beam's makes one per open)."""
    try:
        if scheme(path) != "s3":
            with open_read(path, None) as f:  # a span an index found: never more than `length`
                f.seek(offset)
                return f.read(length)
        bucket, key = stores.s3_bucket_key(path)
        return stores.s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")["Body"].read()
    except RefusedFile:
        raise
    except Exception as e:
        if _is_missing(e):
            return None
        if (getattr(e, "response", None) or {}).get("Error", {}).get("Code") == "InvalidRange":
            return b""  # past the end: an empty object has no byte 0
        raise


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
        if is_local(path):
            with _create_local(local_path(path), temp and local_path(temp), in_place) as f:
                yield f
        elif scheme(path) == "s3":
            with stores.create_s3(path) as f:
                yield f
        else:
            with stores.create_remote(path) as f:
                yield f
    except StorageError:
        raise
    except OSError as e:  # ENOSPC, EROFS, EACCES, EDQUOT...
        raise StorageError(path, f"cannot write: {describe(e)}") from None
    except Exception as e:
        if _is_store_error(e):
            raise StorageError(path, f"cannot write: {describe(e)}") from None
        raise


def _is_store_error(error: Exception) -> bool:
    """Errors the cloud clients raise (HTTP, credentials), told from our own bugs by module."""
    module = type(error).__module__
    return isinstance(error, BeamIOError) or module.startswith(("botocore", "boto3", "google", "apache_beam.io", "urllib3", "requests"))


@contextlib.contextmanager
def _create_local(path: str, temp: str | None, in_place: bool = False):
    directory = os.path.dirname(path) or "."
    temp = path if in_place else temp or os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
    os.makedirs(directory, exist_ok=True)
    f = open(temp, "wb")
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
    """Deletes files; a file already gone is not an error (deletes are repeated on retries)."""
    if not paths:
        return
    try:
        if is_local(paths[0]):
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(local_path(path))
        elif scheme(paths[0]) == "s3":
            stores.delete_s3(paths)
        elif scheme(paths[0]) == "gs":
            stores.delete_gcs(paths)
        else:
            FileSystems.delete(paths)
    except BeamIOError as e:
        failed = {p: err for p, err in (e.exception_details or {}).items() if not _is_missing(err)}
        if failed:
            path, err = next(iter(failed.items()))
            raise StorageError(path, f"cannot delete: {describe(err)}") from None
    except OSError as e:
        raise StorageError(e.filename or paths[0], f"cannot delete: {describe(e)}") from None
    except Exception as e:
        if _is_store_error(e):
            raise StorageError(paths[0], f"cannot delete: {describe(e)}") from None
        raise


def _is_missing(error) -> bool:
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
    return isinstance(error, FileNotFoundError) or code in ("404", "NoSuchKey", "NotFound") or "not found" in str(error).lower() or "404" in str(error)


def ensure_dir(directory: str) -> None:
    """Creates a local directory (and its parents); object stores need none."""
    if is_local(directory):
        try:
            os.makedirs(local_path(directory), exist_ok=True)
        except OSError as e:
            raise StorageError(directory, f"cannot create the directory: {describe(e)}") from None

