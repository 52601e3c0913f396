"""The session-scoped fixtures shared by the tests: the real WIDER annotation files and the small
Beam builds made from pipeline.sample.synthetic's generated data (tests/support/ holds how each is made,
read back and broken; it is imported inside the fixtures, so that tests needing no build do not
import Beam for them).
"""

import pathlib

import pytest

from tests.support.paths import WIDER_DATA


@pytest.fixture(scope="session")
def wider_split_dir() -> pathlib.Path:
    path = WIDER_DATA / "wider_face_split"
    assert path.is_dir(), f"the real WIDER annotation files are expected at {path} (set FACEGRID_WIDER_DATA)"
    return path


@pytest.fixture(scope="session")
def built_val(tmp_path_factory):
    """HARD_CASES' val split: 46 images (not a multiple of the tests' batch sizes) in 3 JPEG
    shards, read back (a tests.support.builds.Build)."""
    from tests.support import builds, sources

    return builds.read_back(builds.make_build(tmp_path_factory.mktemp("reader-jpeg"), sources.HARD_CASES, {"val": (46, 3)}))


@pytest.fixture(scope="session")
def built_val_raw(tmp_path_factory):
    """The first 12 of those images in 2 raw shards."""
    from tests.support import builds, sources

    root = tmp_path_factory.mktemp("reader-raw")
    return builds.read_back(builds.make_build(root, sources.HARD_CASES, {"val": (12, 2)}, image_format="raw"))


@pytest.fixture(scope="session")
def good_build(tmp_path_factory) -> pathlib.Path:
    """CHECKER_CASES' val build: 10 records in 3 shards, its source beside it (good_build.parent /
    "source"). Do not modify it: copy it with build_edits.copy_build."""
    from tests.support import build_edits, builds, sources

    return builds.make_build(
        tmp_path_factory.mktemp("check_good_build"),
        sources.CHECKER_CASES,
        {"val": (sources.CHECKER_IMAGES, build_edits.NUM_SHARDS)},
    )


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> str:
    """LEARNABLE's data_dir: a 24-image train split in 2 shards, an 8-image val split in 1."""
    from tests.support import builds, sources

    return str(builds.make_build(tmp_path_factory.mktemp("train-build"), sources.LEARNABLE, {"train": (24, 2), "val": (8, 1)}))


@pytest.fixture(scope="session")
def wider_build(tmp_path_factory) -> str:
    """benchmarks/learn.py's build of 10 real WIDER val images (names and boxes; rendered
    pixels) into train and val: 4 crowds of small faces (cells shared, faces too small for
    the grid), 6 images of 1-3 large faces."""
    from benchmarks import learn

    entries = learn.wider_val_images(4, max_faces=40) + learn.wider_val_images(6, min_face=80, max_faces=3)
    return learn.make_wider_build(str(tmp_path_factory.mktemp("wider-build")), entries)
