"""Fixtures of the checker's tests."""

import pytest

from tests.support import build_edits


@pytest.fixture
def broken(tmp_path, good_build):
    """A private copy of good_build (tests/conftest.py) for a test to break."""
    return build_edits.copy_build(good_build, tmp_path)
