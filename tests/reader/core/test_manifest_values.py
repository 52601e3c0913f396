"""Every value read from a manifest is validated in one place (reader.core.manifest_values), and
the readers hold what they read to the manifest as the checker does (issue 19, items 2 and 4).

Each test takes a copy of tests/support/sources.py's CHECKER_CASES build (10 records in 3 shards) and damages
its manifest or its shards; the build's source is beside it, for the rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import reader
from pipeline import cli
from pipeline.sample import synthetic
from reader.check import cli as check_cli
from reader.check.split import check_split
from reader.core import layout, manifest, schema
from tests.support import build_edits as fx
from tests.support.paths import ROOT

PATH_RECORDS = f"expected an integer in [0, {manifest.MAX_COUNT}]"


@pytest.fixture
def broken(tmp_path, good_build) -> pathlib.Path:
    return fx.copy_build(good_build, tmp_path)


def _source(good_build: pathlib.Path) -> tuple[str, str]:
    """(annotations, images_dir) the good build was made from (builds.make_build)."""
    return synthetic.split_paths(good_build.parent / "source", fx.SPLIT)


def _write_with_literal(data_dir: pathlib.Path, edit, literal: str, split: str = fx.SPLIT) -> pathlib.Path:
    """Rewrites the manifest with `edit(raw, placeholder)` applied, the placeholder written as the
    JSON literal `literal` (NaN, Infinity, 1e400: what json.dumps cannot be made to write)."""
    raw = fx.read_manifest(data_dir, split)
    edit(raw, "\x00LITERAL\x00")
    path = fx.manifest_path(data_dir, split)
    path.write_text(json.dumps(raw, indent=2).replace(json.dumps("\x00LITERAL\x00"), literal))
    return path


def _reader_errors(data_dir: pathlib.Path, expected_class=manifest.ManifestError) -> list[str]:
    """The one-line errors of make_dataset and ShardSequence on the split (both must refuse)."""
    found = []
    with pytest.raises(expected_class) as raised:
        reader.make_dataset(str(data_dir), fx.SPLIT, 4, training=False)
    found.append(str(raised.value))
    with pytest.raises(expected_class) as raised:
        reader.ShardSequence(str(data_dir), fx.SPLIT, 4, cache_index=False)
    found.append(str(raised.value))
    assert all("\n" not in message for message in found), found
    return found


def _check(data_dir: pathlib.Path, capsys, *flags: str, split: str = fx.SPLIT) -> tuple[int, str]:
    capsys.readouterr()
    code = check_cli.main([f"--data_dir={data_dir}", f"--split={split}", "--workers=1", "--progress=never", *flags])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


# ---- numbers that are not finite --------------------------------------------------------------


@pytest.mark.parametrize("literal", ["Infinity", "1e400", "NaN", "-Infinity"])
def test_a_shard_count_that_is_not_finite_is_one_line_naming_file_and_field(broken, capsys, literal):
    path = _write_with_literal(broken, lambda raw, x: raw["shards"][1].update(records=x), literal)
    expected = f"{path}: shards[1].records: {PATH_RECORDS}, found {literal}"
    assert _reader_errors(broken) == [expected, expected]
    code, printed = _check(broken, capsys)
    assert code == 1 and "Traceback" not in printed
    assert [line for line in printed.splitlines() if "shards[1].records" in line] == [
        f"  {layout.manifest_name(fx.SPLIT)}: manifest: shards[1].records: {PATH_RECORDS}, found {literal}"
    ], printed


def test_the_checker_command_says_it_in_one_line_without_a_traceback(broken):
    _write_with_literal(broken, lambda raw, x: raw["shards"][1].update(records=x), "Infinity")
    done = subprocess.run([sys.executable, "-m", "reader.check", f"--data_dir={broken}", f"--split={fx.SPLIT}", "--workers=1"],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert sum("shards[1].records" in line for line in done.stdout.splitlines()) == 1, done.stdout


@pytest.mark.parametrize("where", ["counts.targets", "config.min_face_px", "preparation.pillow", "reuse.reused"])
def test_every_number_is_checked_wherever_it_is(broken, where):
    def edit(raw, x):
        block, key = where.split(".")
        raw.setdefault(block, {})[key] = x

    path = _write_with_literal(broken, edit, "1e400")
    [message, _] = _reader_errors(broken)
    assert message.startswith(f"{path}: {where.split('.')[0]}") and "1e400" in message, message


def test_leakage_reads_another_split_whose_manifest_is_damaged(tmp_path, tiny_build, capsys):
    data_dir = fx.copy_build(tiny_build, tmp_path)
    _write_with_literal(data_dir, lambda raw, x: raw["shards"][0].update(records=x), "Infinity", split="train")
    code, printed = _check(data_dir, capsys, split="val")
    assert code == 0 and "Traceback" not in printed, printed
    code, printed = _check(data_dir, capsys, split="train")
    assert code == 1 and "shards[0].records" in printed and "Traceback" not in printed


# ---- shards named twice, none, or none holding records -----------------------------------------


def test_a_shard_listed_500_times_is_refused_and_checked_once(broken, capsys):
    raw = fx.read_manifest(broken)
    repeated = raw["shards"][1]
    raw["shards"][2:2] = [dict(repeated) for _ in range(500)]
    fx.write_manifest(broken, raw)
    path = fx.manifest_path(broken)
    expected = f"{path}: shards[2].file: expected each shard named once, found {repeated['file']!r} again (shards[1])"
    assert [m.split(" (and ")[0] for m in _reader_errors(broken)] == [expected, expected]
    result = check_split(str(broken), fx.SPLIT, workers=1, leakage=False)
    assert not result.report.ok and result.report.records == 10  # each shard read once: not 5,010 records
    said = [p.message for p in result.report.problems if p.check == "manifest"]
    assert len(said) == 500 and said[0] == expected.removeprefix(f"{path}: ")


def test_no_shards_is_one_line_for_readers_and_checker(broken, capsys):
    raw = fx.read_manifest(broken)
    raw["shards"] = []
    fx.write_manifest(broken, raw)
    expected = f"{fx.manifest_path(broken)}: shards: expected at least one shard, found none"
    assert _reader_errors(broken) == [expected, expected]
    code, printed = _check(broken, capsys)
    assert code == 1 and "shards: expected at least one shard, found none" in printed and "Traceback" not in printed


def test_a_split_whose_shards_hold_no_record_is_refused_by_the_readers(broken):
    raw = fx.read_manifest(broken)
    name = layout.shard_name(fx.SPLIT, 0, 1, raw["build"])
    (broken / name).write_bytes(b"")
    raw["shards"] = [{"file": name, "records": 0, "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}]
    raw["counts"] = dict.fromkeys(manifest.COUNT_KEYS, 0)
    raw["error_reasons"], raw["reuse"] = {}, {"from": None, "reused": 0, "prepared": 0, "notes": []}
    fx.write_manifest(broken, raw)
    expected = f"{fx.manifest_path(broken)}: no records in {fx.SPLIT}: its shards hold none, nothing to read"
    assert _reader_errors(broken, ValueError) == [expected, expected]


# ---- what the readers hold the shards to --------------------------------------------------------


def test_a_shard_of_the_same_size_with_other_bytes_is_refused(broken):
    entry = fx.read_manifest(broken)["shards"][0]
    path = broken / entry["file"]
    records = fx.read_records(path)
    assert len(records) >= 2
    fx.write_records(path, [records[1], records[0], *records[2:]])  # valid checksums, same size, other order
    assert path.stat().st_size == entry["bytes"]
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = f"{path}: sha256 {found}, the manifest says {entry['sha256']}: rebuilt or damaged since the manifest was written"
    assert all(m.startswith(expected) for m in _reader_errors(broken, ValueError))


def test_a_cached_index_is_not_trusted_past_a_change_of_its_shard(broken):
    reader.ShardSequence(str(broken), fx.SPLIT, 4)  # writes the index cache
    entry = fx.read_manifest(broken)["shards"][0]
    path = broken / entry["file"]
    records = fx.read_records(path)
    fx.write_records(path, [records[1], records[0], *records[2:]])
    with pytest.raises(ValueError, match=re.escape(f"{path}: sha256 ")):
        reader.ShardSequence(str(broken), fx.SPLIT, 4)


@pytest.mark.parametrize("key", [schema.GRID, schema.IGNORE, schema.XMIN])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_targets_and_boxes_that_are_not_finite_never_reach_training(broken, key, value):
    victim = fx.find(broken, lambda r: fx.faces(r) > 0)

    def poison(features):
        kind, values = features[key]
        values = np.asarray(values, np.float32).copy()
        values[0] = value
        features[key] = (kind, values)

    fx.edit_record(broken, victim.file, victim.index, poison)
    expected = f"{victim.file}: record {victim.index}: {key}: expected finite numbers, found {np.float32(value)} (value 0 of "
    options = {schema.GRID: {}, schema.IGNORE: {"with_ignore": True}, schema.XMIN: {"with_boxes": True}}[key]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(expected)):
        list(reader.make_dataset(str(broken), fx.SPLIT, 4, training=False, **options))
    sequence_options = {schema.GRID: {}, schema.IGNORE: {"with_ignore": True}, schema.XMIN: {"augment": True, "shuffle": True}}[
        key
    ]
    sequence = reader.ShardSequence(str(broken), fx.SPLIT, 4, cache_index=False, **sequence_options)
    with pytest.raises(schema.SchemaError, match=re.escape(expected)):
        for batch in range(len(sequence)):
            sequence[batch]


# ---- a rebuild over a damaged manifest --------------------------------------------------------


def test_a_rebuild_in_place_over_a_damaged_manifest_prepares_its_images_again(broken, good_build, capsys):
    _write_with_literal(broken, lambda raw, x: raw["shards"][1].update(records=x), "Infinity")
    annotations, images = _source(good_build)
    code = cli.main([f"--annotations={annotations}", f"--images_dir={images}", f"--output_dir={broken}", f"--split={fx.SPLIT}",
                     "--num_shards=3", "--max_error_fraction=0.5", "--runner=FnApiRunner", "--direct_running_mode=in_memory"])  # fmt: skip
    assert code == 0
    block = fx.read_manifest(broken)["reuse"]
    assert block["reused"] == 0 and len(block["notes"]) == 1, block
    assert (
        "earlier build not reused" in block["notes"][0]
        and f"shards[1].records: {PATH_RECORDS}, found Infinity" in block["notes"][0]
    )
    assert check_split(str(broken), fx.SPLIT, workers=1, leakage=False).report.ok


def test_the_commit_reads_a_manifest_nested_too_deeply_as_no_manifest(tmp_path):
    from pipeline import commit

    out = tmp_path / "out"
    out.mkdir()
    (out / layout.manifest_name(fx.SPLIT)).write_bytes(b'{"build": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert commit.current_build(commit.OutputSpec(str(out), fx.SPLIT, 1)) is None


def test_values_of_the_wrong_type_are_named(broken):
    raw = fx.read_manifest(broken)
    raw["counts"]["records"] = True  # a bool is no integer
    fx.write_manifest(broken, raw)
    expected = f"{fx.manifest_path(broken)}: counts.records: expected an integer in [0, {manifest.MAX_COUNT}], found True"
    assert all(m.startswith(expected) for m in _reader_errors(broken))
    raw["counts"]["records"] = 10
    raw["shards"][0]["sha256"] = raw["shards"][0]["sha256"].upper()
    fx.write_manifest(broken, raw)
    assert all("shards[0].sha256: expected 64 lowercase hex digits" in m for m in _reader_errors(broken))
