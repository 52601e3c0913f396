"""Paths shared by the tests: the checked-in fixture set and the real WIDER annotation files."""

import os
import pathlib

import pytest

TESTS = pathlib.Path(__file__).parent
FIXTURE = TESTS / "fixtures" / "wider"
FIXTURE_ANNOTATIONS = FIXTURE / "wider_face_fixture_bbx_gt.txt"
FIXTURE_IMAGES = FIXTURE / "images"
# The real annotation files, checked in under data/ (a copy of the project's shared/data/).
WIDER_DATA = pathlib.Path(os.environ.get("FACEGRID_WIDER_DATA", TESTS.parent / "data"))


@pytest.fixture(scope="session")
def wider_split_dir() -> pathlib.Path:
    path = WIDER_DATA / "wider_face_split"
    assert path.is_dir(), f"the real WIDER annotation files are expected at {path} (set FACEGRID_WIDER_DATA)"
    return path
