"""Paths shared by the tests: the checked-in fixture set and the real WIDER annotation files."""

import os
import pathlib

import pytest

TESTS = pathlib.Path(__file__).parent
FIXTURE = TESTS / "fixtures" / "wider"
FIXTURE_ANNOTATIONS = FIXTURE / "wider_face_fixture_bbx_gt.txt"
FIXTURE_IMAGES = FIXTURE / "images"
# The real annotation files live in shared/, beside the repository (CI clones it there too).
SHARED_DATA = pathlib.Path(os.environ.get("FACEGRID_SHARED_DATA", TESTS.parents[1] / "shared" / "data"))


@pytest.fixture(scope="session")
def wider_split_dir() -> pathlib.Path:
    path = SHARED_DATA / "wider_face_split"
    assert path.is_dir(), f"the real WIDER annotation files are expected at {path} (set FACEGRID_SHARED_DATA)"
    return path
