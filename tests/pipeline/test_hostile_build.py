"""A whole build over an images directory a hostile user made: no single file takes the build
down, leaks, or slips through. Each file is an image (a record) or a line of the errors file,
with its reason; the counts add up; nothing outside --images_dir is read or quoted.

The build runs as `python -m pipeline` in its own process with a timeout: a FIFO named .jpg
once blocked it forever, and must not hang the test suite if it ever does again.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from pipeline.sample import synthetic
from reader.check import split as check_split
from reader.core import layout
from tests.support.paths import ROOT

SECRET = b"secret password of someone else\n"


def _photo(seed: int, size=(320, 240)) -> Image.Image:
    return synthetic.colour_field(*size, np.random.default_rng(seed))


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _hostile_tree(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, str | None]]:
    """Writes images/ and outside/ under root; returns (images dir, {filename: expected reason,
    None for a record})."""
    images, outside = root / "images", root / "outside"
    (images / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "photo.jpg").write_bytes(_encoded(_photo(1), "JPEG"))
    (outside / "private.txt").write_bytes(SECRET)
    jpeg = _encoded(_photo(2), "JPEG", quality=90)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (images / name).write_bytes(data)
        expected[name] = reason

    put("d/good.jpg", jpeg, None)
    put("d/jpeg_cut_in_header.jpg", jpeg[:400], "truncated")
    put("d/jpeg_cut_half_with_eoi.jpg", jpeg[: len(jpeg) // 2] + b"\xff\xd9", "truncated")
    put("d/png_cut_in_header.png", _encoded(_photo(3), "PNG")[:20], "truncated")
    put("d/webp_cut_in_header.webp", _encoded(_photo(4), "WEBP")[:16], "undecodable")
    put("d/bmp_cut.bmp", _encoded(_photo(5), "BMP")[:40], "truncated")
    put("d/ico_cut.ico", _encoded(_photo(6, (64, 64)), "ICO")[:30], "undecodable")
    put("d/text.jpg", b"just some text, no image\n", "not_an_image")
    os.mkfifo(images / "d" / "fifo.jpg")
    expected["d/fifo.jpg"] = "not_a_regular_file"
    (images / "d" / "a_directory.jpg").mkdir()
    expected["d/a_directory.jpg"] = "not_a_regular_file"
    os.symlink(outside / "photo.jpg", images / "d" / "link_out_photo.jpg")
    expected["d/link_out_photo.jpg"] = "path_escapes_images_dir"
    os.symlink(outside / "private.txt", images / "d" / "link_out_private.jpg")
    expected["d/link_out_private.jpg"] = "path_escapes_images_dir"
    os.symlink(outside, images / "linked_dir")
    expected["linked_dir/photo.jpg"] = "path_escapes_images_dir"  # the link is a directory on the way
    (images / "d" / "unlisted.jpg").write_bytes(_encoded(_photo(7), "JPEG"))
    os.symlink("unlisted.jpg", images / "d" / "link_in.jpg")
    expected["d/link_in.jpg"] = None  # stays inside: an image like any other
    os.symlink("nowhere.jpg", images / "d" / "dangling.jpg")
    expected["d/dangling.jpg"] = "missing"
    expected["../outside/photo.jpg"] = "path_escapes_images_dir"
    expected["/etc/passwd"] = "path_escapes_images_dir"
    return images, expected


def test_a_hostile_images_directory_builds_with_every_bad_file_in_the_errors_file(tmp_path):
    images, expected = _hostile_tree(tmp_path)
    annotations = tmp_path / "gt.txt"
    synthetic.write_annotations(annotations, [(name, [[10, 10, 40, 40, 0, 0, 0, 0, 0, 0]]) for name in expected], "val")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--annotations={annotations}", f"--images_dir={images}", f"--output_dir={out}",
         "--split=val", "--num_shards=2", "--max_error_fraction=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    manifest = json.loads((out / layout.manifest_name("val")).read_text())
    errors_text = (out / manifest["errors_file"]).read_bytes()
    found = {e["filename"]: e["reason"] for e in map(json.loads, errors_text.splitlines())}
    assert found == {name: reason for name, reason in expected.items() if reason is not None}
    records = sum(s["records"] for s in manifest["shards"])
    assert records == sum(reason is None for reason in expected.values()) == 2
    c = manifest["counts"]
    assert c["images_annotated"] == len(expected) == c["records"] + c["errors"]
    # Nothing of a file outside --images_dir reaches the errors file, nor any path of it but the one written.
    assert b"secret" not in errors_text and SECRET[:16] not in errors_text
    report = check_split.check_split(str(out), "val", workers=1, leakage=False).report
    assert report.ok, report.summary()
