"""The checker and ShardSequence on s3://, as builds write there: moto's S3 server on loopback,
reached with boto3 alone (TensorFlow 2.21 has no s3 filesystem, and reader/ never imports Beam).

The checker's small build (tests/support/sources.py's CHECKER_CASES) is uploaded as it is; file names come from
its manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import reader
from reader.check import cli as check
from reader.check import runner as check_runner
from tests.support import build_edits as fx
from tests.support import cloud_fixtures
from tests.support.checker import failed, problems, run_check
from tests.support.paths import TESTS

BUCKET = "facegrid-check"


@pytest.fixture(scope="module")
def s3():
    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def keys(monkeypatch):
    """boto3's standard chain: keys and region from the environment, no endpoint (the tests pass
    it as the checker's flag, or set AWS_ENDPOINT_URL themselves)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", cloud_fixtures.S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", cloud_fixtures.S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", cloud_fixtures.S3_REGION)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def upload(s3, build, prefix: str) -> str:
    s3.upload_tree(BUCKET, prefix, build)
    return f"s3://{BUCKET}/{prefix}"


def test_the_checker_reads_s3_and_names_a_missing_shard(s3, keys, good_build, capsys, monkeypatch):
    data_dir = upload(s3, good_build, "checked")
    endpoint = f"--s3_endpoint_url={s3.endpoint}"
    code, report = run_check(data_dir, endpoint, capsys=capsys)
    assert code == 0, report["problems"]
    assert report["records"] == fx.read_manifest(good_build)["counts"]["records"]
    # In worker processes too (spawned here, as TensorFlow is loaded): they get the endpoint.
    monkeypatch.setattr(check_runner, "INLINE_BELOW", 0)
    capsys.readouterr()
    assert check.main([f"--data_dir={data_dir}", "--split=val", "--json", "--workers=2", "--progress=never", endpoint]) == 0
    capsys.readouterr()

    file = fx.shard_files(good_build)[1]
    s3.client.delete_object(Bucket=BUCKET, Key=f"checked/{file}")
    code, report = run_check(data_dir, endpoint, capsys=capsys)
    assert code == 1 and failed(report) == {"shard_set"}
    [(where, record, message)] = problems(report, "shard_set")
    assert (where, record) == (file, None) and message.startswith("missing")


def test_the_checker_names_a_damaged_record_on_s3(s3, keys, good_build, tmp_path, capsys):
    broken = fx.copy_build(good_build, tmp_path)
    file = fx.shard_files(broken)[0]
    data = bytearray((broken / file).read_bytes())
    data[-10] ^= 0x40  # inside the last record's data
    (broken / file).write_bytes(bytes(data))
    code, report = run_check(upload(s3, broken, "damaged"), f"--s3_endpoint_url={s3.endpoint}", capsys=capsys)
    assert code == 1 and failed(report) == {"framing", "shard_files"}
    [(where, record, message)] = problems(report, "framing")
    assert (where, record) == (file, len(fx.read_records(good_build / file)) - 1) and "data checksum mismatch" in message


def test_the_command_line_on_s3_imports_no_beam(s3, keys, good_build):
    data_dir = upload(s3, good_build, "cli")
    script = (
        "import sys\n"
        "from reader.check import cli as check\n"
        f"code = check.main(['--data_dir={data_dir}', '--split=val', '--json', '--s3_endpoint_url={s3.endpoint}'])\n"
        "assert 'apache_beam' not in sys.modules, 'reader imported Beam'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=TESTS.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["ok"] is True


def test_shard_sequence_reads_s3_with_ranged_gets(s3, keys, good_build, monkeypatch):
    data_dir = upload(s3, good_build, "sequence")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # boto3's own chain, as a training job would set it
    remote = reader.ShardSequence(data_dir, fx.SPLIT, 4, shuffle=True, seed=1)
    local = reader.ShardSequence(str(good_build), fx.SPLIT, 4, shuffle=True, seed=1, cache_index=False)
    assert len(remote) == len(local)
    for batch in range(len(local)):
        for got, want in zip(remote[batch], local[batch]):
            np.testing.assert_array_equal(got, want)
    file = fx.shard_files(good_build)[2]
    s3.client.delete_object(Bucket=BUCKET, Key=f"sequence/{file}")
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/sequence/{file}: missing"):
        reader.ShardSequence(data_dir, fx.SPLIT, 4, shuffle=False)


def test_make_dataset_refuses_s3_saying_why(s3, keys):
    with pytest.raises(ValueError, match=r"s3://.*: make_dataset reads local and gs:// directories only: TensorFlow .* has no s3:// filesystem"):
        reader.make_dataset(f"s3://{BUCKET}/anything", "val", 4, training=False)
