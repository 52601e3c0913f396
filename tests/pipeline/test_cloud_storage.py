"""The build reading from and writing to cloud storage for real: s3:// on moto's S3 server and
gs:// on a GCS emulator, both on loopback, reached through reader.core.storage.

Each build runs as a user runs it, `python -m pipeline` with the default runner (FnApiRunner,
multi_processing): the worker processes must get the storage settings too, not only the launcher.
What it writes is read back with the storage's own client and must equal, byte for byte, a local
build of the same input.
"""

import contextlib
import os
import subprocess
import sys

import pytest

from reader.core import layout
from tests.support import cloud_fixtures
from tests.support.builds import build, without_build_ids
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

BUCKET = "facegrid-test"
SPLIT = "train"
FLAGS = [f"--split={SPLIT}", "--num_shards=3", "--max_error_fraction=0.5"]
# Two worker processes whatever the machine: the options must cross a process boundary.
WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
IN_MEMORY = ["--direct_running_mode=in_memory"]
TIMEOUT = 180  # seconds; a worker without the endpoint or keys would retry for many minutes


@pytest.fixture(scope="module")
def local_build(tmp_path_factory) -> dict[str, bytes]:
    """The same input built on local disk, in memory: what the cloud builds must write."""
    out = tmp_path_factory.mktemp("local")
    build(out, "--num_shards=3", split=SPLIT)
    return cloud_fixtures.local_files(out)


def _build_cli(scheme_root: str, extra: list[str], env: dict[str, str] | None = None, workers=WORKERS) -> str:
    """Runs `python -m pipeline` on {scheme_root}/source into {scheme_root}/shards; returns stdout."""
    command = [
        sys.executable, "-m", "pipeline",
        f"--annotations={scheme_root}/source/{FIXTURE_ANNOTATIONS.name}",
        f"--images_dir={scheme_root}/source/images",
        f"--output_dir={scheme_root}/shards",
        *FLAGS, *workers, *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-6000:]
    return done.stdout


def _same_as_local(written: dict[str, bytes], local: dict[str, bytes], images_dir: str) -> None:
    """Shards and manifest byte for byte; errors.jsonl too, once the local images directory in
    its details (the path of a missing file) reads as the cloud one."""
    written, local = without_build_ids(written), without_build_ids(local)
    errors = layout.errors_name(SPLIT, "b" * 12).replace("b" * 12, "BUILD")
    assert {k: v for k, v in written.items() if k != errors} == {k: v for k, v in local.items() if k != errors}
    assert written[errors].decode() == local[errors].decode().replace(str(FIXTURE_IMAGES), images_dir)


def test_build_on_s3_matches_the_local_build(local_build):
    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket=BUCKET)
        s3.upload_tree(BUCKET, "source/images", FIXTURE_IMAGES)
        s3.client.put_object(Bucket=BUCKET, Key=f"source/{FIXTURE_ANNOTATIONS.name}", Body=FIXTURE_ANNOTATIONS.read_bytes())
        # An earlier build's leftovers, which the build must replace and remove.
        s3.client.put_object(Bucket=BUCKET, Key=f"shards/{SPLIT}-00000-of-00005.tfrecord", Body=b"stale")

        stdout = _build_cli(f"s3://{BUCKET}", s3.beam_flags())
        written = s3.files(BUCKET, "shards")

    manifest = cloud_fixtures.check_split(written, SPLIT)
    assert manifest["counts"]["errors"] > 0  # the fixture's broken images, reported on S3 too
    _same_as_local(written, local_build, f"s3://{BUCKET}/source/images")
    assert f"wrote s3://{BUCKET}/shards/{SPLIT}.manifest.json" in stdout  # the launcher read it back


def test_build_on_gcs_emulator_matches_the_local_build(local_build, tmp_path):
    with cloud_fixtures.gcs_emulator(BUCKET) as gcs:
        gcs.upload_tree(BUCKET, "source/images", FIXTURE_IMAGES)
        gcs.client.bucket(BUCKET).blob(f"source/{FIXTURE_ANNOTATIONS.name}").upload_from_string(FIXTURE_ANNOTATIONS.read_bytes())
        gcs.client.bucket(BUCKET).blob(f"shards/{SPLIT}-00000-of-00005.tfrecord").upload_from_string(b"stale")

        env = {
            # google-cloud-storage sends every call there, in the launcher and in each worker.
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(cloud_fixtures.write_fake_google_credentials(tmp_path / "adc.json")),
        }
        stdout = _build_cli(f"gs://{BUCKET}", ["--project=facegrid-test"], env)
        written = gcs.files(BUCKET, "shards")

    cloud_fixtures.check_split(written, SPLIT)
    _same_as_local(written, local_build, f"gs://{BUCKET}/source/images")
    assert f"wrote gs://{BUCKET}/shards/{SPLIT}.manifest.json" in stdout


def _usable_entries() -> str:
    """The fixture annotation file without its broken images: a build with nothing unusable."""
    lines, keep, out = FIXTURE_ANNOTATIONS.read_text().splitlines(), True, []
    for line in lines:
        if line.endswith((".jpg", ".png")):
            keep = not line.startswith(("99--Broken/", "../"))
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"


CASES = {
    # name: (annotation text, flags, shards expected empty)
    "no_unusable_image": (_usable_entries, ["--num_shards=3"], 0),
    "one_record_in_64_shards": (lambda: "0--Parade/0_Parade_rgb_1.jpg\n1\n106 28 94 75 0 0 0 0 0 0 \n", ["--num_shards=64"], 63),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_empty_errors_files_and_empty_shards_are_written_on_cloud_storage(scheme, case, tmp_path):
    """S3 refuses a multipart upload of zero parts, which is what Beam's own S3 writer makes of
    an empty file: a build with no unusable image, or with more shards than images, failed."""
    text, flags, empty = CASES[case]
    annotations = text().encode()
    with contextlib.ExitStack() as stack:
        if scheme == "s3":
            s3 = stack.enter_context(cloud_fixtures.s3_server())
            s3.client.create_bucket(Bucket=BUCKET)
            s3.upload_tree(BUCKET, "source/images", FIXTURE_IMAGES)
            s3.client.put_object(Bucket=BUCKET, Key=f"source/{FIXTURE_ANNOTATIONS.name}", Body=annotations)
            extra, env, files = s3.beam_flags(), None, lambda: s3.files(BUCKET, "shards")
        else:
            gcs = stack.enter_context(cloud_fixtures.gcs_emulator(BUCKET))
            gcs.upload_tree(BUCKET, "source/images", FIXTURE_IMAGES)
            gcs.client.bucket(BUCKET).blob(f"source/{FIXTURE_ANNOTATIONS.name}").upload_from_string(annotations)
            extra = ["--project=facegrid-test"]
            env = {
                "STORAGE_EMULATOR_HOST": gcs.endpoint,
                "GOOGLE_APPLICATION_CREDENTIALS": str(cloud_fixtures.write_fake_google_credentials(tmp_path / "adc.json")),
            }
            files = lambda: gcs.files(BUCKET, "shards")  # noqa: E731
        _build_cli(f"{scheme}://{BUCKET}", [*flags, *extra], env, workers=IN_MEMORY)
        written = files()
    manifest = cloud_fixtures.check_split(written, SPLIT)
    assert manifest["counts"]["errors"] == 0 and written[manifest["errors_file"]] == b""
    assert sum(1 for s in manifest["shards"] if written[s["file"]] == b"" and s["records"] == 0) == empty
