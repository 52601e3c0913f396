"""Mistakes a build sees in the first lines of its input (pipeline.preflight): one line, exit
status 2, before Beam starts, nothing written."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

from pipeline import annotations, cli, preflight
from tests.support import builds
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

ROOT = FIXTURE_ANNOTATIONS.parent.parent.parent.parent
TEST_LIST = ROOT / "data" / "wider_face_split" / "wider_face_test_filelist.txt"
VAL_BOXES = ROOT / "data" / "wider_face_split" / "wider_face_val_bbx_gt.txt"


def _refused(capsys, *argv: str) -> str:
    status = cli.main([*builds.IN_MEMORY, *argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0].removeprefix("facegrid-build: ").removesuffix("; --help lists every flag")


def test_dataflow_with_local_paths_is_refused_even_in_a_dry_run(capsys, tmp_path):
    message = _refused(
        capsys, "--annotations=gs://b/gt.txt", "--images_dir=images", f"--output_dir={tmp_path}", "--split=val",
        "--runner=DataflowRunner", "--project=my-project", "--region=us-central1", "--temp_location=gs://bucket/tmp", "--dry_run=True",
    )  # fmt: skip
    assert message == (
        # Named absolute, as the build hands local paths on (pipeline.cli._absolute).
        f"--runner=DataflowRunner with local paths (--images_dir={os.path.abspath('images')}, --output_dir={tmp_path}): its workers cannot "
        "read or write this machine's files; give gs:// paths"
    )
    assert list(tmp_path.iterdir()) == []


def test_boxes_given_as_the_test_list_and_the_other_way_round(capsys, tmp_path):
    message = _refused(
        capsys, f"--annotations={VAL_BOXES}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={tmp_path}", "--split=test"
    )
    assert message == (
        f"{VAL_BOXES}: a *_bbx_gt.txt file (a face count after each image path), but --split=test reads a file list "
        "(one image path a line, no face counts): give --split=train or --split=val, or the test file list"
    )
    message = _refused(
        capsys, f"--annotations={TEST_LIST}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={tmp_path}", "--split=val"
    )
    assert message == (
        f"{TEST_LIST}: a file list (one image path a line, no face counts), but --split=val reads a *_bbx_gt.txt file "
        "(a face count after each image path): give the val *_bbx_gt.txt file, or --split=test"
    )
    assert list(tmp_path.iterdir()) == []


def test_sample_render_for_the_test_list_as_boxes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.sample", f"--render_for={TEST_LIST}", f"--images_dir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"pipeline.sample: --render_for={TEST_LIST}: a file list (one image path a line, no face counts), but "
        "--list_format=boxes reads a *_bbx_gt.txt file (a face count after each image path): give --list_format=names; "
        "--help lists every flag"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_images_dir_one_level_off_names_the_folder_that_holds_them(capsys, tmp_path):
    root = tmp_path / "WIDER_val"
    shutil.copytree(FIXTURE_IMAGES, root / "images")
    (root / "notes").mkdir()
    out = tmp_path / "out"
    message = _refused(
        capsys, f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={root}", f"--output_dir={out}", "--split=val"
    )
    first = preflight.listed_images(FIXTURE_ANNOTATIONS.read_bytes())
    assert message == (
        f"--images_dir={root}: none of the first {len(first)} images listed is there ({first[0]}, ...); they are all "
        f"under {root / 'images'}: give --images_dir={root / 'images'}"
    )
    assert not out.exists()  # refused before the output directory is made
    # One level too deep: the parent holds them.
    deep = root / "images" / "0--Parade"
    assert preflight.images_dir_mismatch(str(deep), first).endswith(f"give --images_dir={root / 'images'}")
    # The right folder, or one near which nothing holds them, passes (the build lists each missing image).
    assert preflight.images_dir_mismatch(str(root / "images"), first) is None
    assert preflight.images_dir_mismatch(str(tmp_path / "out"), first) is None


def test_file_formats_of_generated_files_are_told_apart():
    """Seeded: WIDER-format box files and file lists as pipeline.sample.synthetic writes them, cut anywhere."""
    rng = random.Random(0)
    for case in range(200):
        entries = [(f"{rng.randrange(62)}--Event/{rng.randrange(10**6)}_x.jpg",
                    [[rng.randrange(1000) for _ in annotations.BOX_FIELDS] for _ in range(rng.randrange(4))])
                   for _ in range(rng.randrange(2, 6))]  # fmt: skip
        boxes = annotations.format_boxes(entries, rng.choice(["train", "val"])).encode()
        names = "".join(f"{name}\n" for name, _ in entries).encode()
        assert preflight.file_format(boxes) == "boxes", case
        assert preflight.file_format(names) == "names", case
        assert (
            preflight.build_format_mismatch("f", boxes, "val") is None
            and preflight.build_format_mismatch("f", names, "test") is None
        )
        assert preflight.file_format(bytes(rng.randrange(256) for _ in range(rng.randrange(64)))) is None, case
