"""Hostile builds: make_dataset, ShardSequence and the checker each name the shard (and record)
of what is wrong, and none hangs.

Each test breaks a copy of the checker's small build (tests/support/sources.py's CHECKER_CASES: 10 records in 3
shards); file names come from its manifest, whichever layout the pipeline writes.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import tensorflow as tf

import reader
from reader.core import protowire, schema
from tests.support import build_edits as fx
from tests.support.checker import failed, problems, run_check

BATCH = 2


@pytest.fixture
def broken(tmp_path, good_build):
    return fx.copy_build(good_build, tmp_path)


def read_all(dataset) -> int:
    """Records in one pass of a make_dataset dataset."""
    return sum(int(images.shape[0]) for images, _ in dataset)


def read_all_batches(sequence) -> int:
    return sum(len(sequence[i][0]) for i in range(len(sequence)))


def dataset_error(data_dir, *, training=False, skip_corrupt=False, timeout=60.0) -> str:
    """The message of the error one pass of make_dataset ends with (read in a thread, so that a
    reader spinning forever fails the test instead of hanging it)."""
    dataset = reader.make_dataset(str(data_dir), fx.SPLIT, BATCH, training=training, seed=0, skip_corrupt=skip_corrupt)
    outcome = []

    def run():
        try:
            outcome.append(f"no error: {read_all(dataset)} records")
        except tf.errors.OpError as e:
            outcome.append(_unescaped(e.message))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert outcome, f"make_dataset still reading after {timeout} s"
    return outcome[0]


def _unescaped(message: str) -> str:
    """tf.debugging.Assert prints its message C-escaped (' as \\'): read it as the user does."""
    return message.replace("\\'", "'")


def sequence_error(data_dir) -> str:
    with pytest.raises(schema.SchemaError) as raised:
        read_all_batches(reader.ShardSequence(str(data_dir), fx.SPLIT, BATCH, shuffle=False, cache_index=False))
    return str(raised.value)


def replace_records(data_dir, file: str, make) -> None:
    """Rewrites every record of shard `file` as make(index, record) (fresh CRCs) and brings the
    manifest's sizes and checksums in line: only parsing can tell."""
    records = fx.read_records(data_dir / file)
    fx.write_records(data_dir / file, [make(i, r) for i, r in enumerate(records)])
    fx.refresh_manifest(data_dir)


# ---- shards the directory lacks --------------------------------------------------------------


def test_a_missing_shard_fails_at_once_naming_it(broken):
    file = fx.shard_files(broken)[1]
    reader.ShardSequence(str(broken), fx.SPLIT, BATCH, shuffle=False)  # caches the index next to the shards
    (broken / file).unlink()
    for skip_corrupt in (False, True):
        with pytest.raises(FileNotFoundError, match=rf"{re.escape(file)}: missing: {fx.SPLIT}.manifest.json lists this shard"):
            reader.make_dataset(str(broken), fx.SPLIT, BATCH, training=False, skip_corrupt=skip_corrupt)
    # Even with the cached index, which would have spared reading the shard.
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(file)}: missing"):
        reader.ShardSequence(str(broken), fx.SPLIT, BATCH, shuffle=False)


@pytest.mark.parametrize("skip_corrupt", [False, True])
def test_a_shard_removed_while_reading_is_named_not_retried_forever(broken, skip_corrupt, counting):
    file = fx.shard_files(broken)[2]
    dataset = reader.make_dataset(str(broken), fx.SPLIT, BATCH, training=False, skip_corrupt=skip_corrupt)
    (broken / file).unlink()  # as a build that commits removes the files of the one before
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_error_of(dataset)), daemon=True)
    thread.start()
    thread.join(60)
    assert outcome, "make_dataset still reading after 60 s"
    assert f"{file}: cannot open shard" in outcome[0], outcome[0]


def _error_of(dataset) -> str:
    try:
        return f"no error: {read_all(dataset)} records"
    except tf.errors.OpError as e:
        return e.message


# ---- manifest entries that disagree with their shards ----------------------------------------


@pytest.fixture(params=["counted", "gated"])
def counting(request, monkeypatch):
    """Both ways make_dataset holds shards to their entries: local shards counted from their
    headers when the dataset is made ("counted"), or each read held to its promise as it goes
    ("gated", as for remote shards)."""
    if request.param == "gated":
        monkeypatch.setattr(reader.data.damage, "count_local", lambda manifest, strict: False)
    return request.param


def dataset_failure(data_dir, counting: str, **options) -> str:
    """The message make_dataset fails with: when made ("counted"), or while reading ("gated")."""
    if counting == "counted":
        with pytest.raises(ValueError) as raised:
            reader.make_dataset(str(data_dir), fx.SPLIT, BATCH, seed=0, **options)
        return str(raised.value)
    return dataset_error(data_dir, **options)


@pytest.mark.parametrize("training", [False, True])
def test_an_entry_that_understates_its_shard_fails_naming_it(broken, training, counting):
    manifest = fx.read_manifest(broken)
    entry = manifest["shards"][1]
    entry["records"] -= 1
    fx.count_records(manifest, -1)  # the counts in step: only the shard disagrees with its entry
    fx.write_manifest(broken, manifest)
    held = entry["records"] + 1
    message = f"{entry['file']}: holds {held} records, the manifest promises {entry['records']}"
    assert message in dataset_failure(broken, counting, training=training)
    assert message in dataset_failure(
        broken, counting, training=training, skip_corrupt=True
    )  # more records are no damage to skip
    with pytest.raises(ValueError, match=re.escape(message)):
        reader.ShardSequence(str(broken), fx.SPLIT, BATCH, shuffle=False, cache_index=False)


def test_an_entry_that_overstates_its_shard_fails_naming_it(broken, counting):
    manifest = fx.read_manifest(broken)
    entry = manifest["shards"][0]
    entry["records"] += 1
    fx.count_records(manifest, +1)
    fx.write_manifest(broken, manifest)
    message = f"{entry['file']}: holds {entry['records'] - 1} records, the manifest promises {entry['records']}"
    assert message in dataset_failure(broken, counting, training=True)
    with pytest.raises(ValueError, match=re.escape(message)):
        reader.ShardSequence(str(broken), fx.SPLIT, BATCH, shuffle=False, cache_index=False)


# ---- records that do not parse ---------------------------------------------------------------


def test_a_shard_of_another_schema_is_named_with_its_record(broken, capsys):
    file = fx.shard_files(broken)[1]
    # A valid TFRecord of tf.train.Examples, of some other dataset.
    replace_records(
        broken,
        file,
        lambda i, _: protowire.encode_example(
            {schema.ENCODED: ("bytes", [b"\xff\xd8 not ours"]), "image/class/label": ("int64", [i])}
        ),
    )
    expected = f"{file}: record 0: missing key {schema.FORMAT!r}"
    assert expected in dataset_error(broken)
    assert expected in sequence_error(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and "schema" in failed(report)
    found = problems(report, "schema")
    assert {(f, r) for f, r, _ in found} == {(file, i) for i in range(len(fx.read_records(broken / file)))}
    assert all(m == f"missing key {schema.FORMAT!r}" for _, _, m in found)


def test_a_value_of_another_kind_is_named_with_its_record(broken, capsys):
    file = fx.shard_files(broken)[0]

    def float_height(i, data):
        if i != 1:
            return data
        features = protowire.decode_example(data)
        features[schema.HEIGHT] = ("float", np.array([224.0], np.float32))
        return protowire.encode_example(features)

    replace_records(broken, file, float_height)
    message = dataset_error(broken)
    # TensorFlow's own parse error, with the record named.
    assert f"{file}: record 1" in message and schema.HEIGHT in message and "Data types don't match" in message, message
    assert f"{file}: record 1: key {schema.HEIGHT!r}: expected int64 values, found float" in sequence_error(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert problems(report, "schema") == [(file, 1, f"key {schema.HEIGHT!r}: expected int64 values, found float")]


def test_a_resealed_malformed_example_is_named_with_its_record(broken, capsys):
    file = fx.shard_files(broken)[2]
    # Not an Example any more, though the TFRecord CRCs and the manifest's checksums match.
    replace_records(broken, file, lambda i, data: data[: len(data) // 2] if i == 1 else data)
    expected = f"{file}: record 1: not a tf.train.Example"
    assert expected in dataset_error(broken)
    assert expected in dataset_error(broken, training=True, skip_corrupt=True)  # parse errors are no damage to skip
    assert expected in sequence_error(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    [(where, record, message)] = problems(report, "schema")
    assert (where, record) == (file, 1) and message.startswith("not a tf.train.Example")


# ---- a manifest whose config disagrees with its records --------------------------------------


def test_a_manifest_whose_grid_size_disagrees_with_its_records_says_so(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["config"]["grid_size"] = 8
    fx.write_manifest(broken, manifest)
    first = fx.shard_files(broken)[0]
    expected = (
        f"{first}: record 0: key {schema.GRID!r}: expected 320 values for the manifest's grid_size 8, "
        f"found 245 (a 7x7 grid): the manifest disagrees with this record"
    )
    assert expected in dataset_error(broken)
    assert expected in sequence_error(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert (first, 0, expected.split(": record 0: ")[1]) in problems(report, "schema")


def test_a_manifest_whose_input_size_disagrees_with_its_records_says_so(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["config"]["input_size"] = 256
    fx.write_manifest(broken, manifest)
    first = fx.shard_files(broken)[0]
    problem = "image/height, image/width: expected 256, 256 (the manifest's input_size), found 224, 224"
    assert f"{first}: record 0: {problem}" in dataset_error(broken)
    assert f"{first}: record 0: {problem}" in sequence_error(broken)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert (first, 0, problem) in problems(report, "images")


def test_the_good_build_reads_whole_with_either_reader(good_build, counting):
    """The checks above cost nothing in correctness: the intact build reads every record."""
    records = fx.read_manifest(good_build)["counts"]["records"]
    assert read_all(reader.make_dataset(str(good_build), fx.SPLIT, BATCH, training=False)) == records
    assert read_all(reader.make_dataset(str(good_build), fx.SPLIT, BATCH, training=False, skip_corrupt=True)) == records
    sequence = reader.ShardSequence(str(good_build), fx.SPLIT, BATCH, shuffle=False, cache_index=False)
    assert read_all_batches(sequence) == records
