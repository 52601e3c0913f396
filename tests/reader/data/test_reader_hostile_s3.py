"""The checker, ShardSequence and make_dataset on s3://, as builds write there: moto's S3 server
on loopback, reached through reader.core.storage (boto3; TensorFlow 2.21 has no s3 filesystem,
and reader/ never imports Beam).

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


def _batches(dataset, epochs: int = 1) -> list:
    """Every batch of `epochs` passes over `dataset`, as NumPy arrays (ragged ones as lists)."""
    out = []
    for _ in range(epochs):
        for batch in dataset:
            out.append([part.to_list() if hasattr(part, "to_list") else part.numpy() for part in _flat(batch)])
    return out


def _flat(batch) -> list:
    if isinstance(batch, dict):
        return [batch[k] for k in sorted(batch)]
    if isinstance(batch, tuple):
        return [leaf for part in batch for leaf in _flat(part)]
    return [batch]


def _assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for got_batch, want_batch in zip(got, want):
        for a, b in zip(got_batch, want_batch, strict=True):
            np.testing.assert_array_equal(
                np.asarray(a, dtype=object) if isinstance(a, list) else a,
                np.asarray(b, dtype=object) if isinstance(b, list) else b,
            )


@pytest.mark.parametrize("training", [False, True], ids=["evaluation", "training"])
def test_make_dataset_reads_s3_as_it_reads_local_disk(s3, keys, good_build, monkeypatch, training):
    """Through the storage layer on S3, TensorFlow's own reader locally: the same batches, in the
    same order for a seed, epoch after epoch (flips included)."""
    data_dir = upload(s3, good_build, f"dataset-{training}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # boto3's own chain, as a training job would set it
    options = (
        {"training": True, "seed": 5, "augment": True, "shuffle_buffer": 16}
        if training
        else {"training": False, "with_boxes": True}
    )
    remote = _batches(reader.make_dataset(data_dir, fx.SPLIT, 4, **options), epochs=2 if training else 1)
    local = _batches(reader.make_dataset(str(good_build), fx.SPLIT, 4, **options), epochs=2 if training else 1)
    assert len(local) >= 2
    _assert_same(remote, local)


def test_make_dataset_names_a_damaged_record_on_s3_as_on_local_disk(s3, keys, good_build, tmp_path, monkeypatch):
    import tensorflow as tf

    from reader.data.dataset import SkippedRecords

    broken = fx.copy_build(good_build, tmp_path / "broken")
    file = fx.shard_files(broken)[0]
    data = bytearray((broken / file).read_bytes())
    data[-10] ^= 0x40  # inside the last record's data
    (broken / file).write_bytes(bytes(data))
    data_dir = upload(s3, broken, "dataset-damaged")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    last = len(fx.read_records(good_build / file)) - 1

    with pytest.raises(ValueError) as on_local:  # hashed when the dataset is made: found at once
        reader.make_dataset(str(broken), fx.SPLIT, 4, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as on_s3:  # found by the read, named by the batch
        _batches(reader.make_dataset(data_dir, fx.SPLIT, 4, training=False))
    problem = f"{file}: record {last} at byte "
    assert str(on_local.value).startswith(f"{broken / file}: record {last} at byte ") and "data checksum mismatch" in str(
        on_local.value
    )
    named = str(on_local.value).removeprefix(str(broken) + "/")
    assert problem in named and f"{data_dir}/{named}" in str(on_s3.value)

    skipped = {"local": SkippedRecords(), "s3": SkippedRecords()}
    read = {
        where: _batches(reader.make_dataset(directory, fx.SPLIT, 4, training=False, skip_corrupt=True, skipped=skipped[where]))
        for where, directory in (("local", str(broken)), ("s3", data_dir))
    }
    _assert_same(read["s3"], read["local"])
    assert skipped["s3"].count == skipped["local"].count == 1
    assert [p.replace(data_dir, "DIR") for p in skipped["s3"].problems] == [
        p.replace(str(broken), "DIR") for p in skipped["local"].problems
    ]
