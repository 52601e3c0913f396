"""The object stores' own clients: listing, whole uploads and batch deletes on s3:// and gs://.

pipeline/storage.py decides which store a path is on; this module talks to S3 through boto3 and
to GCS through google-cloud-storage, each client made once per process from Beam's pipeline
options (so the --s3_* flags and the GCS credentials reach workers as Beam's filesystems do).
Beam's own S3 and GCS filesystems are bypassed where they are slow (a client per call, a listing
per deleted file), glob a directory's name, or cannot write an empty object.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.store_types import Entry, StorageError, describe

_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED
_SPOOL_BYTES = 16 << 20  # an S3 upload is held in memory up to this size, then on local disk


def list_s3(prefix: str) -> list[Entry]:
    # Beam's S3 filesystem builds a new boto3 client (a few hundred ms) for every call.
    bucket, key_prefix = s3_bucket_key(prefix)
    entries = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix, Delimiter="/"):
            for o in page.get("Contents", []):
                name = o["Key"][len(key_prefix) :]
                entries.append(Entry(name, f"s3://{bucket}/{o['Key']}", o["Size"], o["LastModified"].timestamp()))
    except Exception as e:
        raise StorageError(prefix, f"cannot list: {describe(e)}") from None
    return sorted((e for e in entries if e.name), key=lambda e: e.name)


def list_gcs(prefix: str) -> list[Entry]:
    # By prefix, not by Beam's match: that takes the directory's name as a glob pattern, and an
    # output directory `gs://b/ou*` would list (and a commit remove) the files of `gs://b/out`.
    bucket, key_prefix = prefix.removeprefix("gs://").split("/", 1)
    try:
        blobs = list(gcs_client().list_blobs(bucket, prefix=key_prefix, delimiter="/"))
    except Exception as e:
        raise StorageError(prefix, f"cannot list: {describe(e)}") from None
    entries = [Entry(b.name[len(key_prefix) :], f"gs://{bucket}/{b.name}", b.size or 0, b.updated.timestamp()) for b in blobs]
    return sorted((e for e in entries if e.name), key=lambda e: e.name)


_GCS_CLIENTS: dict[int, object] = {}


def gcs_client():
    """The google-cloud-storage client of Beam's gcsio, made from the pipeline options once per
    process (a forked process makes its own: a client's connections must not be shared)."""
    from apache_beam.io.gcp import gcsio

    client = _GCS_CLIENTS.get(os.getpid())
    if client is None:
        client = _GCS_CLIENTS[os.getpid()] = gcsio.GcsIO(pipeline_options=FileSystems._pipeline_options).client
    return client


@contextlib.contextmanager
def create_remote(path: str):
    f = FileSystems.create(path, compression_type=_UNCOMPRESSED)
    yield f  # on an exception the upload is left unfinished: GCS then holds no object
    f.close()


@contextlib.contextmanager
def create_s3(path: str):
    bucket, key = s3_bucket_key(path)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool
        spool.seek(0)
        # upload_fileobj: one PUT below its multipart threshold (empty objects included), a
        # multipart upload above, aborted if a part fails.
        s3_client().upload_fileobj(spool, bucket, key)


def s3_bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.removeprefix("s3://").partition("/")
    return bucket, key


_S3_CLIENTS: dict[tuple, object] = {}  # (pid, the S3 options) -> client


def s3_client():
    """boto3's S3 client, configured from the pipeline options as Beam's S3 filesystem is (the
    endpoint, keys and region of --s3_* flags reach workers the same way)."""
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    options = FileSystems._pipeline_options or PipelineOptions()  # what Beam's own filesystems use
    key = tuple(sorted(options.view_as(S3Options).get_all_options(current_only=True).items(), key=str))
    key = (os.getpid(), *((k, str(v)) for k, v in key))  # a forked process makes its own
    client = _S3_CLIENTS.get(key)
    if client is None:
        client = _S3_CLIENTS[key] = boto3_client.Client(options).client
    return client


def delete_s3(paths: list[str]) -> None:
    client = s3_client()
    by_bucket: dict[str, list[str]] = {}
    for path in paths:
        bucket, key = s3_bucket_key(path)
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, keys in by_bucket.items():
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects takes at most 1,000 keys
            batch = keys[start : start + 1000]
            response = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            for error in response.get("Errors", []):
                if error.get("Code") != "NoSuchKey":
                    raise StorageError(f"s3://{bucket}/{error.get('Key')}", f"cannot delete: {error.get('Code')}: {error.get('Message')}")


def delete_gcs(paths: list[str]) -> None:
    # Beam's GCS filesystem lists each path before deleting it (one listing call per file);
    # its gcsio deletes up to 100 objects per batch request, and a 404 is no error there.
    from apache_beam.io.gcp import gcsio

    for path, error in gcsio.GcsIO(pipeline_options=FileSystems._pipeline_options).delete_batch(paths):
        if error is not None:
            raise StorageError(path, f"cannot delete: HTTP {error}")
