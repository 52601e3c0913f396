"""Files of a build on s3://, through boto3: one client per process and settings.

An upload is one PUT below boto3's multipart threshold (empty objects included) and a multipart
upload above it, aborted if a part fails: an object appears whole or not at all. (Beam's own S3
writer cannot write an empty object: S3 refuses a multipart upload of zero parts.)
Settings: `S3Settings` (the build's --s3_* flags, the checker's); None leaves a value to boto3's
own chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ~/.aws).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile

from reader.core.storage.clients import Clients
from reader.core.storage.rule import Bound, Entry, StorageError, describe

_SPOOL_BYTES = 16 << 20  # an upload is held in memory up to this size, then on local disk


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Where s3:// requests go, as Beam's S3Options (--s3_endpoint_url, --s3_region_name, ...)
    say it; None leaves the value to boto3's own chain (environment, config files)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    api_version: str | None = None
    verify: str | None = None
    disable_ssl: bool = False


NO_CREDENTIALS = ("give --s3_access_key_id and --s3_secret_access_key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                  "(or ~/.aws/credentials)")  # fmt: skip


def _make_client(settings: S3Settings):
    import boto3

    return boto3.session.Session().client("s3", **_client_arguments(settings))


# A client per environment too: boto3 reads these when the client is made, for what the settings leave to it.
_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")  # fmt: skip
_CLIENTS = Clients(S3Settings(), _make_client, environment=_ENVIRONMENT)
configure, settings, client = _CLIENTS.configure, _CLIENTS.settings, _CLIENTS.client


def _client_arguments(settings: S3Settings) -> dict:
    """boto3's client() arguments for `settings`, as Beam's S3 filesystem passes its S3Options."""
    given = {"endpoint_url": settings.endpoint_url, "region_name": settings.region_name, "api_version": settings.api_version,
             "aws_access_key_id": settings.access_key_id, "aws_secret_access_key": settings.secret_access_key,
             "aws_session_token": settings.session_token,
             "verify": {"false": False, "0": False, "true": True, "1": True}.get(str(settings.verify).lower(), settings.verify)}  # fmt: skip
    return {name: value for name, value in given.items() if value is not None} | (
        {"use_ssl": False} if settings.disable_ssl else {}
    )


def bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.removeprefix("s3://").partition("/")
    return bucket, key


_MISSING = ("404", "NoSuchKey", "NotFound")  # the codes of an object that is not there


def error_code(error: BaseException) -> str | None:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")


def reader_error(path: str, error: Exception) -> OSError:
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


def list_entries(directory: str) -> list[Entry]:
    bucket, key_prefix = bucket_key(directory.rstrip("/") + "/")
    entries = []
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix, Delimiter="/"):
            for o in page.get("Contents", []):
                entries.append(
                    Entry(o["Key"][len(key_prefix) :], f"s3://{bucket}/{o['Key']}", o["Size"], o["LastModified"].timestamp())
                )
    except Exception as e:
        raise StorageError(directory.rstrip("/") + "/", f"cannot list: {describe(e)}") from None
    return entries


def list_names(directory: str) -> list[str]:
    bucket, prefix = bucket_key(directory.rstrip("/") + "/")
    names = []
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names += [o["Key"][len(prefix) :] for o in page.get("Contents", ()) if o["Key"] != prefix]
    except Exception as e:
        raise reader_error(directory, e) from None
    return names


def stat(path: str) -> Entry | None:
    bucket, key = bucket_key(path)
    try:
        head = client().head_object(Bucket=bucket, Key=key)
    except Exception as e:
        if error_code(e) in _MISSING:
            return None
        raise StorageError(path, describe(e)) from None
    return Entry(key.rsplit("/", 1)[-1], path, head["ContentLength"], head["LastModified"].timestamp())


def size(path: str) -> int:
    """The object's size in bytes; FileNotFoundError when there is none."""
    bucket, key = bucket_key(path)
    try:
        return int(client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception as e:
        raise reader_error(path, e) from None


def get(path: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of the object: one ranged GET."""
    bucket, key = bucket_key(path)
    try:
        return client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read()
    except Exception as e:
        raise reader_error(path, e) from None


def read_or_none(path: str, bound: Bound) -> bytes | None:
    """One GET: the size is in the response's headers, checked before the body is read."""
    bucket, key = bucket_key(path)
    try:
        response = client().get_object(Bucket=bucket, Key=key)
    except Exception as e:
        if error_code(e) in _MISSING:
            return None
        raise
    try:
        bound.check(path, int(response["ContentLength"]))
        return response["Body"].read(bound.limit + 1)
    finally:
        response["Body"].close()


def get_range(path: str, offset: int, length: int) -> bytes | None:
    """One ranged GET; None when there is no object, b"" past its end."""
    bucket, key = bucket_key(path)
    try:
        return client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")["Body"].read()
    except Exception as e:
        code = error_code(e)
        if code in _MISSING:
            return None
        if code == "InvalidRange":
            return b""  # past the end: an empty object has no byte 0
        raise


@contextlib.contextmanager
def create(path: str):
    bucket, key = bucket_key(path)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool
        spool.seek(0)
        # upload_fileobj: one PUT below its multipart threshold (empty objects included), a
        # multipart upload above, aborted if a part fails.
        client().upload_fileobj(spool, bucket, key)


def delete(paths: list[str]) -> None:
    by_bucket: dict[str, list[str]] = {}
    for path in paths:
        bucket, key = bucket_key(path)
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, keys in by_bucket.items():
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects takes at most 1,000 keys
            batch = keys[start : start + 1000]
            response = client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            for error in response.get("Errors", []):
                if error.get("Code") != "NoSuchKey":
                    raise StorageError(
                        f"s3://{bucket}/{error.get('Key')}", f"cannot delete: {error.get('Code')}: {error.get('Message')}"
                    )
