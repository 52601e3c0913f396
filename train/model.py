"""The detector: MobileNetV2 without its top, and a small head predicting the grid directly.

Input: float32 [B, size, size, 3] in [-1, 1] (what `reader.make_dataset` yields).
Output: float32 [B, size/32, size/32, 5] in (0, 1), channels (h, w, y, x, obj) as
`reader.core.targets.CHANNELS`: every channel is a sigmoid because every target channel lies in
[0, 1] (sizes relative to the canvas, centre offsets within the cell, objectness).
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras

from reader.core import targets
from reader.core.config import BuildConfig

WEIGHTS_CHOICES = ("none", "imagenet")  # or a local file path
BACKBONE_STRIDE = 32
# The output starts near typical values rather than sigmoid(0) = 0.5, so the first steps are not
# spent unlearning it (the focal-loss paper's prior-bias initialisation): objectness near the
# share of cells that hold a face, sizes near a small face's share of the canvas.
OBJECTNESS_PRIOR = 0.05
SIZE_PRIOR = 0.1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """alpha: MobileNetV2 width multiplier. input_size: side of the square input, px.
    weights: "none", "imagenet" (downloads once), or a path to a backbone weights file
    (Keras' MobileNetV2 no-top .h5 file for this alpha and input size).
    head_filters: width of the head's 3x3 separable convolution.
    bn_momentum: of every BatchNormalization layer. Keras' MobileNetV2 uses 0.999, whose moving
    statistics take thousands of steps to leave their initial values: a model trained from
    scratch for a few hundred steps then predicts garbage in inference mode."""

    alpha: float = 0.75
    input_size: int = BuildConfig.input_size  # training takes the build's (model_config_for_build)
    weights: str = "none"
    freeze_backbone: bool = False
    head_filters: int = 256
    bn_momentum: float = 0.9

    def __post_init__(self):
        if self.input_size % BACKBONE_STRIDE:
            raise ValueError(f"input_size must be a multiple of {BACKBONE_STRIDE}, got {self.input_size}")
        if self.weights not in WEIGHTS_CHOICES and not os.path.isfile(self.weights):
            raise ValueError(f"weights must be one of {WEIGHTS_CHOICES} or an existing file, got {self.weights!r}")
        if self.alpha <= 0 or self.head_filters < 1 or not 0 <= self.bn_momentum < 1:
            raise ValueError(f"alpha > 0, head_filters >= 1 and 0 <= bn_momentum < 1 expected, got {self}")

    @property
    def grid_size(self) -> int:
        return self.input_size // BACKBONE_STRIDE


class WeightsUnavailable(RuntimeError):
    """The ImageNet weights could not be downloaded (no network): one line for the user."""


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def build_model(config: ModelConfig = ModelConfig()) -> keras.Model:
    """The detector as an uncompiled Keras model named "facegrid"; see the module docstring."""
    size = config.input_size
    weights = None if config.weights == "none" else config.weights
    try:
        backbone = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), alpha=config.alpha, include_top=False, weights=weights
        )
    except Exception as e:  # Keras' get_file: "URL fetch failure on https://...: None -- [Errno ...] ..."
        if weights != "imagenet":
            raise
        raise WeightsUnavailable(f"--weights=imagenet: cannot download MobileNetV2's ImageNet weights ({_first_line(e)}); "
                                 "without network, give --weights=none or a local weights file") from None  # fmt: skip
    backbone.trainable = not config.freeze_backbone
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    images = keras.Input((size, size, 3), name="images")
    # A frozen backbone keeps its BatchNorm statistics: run it in inference mode.
    features = backbone(images, training=False) if config.freeze_backbone else backbone(images)
    x = keras.layers.SeparableConv2D(config.head_filters, 3, padding="same", use_bias=False, name="head_conv")(features)
    x = keras.layers.BatchNormalization(momentum=config.bn_momentum, name="head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    output = keras.layers.Conv2D(len(targets.CHANNELS), 1, activation="sigmoid", name="grid")
    grid = output(x)
    # Set once here rather than as a custom initializer, so saved models need no custom objects.
    bias = [0.0] * len(targets.CHANNELS)
    for channel, prior in ((targets.OBJ, OBJECTNESS_PRIOR), (targets.H, SIZE_PRIOR), (targets.W, SIZE_PRIOR)):
        bias[channel] = math.log(prior / (1 - prior))
    output.bias.assign(bias)
    return keras.Model(images, grid, name="facegrid")
