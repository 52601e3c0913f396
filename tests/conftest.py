"""The session-scoped fixtures shared by the tests: the real WIDER annotation files and the small
Beam builds made from pipeline.synthetic's generated data (tests/support/ holds how each is made,
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
    """tests/support/reader_fixtures.py's val split: 46 images in 3 JPEG shards (a reader_fixtures.Build)."""
    from tests.support import reader_fixtures

    return reader_fixtures.make_build(str(tmp_path_factory.mktemp("reader-jpeg")), reader_fixtures.NUM_IMAGES, num_shards=3)


@pytest.fixture(scope="session")
def built_val_raw(tmp_path_factory):
    """The first 12 of those images in 2 raw shards."""
    from tests.support import reader_fixtures

    return reader_fixtures.make_build(str(tmp_path_factory.mktemp("reader-raw")), 12, num_shards=2, image_format="raw")


@pytest.fixture(scope="session")
def good_build(tmp_path_factory) -> pathlib.Path:
    """tests/support/check_fixtures.py's finished val build (do not modify: copy it with `copy_build`)."""
    from tests.support import check_fixtures

    root = tmp_path_factory.mktemp("check_good_build")
    check_fixtures.build(root / "source", root / "shards")
    return root / "shards"


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> str:
    """tests/support/train_fixtures.py's data_dir: a 24-image train, 8-image val build."""
    from tests.support import train_fixtures

    return train_fixtures.make_build(str(tmp_path_factory.mktemp("train-build")))


@pytest.fixture(scope="session")
def wider_build(tmp_path_factory) -> str:
    """benchmarks/learn.py's build of 10 real WIDER val images (names and boxes; rendered
    pixels) into train and val: 4 crowds of small faces (cells shared, faces too small for
    the grid), 6 images of 1-3 large faces."""
    from benchmarks import learn

    entries = learn.wider_val_images(4, max_faces=40) + learn.wider_val_images(6, min_face=80, max_faces=3)
    return learn.make_wider_build(str(tmp_path_factory.mktemp("wider-build")), entries)
