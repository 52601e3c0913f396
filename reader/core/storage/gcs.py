"""Files of a build on gs://, through google-cloud-storage: one client per process and settings.

An object appears when its upload completes, never in part (a multipart upload up to 8 MiB, a
resumable one above). Credentials are google-auth's application default ones (or anonymous
where STORAGE_EMULATOR_HOST names an emulator, which the client then calls instead of Google).
No TensorFlow and no Beam: the checker and ShardSequence read gs:// with this alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile

from reader.core.storage.clients import Clients
from reader.core.storage.rule import Bound, Entry, StorageError, describe

_SPOOL_BYTES = 16 << 20  # an upload is held in memory up to this size, then on local disk
_BATCH = 100  # Cloud Storage's batch requests take at most 100 calls
NO_CREDENTIALS = "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS"


@dataclasses.dataclass(frozen=True)
class GcsSettings:
    """The Google Cloud project gs:// requests bill (Beam's --project); None: google-auth's."""

    project: str | None = None


def _make_client(settings: GcsSettings):
    from google.cloud import storage

    return storage.Client(project=settings.project)


# A client per emulator too: it reads STORAGE_EMULATOR_HOST when it is made.
_CLIENTS = Clients(GcsSettings(), _make_client, environment=("STORAGE_EMULATOR_HOST",))
configure, settings, client = _CLIENTS.configure, _CLIENTS.settings, _CLIENTS.client


def bucket_name(path: str) -> tuple[str, str]:
    bucket, _, name = path.removeprefix("gs://").partition("/")
    return bucket, name


def is_missing(error: BaseException) -> bool:
    return getattr(error, "code", None) == 404 or type(error).__name__ == "NotFound"


def reader_error(path: str, error: Exception) -> OSError:
    """A Cloud Storage failure as an OSError naming the path (FileNotFoundError for a missing
    object or bucket), one line."""
    if is_missing(error):
        return FileNotFoundError(f"{path}: no such file on Cloud Storage")
    if type(error).__name__ == "DefaultCredentialsError":
        return OSError(f"{path}: no Google Cloud credentials: {NO_CREDENTIALS}")
    return OSError(f"{path}: Cloud Storage refused: {describe(error)}")


def _blob_entry(bucket: str, prefix: str, blob) -> Entry:
    return Entry(blob.name[len(prefix) :], f"gs://{bucket}/{blob.name}", blob.size or 0, blob.updated.timestamp())


def list_entries(directory: str) -> list[Entry]:
    # By prefix, never by a glob: a directory `gs://b/ou*` must not list the files of `gs://b/out`.
    bucket, prefix = bucket_name(directory.rstrip("/") + "/")
    try:
        return [_blob_entry(bucket, prefix, b) for b in client().list_blobs(bucket, prefix=prefix, delimiter="/")]
    except Exception as e:
        raise StorageError(directory.rstrip("/") + "/", f"cannot list: {describe(e)}") from None


def list_names(directory: str) -> list[str]:
    """The objects directly under `directory`, and its sub-"directories" (as tf.io.gfile lists them)."""
    bucket, prefix = bucket_name(directory.rstrip("/") + "/")
    try:
        listing = client().list_blobs(bucket, prefix=prefix, delimiter="/")
        names = [b.name[len(prefix) :] for b in listing if b.name != prefix]
        return names + [p[len(prefix) :].rstrip("/") for p in listing.prefixes]
    except Exception as e:
        raise reader_error(directory, e) from None


def stat(path: str) -> Entry | None:
    bucket, name = bucket_name(path)
    try:
        blob = client().bucket(bucket).get_blob(name)
    except Exception as e:
        raise StorageError(path, describe(e)) from None
    return None if blob is None else Entry(name.rsplit("/", 1)[-1], path, blob.size or 0, blob.updated.timestamp())


def size(path: str) -> int:
    """The object's size in bytes; FileNotFoundError when there is none."""
    bucket, name = bucket_name(path)
    try:
        blob = client().bucket(bucket).get_blob(name)
    except Exception as e:
        raise reader_error(path, e) from None
    if blob is None:
        raise FileNotFoundError(f"{path}: no such file on Cloud Storage")
    return blob.size or 0


def _download(path: str, start: int | None = None, end: int | None = None) -> bytes:
    """Bytes [start, end] (inclusive, as Cloud Storage counts) of the object, as stored."""
    bucket, name = bucket_name(path)
    return client().bucket(bucket).blob(name).download_as_bytes(start=start, end=end, raw_download=True, checksum=None)


def get(path: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of the object: one ranged GET."""
    try:
        return _download(path, start, end - 1)
    except Exception as e:
        raise reader_error(path, e) from None


def read_or_none(path: str, bound: Bound) -> bytes | None:
    """The size is looked at before the bytes are read (two requests)."""
    found = stat(path)
    if found is None:
        return None
    bound.check(path, found.size)
    return _download(path, 0, bound.limit) if found.size else b""


def get_range(path: str, offset: int, length: int) -> bytes | None:
    """One ranged GET; None when there is no object, b"" past its end."""
    try:
        return _download(path, offset, offset + length - 1)
    except Exception as e:
        if is_missing(e):
            return None
        if getattr(e, "code", None) == 416:  # past the end: an empty object has no byte 0
            return b""
        raise


@contextlib.contextmanager
def create(path: str):
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = bucket_name(path)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool  # on an exception nothing is uploaded: GCS then holds no object
        size = spool.tell()
        spool.seek(0)
        # Retried as every call is: the whole object again, so a retry cannot leave a part.
        client().bucket(bucket).blob(name).upload_from_file(spool, size=size, retry=DEFAULT_RETRY)


def delete(paths: list[str]) -> None:
    """Batch requests of up to 100 deletes; an object already gone (404) is no error."""
    for start in range(0, len(paths), _BATCH):
        chunk = paths[start : start + _BATCH]
        batch = client().batch(raise_exception=False)
        with batch:
            for path in chunk:
                bucket, name = bucket_name(path)
                client().bucket(bucket).delete_blob(name)
        for path, response in zip(chunk, batch._responses):
            if response.status_code >= 400 and response.status_code != 404:
                raise StorageError(path, f"cannot delete: HTTP {response.status_code}")
