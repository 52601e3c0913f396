"""The checker on cloud builds as a user runs it, `python -m reader.check` in its own process: a
gs:// build on the GCS emulator and an s3:// build on moto's S3 server, both on loopback. It
passes, and neither TensorFlow nor Beam is ever imported (the `train` extra is not needed to
check a gs:// build: reader.core.storage reads it with google-cloud-storage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import build_edits as fx
from tests.support import cloud_fixtures
from tests.support.paths import TESTS

BUCKET = "facegrid-check-cloud"
NEVER_IMPORTED = ("tensorflow", "keras", "apache_beam")


def _check(data_dir: str, flags: list[str], env: dict[str, str]) -> dict:
    """Runs `python -X importtime -m reader.check --json` on `data_dir`; returns its report,
    after asserting that none of NEVER_IMPORTED was imported (by the checker or its workers)."""
    command = [sys.executable, "-X", "importtime", "-m", "reader.check", f"--data_dir={data_dir}", f"--split={fx.SPLIT}",
               "--json", "--progress=never", *flags]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=TESTS.parent, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    assert "reader" in imported  # -X importtime did report the imports
    assert not imported & set(NEVER_IMPORTED), sorted(imported & set(NEVER_IMPORTED))
    return json.loads(done.stdout)


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_the_checker_passes_a_cloud_build_without_tensorflow(scheme, good_build):
    records = fx.read_manifest(good_build)["counts"]["records"]
    if scheme == "gs":
        with cloud_fixtures.gcs_emulator(BUCKET) as gcs:
            gcs.upload_tree(BUCKET, "checked", good_build)
            # No credentials at all: the client goes to the emulator, anonymously.
            env = {"STORAGE_EMULATOR_HOST": gcs.endpoint, "GOOGLE_APPLICATION_CREDENTIALS": os.devnull}
            report = _check(f"gs://{BUCKET}/checked", [], env)
    else:
        with cloud_fixtures.s3_server() as s3:
            s3.client.create_bucket(Bucket=BUCKET)
            s3.upload_tree(BUCKET, "checked", good_build)
            env = {"AWS_ACCESS_KEY_ID": cloud_fixtures.S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": cloud_fixtures.S3_SECRET}
            report = _check(
                f"s3://{BUCKET}/checked",
                [f"--s3_endpoint_url={s3.endpoint}", f"--s3_region_name={cloud_fixtures.S3_REGION}"],
                env,
            )
    assert report["ok"] is True, report["problems"]
    assert report["records"] == records
