"""The detector's shape, starting values, freezing, weights choices and save/load."""

import numpy as np
import pytest

from reader.core import targets
from train import model as models


@pytest.fixture(scope="module")
def small_model():
    return models.build_model(models.ModelConfig(alpha=0.35))


def test_predicts_a_grid_in_the_target_channel_order(small_model):
    assert small_model.input_shape == (None, 224, 224, 3)
    assert small_model.output_shape == (None, 7, 7, len(targets.CHANNELS))
    grid = np.asarray(small_model.predict_on_batch(np.zeros((2, 224, 224, 3), np.float32)))
    assert ((grid > 0) & (grid < 1)).all()
    # Starting values: objectness near the prior, sizes near a small face, offsets mid-cell.
    assert np.median(grid[..., targets.OBJ]) == pytest.approx(models.OBJECTNESS_PRIOR, abs=0.03)
    assert np.median(grid[..., targets.H]) == pytest.approx(models.SIZE_PRIOR, abs=0.05)
    assert np.median(grid[..., targets.X]) == pytest.approx(0.5, abs=0.1)


def test_default_is_alpha_075_at_224_without_downloads():
    config = models.ModelConfig()
    assert (config.alpha, config.input_size, config.weights, config.grid_size) == (0.75, 224, "none", 7)


def test_a_frozen_backbone_leaves_only_the_head_trainable():
    model = models.build_model(models.ModelConfig(alpha=0.35, freeze_backbone=True))
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"head_conv", "head_bn", "grid"}


def test_rejects_weights_that_are_neither_a_choice_nor_a_file(tmp_path):
    with pytest.raises(ValueError, match="weights must be one of"):
        models.ModelConfig(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="multiple of 32"):
        models.ModelConfig(input_size=200)


def test_loads_backbone_weights_from_a_local_file(tmp_path, small_model):
    backbone = small_model.get_layer(index=1)
    path = str(tmp_path / "backbone.weights.h5")
    backbone.save_weights(path)
    loaded = models.build_model(models.ModelConfig(alpha=0.35, weights=path)).get_layer(index=1)
    np.testing.assert_array_equal(loaded.weights[0].numpy(), backbone.weights[0].numpy())
