"""Fixtures of the pipeline's tests."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.support import incremental as inc
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A synthetic photograph (1,024 x 683 px, no faces) to encode and cut."""
    from pipeline.sample import synthetic

    return synthetic.photo(synthetic.no_faces(), 683, np.random.default_rng(1))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """clean(*flags, annotations=, images=) -> the files of a --noreuse build of those inputs
    (built once per module for each set of inputs)."""
    cache: dict[tuple, dict[str, bytes]] = {}

    def get(*flags: str, annotations=FIXTURE_ANNOTATIONS, images=FIXTURE_IMAGES) -> dict[str, bytes]:
        key = (flags, str(annotations), str(images))
        if key not in cache:
            out = tmp_path_factory.mktemp("clean")
            inc.build(out, "--noreuse", *flags, annotations=annotations, images=images)
            cache[key] = inc.files(out)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> pathlib.Path:
    """A finished build of the fixture set (default flags): the earlier build most tests reuse
    from. Do not build over it: copy it with build_edits.copy_build."""
    out = tmp_path_factory.mktemp("first")
    inc.build(out)
    return out
