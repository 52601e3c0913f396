"""The whole job through `pipeline.cli.run`, on the checked-in fixture set."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline import annotations as annotations_format
from pipeline import build_report, cli, leases
from reader.core import layout, targets, tfds_metadata
from tests.support import builds
from tests.support.builds import build, files, read_split, without_build_ids
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

EXPECTED_COUNTS = {
    "images_annotated": 16,
    "records": 10,
    "errors": 6,
    "faces_annotated": 21,
    "faces_stored": 14,
    "degenerate": 1,  # the zero-width box of gray_3
    "faces_in_errors": 6,
    "targets": 11,
    "dropped": 2,  # crowd_8: a smaller face and the second of two equal ones
    "ignored": 1,  # the invalid face of gray_3
}
EXPECTED_ERRORS = {
    "../outside.jpg": "path_escapes_images_dir",
    "99--Broken/99_bomb.png": "decompression_bomb",
    "99--Broken/99_empty.jpg": "empty",
    "99--Broken/99_missing.jpg": "missing",
    "99--Broken/99_not_an_image.jpg": "not_an_image",
    "99--Broken/99_truncated.jpg": "truncated",
}


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """The fixture set built as a user would: default runner (in_memory, shard writers on threads)."""
    out = tmp_path_factory.mktemp("default")
    manifest = build(out, "--num_shards=3", runner=[])
    return out, manifest


def test_manifest_matches_the_design(default_build):
    out, manifest = default_build
    assert manifest["schema_version"] == 1 and manifest["split"] == "val"
    assert manifest["config"] == {
        "input_size": 224,
        "grid_size": 7,
        "image_format": "jpeg",
        "jpeg_quality": 95,
        "resize": "stretch",
        "min_face_px": 0.0,
    }
    assert manifest["counts"] == EXPECTED_COUNTS
    build_id = manifest["build"]
    assert layout.check_build_id(build_id) and manifest["errors_file"] == f"val.{build_id}.errors.jsonl"
    assert [s["file"] for s in manifest["shards"]] == [f"val-0000{i}-of-00003.{build_id}.tfrecord" for i in range(3)]
    for shard in manifest["shards"]:
        data = (out / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [s["file"] for s in manifest["shards"]] + ["val.manifest.json", manifest["errors_file"], *tfds_metadata.FILES]
    )


def test_errors_file_names_every_unusable_image(default_build):
    out, manifest = default_build
    entries = [json.loads(line) for line in (out / manifest["errors_file"]).read_text().splitlines()]
    assert {e["filename"]: e["reason"] for e in entries} == EXPECTED_ERRORS
    assert [e["filename"] for e in entries] == sorted(EXPECTED_ERRORS)
    not_an_image = next(e for e in entries if e["reason"] == "not_an_image")
    assert not_an_image["faces"] == 2 and not_an_image["line"] == 44 and not_an_image["detail"]


def test_records_are_placed_by_the_hash_of_their_filename(default_build):
    out, manifest = default_build
    shards = read_split(out, manifest)
    seen = []
    for index, shard in enumerate(shards.values()):
        names = [r.filename for r in shard]
        assert all(layout.shard_of(n, 3) == index for n in names)
        assert names == sorted(names, key=layout.record_key)
        assert len(shard) == manifest["shards"][index]["records"]
        seen += names
    assert sorted(seen) == sorted(
        n
        for n in (line.strip() for line in FIXTURE_ANNOTATIONS.read_text().splitlines())
        if n.endswith((".jpg", ".png")) and n not in EXPECTED_ERRORS
    )


def test_record_content_worked_example(default_build):
    out, manifest = default_build
    by_name = {r.filename: r for shard in read_split(out, manifest).values() for r in shard}
    rgb = by_name["0--Parade/0_Parade_rgb_1.jpg"]  # 320 x 240, one face at 106 28 94 75
    assert (rgb.original_width, rgb.original_height, rgb.width, rgb.height) == (320, 240, 224, 224)
    assert rgb.sha256 == hashlib.sha256((FIXTURE_IMAGES / rgb.filename).read_bytes()).hexdigest()
    np.testing.assert_allclose(rgb.boxes, [[106 / 320, 28 / 240, 200 / 320, 103 / 240]], rtol=1e-6)
    cx, cy = 153 / 320, 65.5 / 240
    row, col = int(cy * 7), int(cx * 7)
    np.testing.assert_allclose(rgb.grid[row, col], [75 / 240, 94 / 320, cy * 7 - row, cx * 7 - col, 1], rtol=1e-5)
    assert rgb.grid[..., 4].sum() == 1 and rgb.pixels().shape == (224, 224, 3)

    tall = by_name["0--Parade/0_Parade_tall_2.jpg"]  # 320 x 400; second face runs past both edges
    np.testing.assert_allclose(tall.boxes[1], [250 / 320, 350 / 400, 1, 1], rtol=1e-6)
    gray = by_name["0--Parade/0_Parade_gray_3.jpg"]  # degenerate face gone, invalid face ignored
    assert len(gray.boxes) == 2 and gray.attributes[1, 3] == 1
    assert gray.ignore[6, 6] == 1 and gray.grid[6, 6, 4] == 0 and gray.ignore.sum() == 1
    crowd = by_name["12--Group/12_Group_crowd_8.jpg"]
    assert crowd.dropped == 2 and crowd.grid[..., 4].sum() == 3
    np.testing.assert_allclose(crowd.grid[0, 0, :2], [30 / 360, 30 / 480], rtol=1e-5)  # the larger face won
    for name in ("12--Group/12_Group_empty_9.jpg", "12--Group/12_Group_empty_10.jpg"):
        assert by_name[name].boxes.shape == (0, 4) and not by_name[name].grid.any()


def test_targets_agree_with_the_stored_boxes(default_build):
    out, manifest = default_build
    from reader.core.boxes import Placement

    for shard in read_split(out, manifest).values():
        for r in shard:
            placement = Placement.fit(r.original_width, r.original_height, 224, "stretch")
            again = targets.encode_faces(r.boxes, r.attributes[:, 3], placement, 7, 0)
            np.testing.assert_array_equal(again.grid, r.grid)
            np.testing.assert_array_equal(again.ignore, r.ignore)
            assert again.dropped == r.dropped


def test_byte_identical_across_running_modes_worker_and_thread_counts(default_build, tmp_path):
    out, _ = default_build
    reference = without_build_ids(files(out))
    for mode, workers, threads in (
        ("in_memory", 1, 1),
        ("in_memory", 1, 3),
        ("multi_threading", 2, 8),
        ("multi_threading", 3, 2),
        ("multi_processing", 2, 8),
    ):
        again = tmp_path / f"{mode}-{workers}-{threads}"
        runner = ["--runner=FnApiRunner", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
        build(again, "--num_shards=3", f"--image_threads={threads}", runner=runner)
        assert without_build_ids(files(again)) == reference, (mode, workers, threads)


def test_local_default_is_one_process_with_threads_and_modes_can_be_chosen():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    required = [f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", "--output_dir=out", "--split=val"]

    def local(*flags):
        job, options = cli.parse_args(["facegrid-build", *required, *flags])
        direct = options.view_as(DirectOptions)
        return options.view_as(StandardOptions).runner, direct.direct_running_mode, direct.direct_num_workers, job.image_threads

    assert local() == ("FnApiRunner", "in_memory", 1, 8)
    assert local("--image_threads=3") == ("FnApiRunner", "in_memory", 1, 3)
    assert local("--direct_running_mode=multi_processing") == ("FnApiRunner", "multi_processing", os.cpu_count(), 8)
    assert local("--direct_running_mode=multi_threading", "--direct_num_workers=5") == ("FnApiRunner", "multi_threading", 5, 8)
    assert local("--runner=DirectRunner")[0] == "DirectRunner"
    with pytest.raises(cli.UsageError, match="image_threads"):
        local("--image_threads=0")


def test_rebuild_replaces_the_earlier_build(tmp_path):
    first = build(tmp_path, "--num_shards=4")
    # Left by builds before build ids (a crashed one's temporary file, a finished one's files),
    # and by a crashed build of this layout (its lease names a process that is gone).
    (tmp_path / ".val-tmp-deadbeef-val-00000-of-00004.tfrecord").write_bytes(b"left by a crashed build")
    (tmp_path / "val-00003-of-00004.tfrecord").write_bytes(b"a shard of a build before build ids")
    (tmp_path / "val.errors.jsonl").write_bytes(b"")
    (tmp_path / "val-00000-of-00002.deadbeef0123.tfrecord").write_bytes(b"half a shard")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    lease = {"build": "deadbeef0123", "split": "val", "host": leases.host_id(), "pid": int(gone.stdout), "started": 0}
    (tmp_path / ".val.deadbeef0123.lease").write_text(json.dumps(lease))
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"another split: not ours to remove")
    (tmp_path / "notes.txt").write_bytes(b"not facegrid's")
    manifest = build(tmp_path, "--num_shards=2")
    assert manifest["build"] != first["build"]
    assert sorted(files(tmp_path)) == sorted(
        [
            *(s["file"] for s in manifest["shards"]),
            "val.manifest.json",
            manifest["errors_file"],
            "train-00000-of-00001.tfrecord",
            "notes.txt",
            *tfds_metadata.FILES,
        ]
    )
    assert manifest["counts"] == EXPECTED_COUNTS


def test_too_many_errors_fail_and_leave_the_earlier_build(tmp_path):
    build(tmp_path, "--num_shards=2")
    before = files(tmp_path)
    with pytest.raises(
        Exception, match=r"6 of 16 images are unusable \(37.50%\), over --max_error_fraction=0.25; see (\S+)\."
    ) as failed:
        build(tmp_path, "--num_shards=3", "--max_error_fraction=0.25")
    after = files(tmp_path)
    # Every file of the earlier build as it was; beside them only the failed build's errors
    # file, for the user to read (named by the message; the next build that commits removes it).
    kept = pathlib.Path(re.search(r"see (\S+)\. Nothing was committed", str(failed.value))[1])
    assert {k: v for k, v in after.items() if k != kept.name} == before
    assert kept.parent == tmp_path and len(after[kept.name].splitlines()) == 6


def test_malformed_annotations_stop_before_any_shard(tmp_path):
    bad = tmp_path / "bad_gt.txt"
    bad.write_text("0--Parade/0_Parade_rgb_1.jpg\n1\n106 28 94 75 0 0 0 0 0 0 \n0--Parade/0_Parade_tall_2.jpg\ntwo\n")
    out = tmp_path / "out"
    with pytest.raises(Exception, match=f"{bad}:5: expected a face count"):
        build(out, annotations=bad)
    assert not out.exists() or not any(out.iterdir())


def test_letterbox_raw_and_min_face(tmp_path):
    manifest = build(tmp_path, "--num_shards=1", "--resize=letterbox", "--image_format=raw", "--min_face_px=20")
    assert manifest["config"]["resize"] == "letterbox" and manifest["config"]["min_face_px"] == 20
    (shard,) = read_split(tmp_path, manifest).values()
    by_name = {r.filename: r for r in shard}
    tall = by_name["0--Parade/0_Parade_tall_2.jpg"]  # 320 x 400 -> 179 x 224 at x = 22
    assert tall.image_format == "raw" and len(tall.image) == 224 * 224 * 3
    np.testing.assert_allclose(
        tall.boxes[0], [(22 + 106 * 179 / 320) / 224, 47 / 400, (22 + 200 * 179 / 320) / 224, 172 / 400], rtol=1e-5
    )
    crowd = by_name["12--Group/12_Group_crowd_8.jpg"]  # every crowd face is under 20 px once resized
    assert not crowd.grid[..., 4].any() and crowd.ignore.sum() >= 1
    c = manifest["counts"]
    assert c["faces_stored"] == c["targets"] + c["dropped"] + c["ignored"] and c["ignored"] > 1


def test_test_split_reads_the_file_list(tmp_path):
    file_list = tmp_path / "wider_face_test_filelist.txt"
    file_list.write_text("0--Parade/0_Parade_rgb_1.jpg\n12--Group/12_Group_rgba_7.png\n")
    manifest = build(tmp_path / "out", "--num_shards=1", split="test", annotations=file_list)
    assert manifest["counts"]["records"] == 2 and manifest["counts"]["faces_annotated"] == 0
    (shard,) = read_split(tmp_path / "out", manifest).values()
    for r in shard:
        assert r.boxes.shape == (0, 4) and not r.grid.any()


def test_cli_exit_codes_and_summary(tmp_path, capsys):
    common = [f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", *builds.IN_MEMORY]
    assert cli.main(["--help"]) == 0
    assert "--max_error_fraction: Fail the build" in capsys.readouterr().out
    assert cli.main([*common, f"--output_dir={tmp_path}"]) == 2  # no --split
    assert "missing required flags: --split" in capsys.readouterr().err
    assert cli.main([*common, f"--output_dir={tmp_path}", "--split=val", "--num_shards=0"]) == 2
    assert cli.main([*common, f"--output_dir={tmp_path}", "--split=val"]) == 1  # 6 of 16 unusable
    assert "over --max_error_fraction=0.01" in capsys.readouterr().err
    assert cli.main([*common, f"--output_dir={tmp_path}", "--split=val", "--max_error_fraction=0.5", "--num_shards=2"]) == 0
    out = capsys.readouterr().out
    assert "val: 16 images -> 10 records in 2 shards" in out and "6 unusable" in out


def test_workers_never_import_tensorflow():
    code = (
        "import sys, pipeline.cli, pipeline.transforms, pipeline.records, reader.core.schema, reader.core.targets, reader.core.tfrecord\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(m for m in sys.modules if 'tensor' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_beam_metrics_count_everything(tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    result = builds.run_build(FIXTURE_ANNOTATIONS, FIXTURE_IMAGES, tmp_path, "val", "--max_error_fraction=0.5")
    counters = {
        c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace("facegrid"))["counters"]
    }
    assert {k: counters.get(k, 0) for k in EXPECTED_COUNTS} == EXPECTED_COUNTS
    assert {k.removeprefix("errors_"): v for k, v in counters.items() if k.startswith("errors_")} == {
        reason: 1 for reason in EXPECTED_ERRORS.values()
    }


def test_worker_log_relay_keeps_progress_and_warnings_only():
    import logging

    relay = build_report.WorkerLogs()

    def record(level, message, where):
        text = f'severity: X timestamp {{ seconds: 1 }} message: "{message}" log_location: "{where}:9" thread: "T"'
        return logging.LogRecord("relay", level, __file__, 1, "Worker: %s", (text,), None)

    progress = record(logging.INFO, "val-00000-of-00002.tfrecord: 10 records", "/x/pipeline/transforms.py")
    assert relay.filter(progress) and progress.getMessage() == "val-00000-of-00002.tfrecord: 10 records"
    # Worker processes' progress lines come from reader/core/progress.py.
    line = record(logging.INFO, "val: 1,200 images in worker process 7, 40.0/s", "/x/reader/core/progress.py")
    assert relay.filter(line) and line.getMessage() == "val: 1,200 images in worker process 7, 40.0/s"
    assert not relay.filter(record(logging.INFO, "Control channel established.", "/x/apache_beam/runners/worker/sdk_worker.py"))
    assert not relay.filter(record(logging.WARNING, "No semi_persistent_directory found: ...", "/x/sdk_worker_main.py"))
    assert relay.filter(record(logging.WARNING, "Unable to locate credentials", "/x/apache_beam/io/aws/s3io.py"))


@pytest.mark.parametrize("seed", [0, 1])
def test_one_image_under_two_names_stops_the_build_naming_both(tmp_path, capsys, seed):
    """Seeded: a usable image copied under a new name (another folder, so that the two may land
    in one shard or in two), its entry added at a random place of the annotation file. The
    build stops before it commits, with one line naming the annotation file, both lines and
    both names, and leaves the earlier build as it was. Two copies of an unusable file are two
    errors-file lines: no record holds them, nothing is refused."""
    rng = np.random.default_rng(seed)
    images = shutil.copytree(FIXTURE_IMAGES, tmp_path / "images")
    lines = FIXTURE_ANNOTATIONS.read_text().splitlines()
    with open(FIXTURE_ANNOTATIONS) as f:
        starts = [a.line - 1 for a in annotations_format.parse_boxes(f, str(FIXTURE_ANNOTATIONS))]  # each image's first line
    blocks = ["\n".join(lines[a:b]) for a, b in zip(starts, [*starts[1:], len(lines)])]
    usable = [b for b in blocks if b.split("\n")[0] not in EXPECTED_ERRORS]
    original = usable[rng.integers(len(usable))].split("\n")[0]
    copy = f"{rng.integers(100, 999)}--Copies/{pathlib.PurePosixPath(original).name}"
    (images / copy).parent.mkdir()
    (images / copy).write_bytes((images / original).read_bytes())
    truncated = "99--Broken/99_truncated.jpg"
    (images / "99--Broken/99_truncated_again.jpg").write_bytes((images / truncated).read_bytes())
    added = [f"{copy}\n1\n10 10 20 20 0 0 0 0 0 0 ", "99--Broken/99_truncated_again.jpg\n1\n1 1 5 5 0 0 0 0 0 0 "]
    for block in added:
        blocks.insert(int(rng.integers(len(blocks) + 1)), block)
    annotations = tmp_path / "gt.txt"
    annotations.write_text("\n".join(blocks) + "\n")
    line_of = {name: number for number, name in enumerate(annotations.read_text().splitlines(), 1)}  # a path's line

    out = tmp_path / "out"
    flags = [f"--images_dir={images}", f"--output_dir={out}", "--split=val", "--max_error_fraction=0.5", f"--num_shards={1 + 2 * seed}",
             *builds.IN_MEMORY]  # fmt: skip
    argv = [f"--annotations={annotations}", *flags]
    assert cli.main([f"--annotations={FIXTURE_ANNOTATIONS}", *flags]) == 0  # an earlier build, without the copies
    before = files(out)
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    first, second = sorted((original, copy), key=line_of.get)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{annotations}:{line_of[second]}: {second!r} has the same bytes as {first!r} (line {line_of[first]}," in err, err
    assert "one image under two names" in err and "list each image once" in err and "Nothing was committed" in err, err
    assert files(out) == before

    (images / copy).unlink()  # the copy gone (listed, so an errors-file line): the build commits
    assert cli.main(argv) == 0
    manifest = json.loads((out / "val.manifest.json").read_text())
    errors = [json.loads(line) for line in (out / manifest["errors_file"]).read_text().splitlines()]
    assert {(e["filename"], e["reason"]) for e in errors} >= {(copy, "missing"), (truncated, "truncated"),
                                                              ("99--Broken/99_truncated_again.jpg", "truncated")}  # fmt: skip
    from reader.check.split import check_split

    assert check_split(str(out), "val", workers=1).report.ok
