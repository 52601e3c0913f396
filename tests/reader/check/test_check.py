"""The checker: a good build passes; copies broken one way each fail, naming the shard (and record).

Each fault test breaks a copy of one small Beam build (tests/support/sources.py's CHECKER_CASES) and runs the
checker through its command line entry point, reading the --json report.
"""

from __future__ import annotations

import pathlib

from reader.check import cli as check
from reader.core import layout, protowire, schema, tfrecord
from tests.support import build_edits as fx
from tests.support.checker import failed, problems, run_check

# -- the good build -------------------------------------------------------------------------------


def test_good_build_passes(good_build, capsys):
    code, report = run_check(good_build, capsys=capsys)
    assert code == 0, report["problems"]
    assert report["ok"] and not report["problems"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses.pop("leakage") == "skip"  # no other split in the directory
    assert set(statuses.values()) == {"pass"}
    manifest = fx.read_manifest(good_build)
    counts = manifest["counts"]
    # The fixture exercises what must not be mistaken for damage.
    assert counts["dropped"] >= 2 and counts["ignored"] >= 2 and counts["degenerate"] == 1 and counts["errors"] == 1
    assert report["records"] == counts["records"] == 10
    ignore_cells = sum(r.values(schema.IGNORE).sum() for r in fx.records_of(good_build))
    assert ignore_cells >= 1
    stats = report["stats"]
    assert stats["targets"]["dropped"] == counts["dropped"] and stats["targets"]["ignored"] == counts["ignored"]
    assert stats["faces"]["total"] == counts["faces_stored"]
    assert stats["shards"]["count"] == fx.NUM_SHARDS


def test_summary_for_people(good_build, capsys):
    capsys.readouterr()
    assert check.main([f"--data_dir={good_build}", "--split=val", "--workers=1"]) == 0
    out = capsys.readouterr().out
    for name in ("manifest", "shard_set", "targets", "counts"):
        assert f"PASS  {name}" in out
    assert "faces per image" in out and "dropped by cell collisions" in out and "shards: 3" in out
    assert out.rstrip().endswith("PASS: every check passed")


# -- faults in the shard files --------------------------------------------------------------------


def test_flipped_byte(broken, capsys):
    file = fx.shard_files(broken)[1]
    with open(broken / file, "rb") as f:
        spans = tfrecord.index_records(f, file)
    target = spans[-1]
    data = bytearray((broken / file).read_bytes())
    data[target.data_offset + target.length // 2] ^= 0x40
    (broken / file).write_bytes(bytes(data))
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"framing", "shard_files"}
    [(where, record, message)] = problems(report, "framing")
    assert (where, record) == (file, target.index) and "data checksum mismatch" in message
    assert [(f, r) for f, r, _ in problems(report, "shard_files")] == [(file, None)]


def test_truncated_shard(broken, capsys):
    file = fx.shard_files(broken)[0]
    records = fx.read_records(broken / file)
    data = (broken / file).read_bytes()
    (broken / file).write_bytes(data[:-10])
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert {"framing", "shard_files"} <= failed(report)
    [(where, record, message)] = problems(report, "framing")
    assert (where, record) == (file, len(records) - 1) and "truncated" in message
    assert any(f == file and "size" in m for f, _, m in problems(report, "shard_files"))


def test_missing_shard(broken, capsys):
    file = fx.shard_files(broken)[2]
    (broken / file).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert "shard_set" in failed(report)
    [(where, record, message)] = problems(report, "shard_set")
    assert (where, record) == (file, None) and message.startswith("missing")


OTHER_BUILD = "0123456789ab"


def _shard_set_note(report: dict) -> str:
    return next(c for c in report["checks"] if c["name"] == "shard_set")["note"]


def test_files_of_other_builds_are_noted_not_failed(broken, capsys):
    fx.relayout(broken, fx.build_id(broken) or "fedcba987654")  # the layout with build ids, whatever the pipeline wrote
    shard = (broken / fx.shard_files(broken)[0]).read_bytes()
    others = [
        layout.shard_name(fx.SPLIT, 0, 2, OTHER_BUILD),  # a build still running, or one that crashed
        layout.errors_name(fx.SPLIT, OTHER_BUILD),
        layout.lease_name(fx.SPLIT, OTHER_BUILD),
        layout.temp_name(fx.SPLIT, OTHER_BUILD, layout.shard_name(fx.SPLIT, 1, 2, OTHER_BUILD), "attempt1"),
        layout.shard_name(fx.SPLIT, 0, 5),  # a build before build ids
        layout.errors_name(fx.SPLIT),
    ]
    for name in others:
        (broken / name).write_bytes(shard)
    (broken / "train.manifest.json.bak").write_text("{}")  # not this split's: ignored
    code, report = run_check(broken, capsys=capsys)
    assert code == 0, report["problems"]
    note = _shard_set_note(report)
    assert note.startswith(f"{len(others)} files of other builds, not part of this build")
    assert "leftovers of a crashed build or a build still running; the next build that commits removes them" in note


def test_a_file_of_this_build_that_the_manifest_does_not_name_fails(broken, capsys):
    build = fx.build_id(broken) or "fedcba987654"
    fx.relayout(broken, build)
    stray = layout.shard_name(fx.SPLIT, 0, 2, build)
    (broken / stray).write_bytes((broken / fx.shard_files(broken)[0]).read_bytes())
    (broken / layout.lease_name(fx.SPLIT, build)).write_text("{}")  # a lease is never part of a build: noted
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"shard_set"}
    [(where, record, message)] = problems(report, "shard_set")
    assert (where, record) == (stray, None)
    assert f"a shard of a build of 2 shards (this build has {fx.NUM_SHARDS}) that carries this build's id {build}" in message
    assert _shard_set_note(report).startswith("1 file of other builds")


def test_a_build_before_build_ids_passes_and_its_stale_files_fail(broken, capsys):
    fx.relayout(broken, None)
    code, report = run_check(broken, capsys=capsys)
    assert code == 0, report["problems"]
    assert {"build", "errors_file"}.isdisjoint(fx.read_manifest(broken))
    # Without build ids, an old shard cannot be told from this build's: stale, as it always was.
    stale = layout.shard_name(fx.SPLIT, 0, 2)
    (broken / stale).write_bytes((broken / fx.shard_files(broken)[0]).read_bytes())
    temp = f".{fx.SPLIT}-tmp-0123456789ab-{layout.shard_name(fx.SPLIT, 1, 3)}"
    (broken / temp).write_bytes(b"partial")
    newer = layout.shard_name(fx.SPLIT, 0, 3, OTHER_BUILD)  # a build with ids, not committed
    (broken / newer).write_bytes(b"partial")
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"shard_set"}
    [(where, _, message)] = problems(report, "shard_set")
    assert where == stale and "a shard of a build of 2 shards (this build has 3)" in message
    assert _shard_set_note(report).startswith("2 files of other builds") and temp in _shard_set_note(report)


def test_manifest_names_that_break_the_layout(broken, capsys):
    build = fx.build_id(broken) or "fedcba987654"
    fx.relayout(broken, build)
    manifest = fx.read_manifest(broken)
    legacy = layout.shard_name(fx.SPLIT, 1, fx.NUM_SHARDS)  # the shard without this build's id
    (broken / manifest["shards"][1]["file"]).rename(broken / legacy)
    want = manifest["shards"][1]["file"]
    manifest["shards"][1]["file"] = legacy
    manifest["build"] = "not-an-id"
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    messages = sorted(m for _, _, m in problems(report, "manifest"))
    assert messages[0] == "build: expected 12 lowercase hex digits, found 'not-an-id'"
    manifest["build"] = build
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}  # the records are still checked, and pass
    assert [m for _, _, m in problems(report, "manifest")] == [f"shards[1]: expected file {want!r}, found {legacy!r}"]


def test_a_manifest_naming_a_file_outside_the_directory_is_refused(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["shards"][0]["file"] = "../outside.tfrecord"
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    [(_, _, message)] = problems(report, "manifest")
    assert "shards[0].file: expected a file name in the data directory, found '../outside.tfrecord'" in message


# -- faults in the manifest and errors.jsonl ------------------------------------------------------


def test_manifest_count_off_by_one(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["counts"]["dropped"] += 1
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"counts"}
    messages = problems(report, "counts")
    assert {where for where, _, _ in messages} == {layout.manifest_name(fx.SPLIT)}
    assert any(m.startswith("faces_stored") for _, _, m in messages)  # the law no longer holds
    assert any("counts.dropped" in m and "recomputed from the records" in m for _, _, m in messages)


def test_shard_record_count_off_by_one(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["shards"][1]["records"] += 1
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"record_counts", "counts"}
    [(where, record, message)] = problems(report, "record_counts")
    assert where == manifest["shards"][1]["file"] and record is None
    assert f"the manifest says {manifest['shards'][1]['records']} records" in message


def test_errors_file_out_of_step(broken, capsys):
    (broken / fx.errors_file(broken)).write_text("")
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"counts"}
    assert any("counts.errors 1" in m for _, _, m in problems(report, "counts"))


def test_manifest_config_unusable(broken, capsys):
    manifest = fx.read_manifest(broken)
    manifest["config"]["grid_size"] = "seven"
    del manifest["config"]["resize"]
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"manifest"}  # the records are still checked, with the default grid
    messages = sorted(m for _, _, m in problems(report, "manifest"))
    assert messages == [
        "config.grid_size: expected an integer in [1, input_size], found 'seven'",
        "config.resize: missing (expected one of ('stretch', 'letterbox'))",
    ]


def test_missing_manifest(broken, capsys):
    fx.manifest_path(broken).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"manifest"}
    assert {c["status"] for c in report["checks"] if c["name"] != "manifest"} == {"skip"}


# -- between splits -------------------------------------------------------------------------------


def _write_train(data_dir: pathlib.Path, records: list[bytes]) -> str:
    """A one-shard train split holding `records`, with a manifest (not a faithful build); returns
    the shard's name."""
    file = layout.shard_name("train", 0, 1, fx.build_id(data_dir))
    fx.write_records(data_dir / file, records)
    manifest = fx.read_manifest(data_dir)
    manifest.update(split="train", shards=[{"file": file, "records": len(records), "bytes": 0, "sha256": ""}])
    fx.write_manifest(data_dir, manifest, "train")
    fx.refresh_manifest(data_dir, "train")
    return file


def test_leakage_between_splits(broken, capsys):
    leaked = fx.find(broken, lambda r: fx.faces(r) >= 1)
    data = fx.read_records(broken / leaked.file)[leaked.index]
    features = protowire.decode_example(data)
    features[schema.FILENAME] = ("bytes", [b"train/renamed_copy.jpg"])  # same image, another name
    train_file = _write_train(broken, [protowire.encode_example(features)])
    code, report = run_check(broken, capsys=capsys)
    assert code == 1
    assert failed(report) == {"leakage"}
    [(where, record, message)] = problems(report, "leakage")
    assert (where, record) == (leaked.file, leaked.index)
    assert f"{train_file}:0" in message and "train/renamed_copy.jpg" in message
    # A shard of the other split that is gone cannot be looked into: said, not passed over.
    (broken / train_file).unlink()
    code, report = run_check(broken, capsys=capsys)
    assert "1 of 1 shards of train missing: not compared" in next(c for c in report["checks"] if c["name"] == "leakage")["note"]
    # and --noleakage turns the check off
    code, report = run_check(broken, "--noleakage", capsys=capsys)
    assert code == 0 and next(c for c in report["checks"] if c["name"] == "leakage")["status"] == "skip"


def test_manifest_config_not_an_object(broken, capsys):
    """A config block that is not a JSON object is six missing settings, not a crash."""
    manifest = fx.read_manifest(broken)
    manifest["config"] = []
    fx.write_manifest(broken, manifest)
    code, report = run_check(broken, capsys=capsys)
    assert code == 1 and failed(report) == {"manifest"}
    messages = [m for _, _, m in problems(report, "manifest")]
    assert len(messages) == 6 and all(m.startswith("config.") and ": missing (expected" in m for m in messages), messages
