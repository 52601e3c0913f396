"""Cloud services on loopback for the cloud tests: moto's S3 server, a GCS emulator, and a
stand-in for Google's APIs that records every call (what gcloud would send, and proof that a
launch never touched Cloud Storage).

Nothing here replaces a client: the build, the readers and the checker talk to these servers
through reader.core.storage (boto3 and google-cloud-storage), exactly as to the real services.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import logging
import os
import pathlib
import threading
import urllib.parse
from collections.abc import Iterator

import google_crc32c

from reader.core import layout, schema, tfds_metadata, tfrecord

# Any non-empty key pair: moto checks neither, and Beam must send them rather than look for real ones.
S3_KEY_ID = "facegrid-test-key"
S3_SECRET = "facegrid-test-secret"
S3_REGION = "us-east-1"


@dataclasses.dataclass(frozen=True)
class S3Server:
    """moto's S3 server on 127.0.0.1: its endpoint, the Beam flags that reach it, a boto3 client."""

    endpoint: str
    client: object

    def beam_flags(self) -> list[str]:
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={S3_KEY_ID}",
            f"--s3_secret_access_key={S3_SECRET}",
            f"--s3_region_name={S3_REGION}",
        ]

    def upload_tree(self, bucket: str, prefix: str, root: pathlib.Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())

    def files(self, bucket: str, prefix: str) -> dict[str, bytes]:
        """{name under prefix: bytes} of every object under prefix."""
        listing = self.client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
        return {
            o["Key"][len(prefix) + 1 :]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", [])
        }


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """Starts moto's threaded S3 server on a free loopback port for the duration of the block."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET, region_name=S3_REGION
        )
        yield S3Server(endpoint, client)
    finally:
        server.stop()


def write_fake_google_credentials(path: pathlib.Path) -> pathlib.Path:
    """Application-default credentials that need no network: an access token valid until 2099.

    Beam asks google-auth for default credentials before it builds a GCS client, retrying for
    about 30 seconds when there are none. With these it gets them at once, and since the token
    never expires google-auth never calls the token endpoint. Only an emulator accepts the token.
    """
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "facegrid-test",
                "client_secret": "unused",
                "refresh_token": "unused",
                "token": "facegrid-offline-token",
                "expiry": "2099-01-01T00:00:00Z",
            }
        )
    )
    return path


@dataclasses.dataclass(frozen=True)
class GcsEmulator:
    """gcp-storage-emulator on 127.0.0.1: its endpoint (for STORAGE_EMULATOR_HOST) and a client."""

    endpoint: str
    client: object

    def upload_tree(self, bucket: str, prefix: str, root: pathlib.Path) -> None:
        target = self.client.bucket(bucket)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                target.blob(f"{prefix}/{path.relative_to(root).as_posix()}").upload_from_string(path.read_bytes())

    def files(self, bucket: str, prefix: str) -> dict[str, bytes]:
        return {
            blob.name[len(prefix) + 1 :]: blob.download_as_bytes() for blob in self.client.list_blobs(bucket, prefix=f"{prefix}/")
        }


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[GcsEmulator]:
    """Starts an in-memory GCS emulator holding `bucket` on a free loopback port."""
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        port = server._api._httpd.server_address[1]  # the emulator has no public accessor for a port-0 bind
        endpoint = f"http://127.0.0.1:{port}"
        client = storage.Client(
            project="facegrid-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
        )
        yield GcsEmulator(endpoint, client)
    finally:
        server.stop()


@dataclasses.dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    content_type: str
    body: bytes


class _FakeGoogleApisHandler(http.server.BaseHTTPRequestHandler):
    """Answers the two calls `gcloud dataflow flex-template build/run` make (an object upload to
    Cloud Storage, a Flex Template launch on the Dataflow API) and refuses anything else."""

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        call = ApiCall(self.command, self.path, self.headers.get("content-type", ""), body)
        self.server.calls.append(call)
        if self.command == "POST" and self.path.startswith("/upload/storage/v1/b/"):
            answer = _stored_object(call)
        elif self.command == "POST" and "/flexTemplates:launch" in self.path:
            launch = json.loads(body)["launchParameter"]
            answer = {"job": {"id": "2026-01-01_00_00_00-facegrid-test", "name": launch["jobName"]}}
        else:
            self.send_error(503, "facegrid test: this call is not expected")
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def log_message(self, *args):
        pass


def multipart_content(content_type: str, body: bytes) -> bytes:
    """The object bytes of a JSON-API multipart upload (metadata part, then content part)."""
    boundary = content_type.split("boundary=", 1)[1].strip("'\"").encode()
    content_part = body.split(b"--" + boundary)[2]
    separator = b"\r\n\r\n" if b"\r\n\r\n" in content_part else b"\n\n"
    _, _, content = content_part.partition(separator)
    return content.removesuffix(b"\n").removesuffix(b"\r")


def uploaded(call: ApiCall) -> tuple[str, bytes]:
    """(object name, bytes) of a Cloud Storage multipart upload call."""
    return urllib.parse.parse_qs(urllib.parse.urlparse(call.path).query)["name"][0], multipart_content(
        call.content_type, call.body
    )


def _stored_object(call: ApiCall) -> dict:
    """The Object resource Cloud Storage answers an upload with; gcloud checks size and hashes."""
    name, content = uploaded(call)
    return {
        "bucket": call.path.split("/b/", 1)[1].split("/", 1)[0],
        "name": name,
        "size": str(len(content)),
        "md5Hash": base64.b64encode(hashlib.md5(content).digest()).decode(),
        "crc32c": base64.b64encode(google_crc32c.value(content).to_bytes(4, "big")).decode(),
    }


@contextlib.contextmanager
def fake_google_apis() -> Iterator[tuple[str, list[ApiCall]]]:
    """(endpoint, calls): an HTTP server on loopback standing in for Google's APIs.

    Point gcloud (CLOUDSDK_API_ENDPOINT_OVERRIDES_*) or google-cloud-storage
    (STORAGE_EMULATOR_HOST) at it: every call lands in `calls`, so a test sees what would have
    gone to Google, and can prove that nothing did.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGoogleApisHandler)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.calls
    finally:
        server.shutdown()
        server.server_close()


def check_split(files: dict[str, bytes], split: str) -> dict:
    """Checks what one build wrote (as {name: bytes}); returns its manifest.

    Exactly the shards, manifest and errors file the manifest names are there (no temporary
    file, no lease, nothing of an earlier build left), every shard parses and holds what the
    manifest says, and the counts add up as the design requires.
    """
    manifest = json.loads(files[layout.manifest_name(split)])
    shard_names = [s["file"] for s in manifest["shards"]]
    assert sorted(files) == sorted([*shard_names, layout.manifest_name(split), manifest["errors_file"], *tfds_metadata.FILES])
    records = 0
    for entry in manifest["shards"]:
        data = files[entry["file"]]
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
        parsed = [schema.Record.parse(payload) for _, payload in tfrecord.iter_records(io.BytesIO(data), entry["file"])]
        assert len(parsed) == entry["records"]
        records += len(parsed)
    c = manifest["counts"]
    errors = files[manifest["errors_file"]].decode().splitlines()
    assert records == c["records"] and len(errors) == c["errors"]
    assert c["images_annotated"] == c["records"] + c["errors"]
    assert c["faces_annotated"] == c["faces_stored"] + c["degenerate"] + c["faces_in_errors"]
    assert c["faces_stored"] == c["targets"] + c["dropped"] + c["ignored"]
    return manifest


def local_files(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@contextlib.contextmanager
def every_store(local_dir: str, bucket: str, prefix: str) -> Iterator[dict[str, str]]:
    """{scheme: a directory there}: `local_dir`, and `prefix` in `bucket` on the GCS emulator and on
    moto's S3 server, both up and the storage layer (reader.core.storage) pointed at them until
    the block ends."""
    from reader.core import storage

    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server())
        s3.client.create_bucket(Bucket=bucket)
        gcs = stack.enter_context(gcs_emulator(bucket))
        saved = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
        settings = storage.Settings(s3=storage.S3Settings(s3.endpoint, S3_REGION, S3_KEY_ID, S3_SECRET))
        previous = storage.configure(settings)
        try:
            yield {"file": local_dir, "gs": f"gs://{bucket}/{prefix}", "s3": f"s3://{bucket}/{prefix}"}
        finally:
            storage.configure(previous)
            os.environ.pop("STORAGE_EMULATOR_HOST") if saved is None else os.environ.__setitem__("STORAGE_EMULATOR_HOST", saved)
