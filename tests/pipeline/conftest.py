"""Fixtures of the pipeline's tests."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A synthetic photograph (1,024 x 683 px, no faces) to encode and cut."""
    from pipeline import synthetic

    return synthetic.photo(synthetic.no_faces(), 683, np.random.default_rng(1))
