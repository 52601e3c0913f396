"""Training: the detector fitted on a build's train split, validated on its val split each epoch.

Everything a run writes goes under `output_dir`:

    best.keras              the model of the epoch with the highest val AP50 (full Keras model)
    last.keras              the model after the last epoch
    backup/                 weights, optimizer state and epoch of the last finished epoch (resume)
    log.csv                 one row per epoch: loss, val_loss, val_ap50 (appended across resumes)
    tensorboard/            TensorBoard logs (train/ and validation/)
    predictions/val/        the best model's val detections in the WIDER evaluation layout
    metrics.json            per-epoch losses, the best model's val AP50, the recall ceilings, timing

Running again with the same output_dir resumes after the last finished epoch; raise `epochs`
to train further.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time

import keras
import numpy as np

import reader
from reader import manifest as manifests
from train import model as models
from train.evaluate import recall_ceiling
from train.loss import GridLoss
from train.validation import DetectSettings, ValidationCallback, default_predictions_dir, evaluate_split

_log = logging.getLogger(__name__)
MONITOR = "val_ap50"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Sizes in images; learning_rate for Adam; steps_per_epoch None means
    one pass over the train split per epoch."""

    data_dir: str
    output_dir: str
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    box_weight: float = 5.0
    model: models.ModelConfig = models.ModelConfig()
    detect: DetectSettings = DetectSettings()
    steps_per_epoch: int | None = None
    augment: bool = True
    seed: int = 0
    write_predictions: bool = True
    jit_compile: bool = False

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"epochs >= 0, batch_size >= 1 and learning_rate > 0 expected, got {self}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")


class StepTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each training step, the first one of the run left out (it traces
    and compiles the step function, which costs far more than a step)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = None
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self._first:
            self.seconds.append(time.perf_counter() - self._start)
        self._first = False


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard scalars of each epoch's logs, as Keras' TensorBoard callback lays them out
    (log_dir/train/epoch_loss, log_dir/validation/epoch_loss, .../epoch_ap50).

    Written with TensorFlow's own summary op: tensorflow-cpu does not bring the tensorboard
    package, without which Keras' callback fails; reading the logs needs it, writing does not.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self._log_dir = log_dir
        self._writers = {}

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        scalars = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        for key, value in (logs or {}).items():
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if run not in self._writers:
                self._writers[run] = tf.summary.create_file_writer(os.path.join(self._log_dir, run))
            with self._writers[run].as_default():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value), tf.float32), step=epoch, metadata=scalars)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


class BuildMismatch(ValueError):
    """Shards the model cannot train on: train and val built differently, or another grid."""


def model_config_for_build(config: TrainConfig) -> models.ModelConfig:
    """The model config with the input size of the shards. Raises BuildMismatch, naming the
    mismatch, when the splits differ or the backbone's grid is not the targets' grid, and
    reader.manifest.ManifestError when a split has no readable manifest."""
    builds = {split: manifests.load(config.data_dir, split).config for split in ("train", "val")}
    sizes = {split: (int(b["input_size"]), int(b["grid_size"])) for split, b in builds.items()}
    if sizes["train"] != sizes["val"]:
        raise BuildMismatch(f"{config.data_dir}: train and val differ in (input_size, grid_size): {sizes}")
    input_size, grid_size = sizes["train"]
    model_config = dataclasses.replace(config.model, input_size=input_size)
    if model_config.grid_size != grid_size:
        raise BuildMismatch(
            f"{config.data_dir}: the shards hold {grid_size}x{grid_size} grids, but MobileNetV2 on "
            f"{input_size} px images gives {model_config.grid_size}x{model_config.grid_size} (input_size / 32)"
        )
    return model_config


def _read_log(path: str) -> list[dict]:
    """The rows of log.csv, one per finished epoch (the last row wins if an epoch repeats,
    as it does when a run stopped between writing the log and the backup)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [{key: float(value) for key, value in rows[epoch].items()} for epoch in sorted(rows)]


def train(config: TrainConfig) -> dict:
    """Trains, keeps the best model by val AP50, evaluates it on val; returns the metrics that
    it also writes to output_dir/metrics.json (see `metrics.json` in the module docstring)."""
    config = dataclasses.replace(config, model=model_config_for_build(config))
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    loss = GridLoss(config.box_weight)
    model = models.build_model(config.model)
    model.compile(keras.optimizers.Adam(config.learning_rate), loss, jit_compile=config.jit_compile)

    train_data = reader.make_dataset(
        config.data_dir, "train", config.batch_size, training=True, seed=config.seed, augment=config.augment, with_ignore=True
    )
    if config.steps_per_epoch is not None:
        train_data = train_data.repeat()  # an epoch may then end anywhere in a pass
    log_path = os.path.join(out, "log.csv")
    earlier = [row[MONITOR] for row in _read_log(log_path) if MONITOR in row]
    timer = StepTimer()
    callbacks = [
        # First: the callbacks after it read val_loss and val_ap50 from the logs it fills in.
        ValidationCallback(config.data_dir, "val", config.batch_size, config.detect, loss),
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, "best.keras"),
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            # A resumed run must beat the best epoch of the runs before it, not start afresh.
            initial_value_threshold=max(earlier) if earlier else None,
        ),
        keras.callbacks.CSVLogger(log_path, append=True),
        EpochScalars(os.path.join(out, "tensorboard")),
        timer,
    ]
    model.fit(
        train_data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, callbacks=callbacks, shuffle=False, verbose=2
    )
    model.save(os.path.join(out, "last.keras"))

    best_path = os.path.join(out, "best.keras")
    best = keras.saving.load_model(best_path, compile=False) if os.path.exists(best_path) else model
    predictions = default_predictions_dir(out, "val") if config.write_predictions else None
    final = evaluate_split(best, config.data_dir, "val", config.batch_size, config.detect, loss, predictions)
    rows = _read_log(log_path)
    metrics = {
        "loss": [row["loss"] for row in rows],
        "val_loss": [row["val_loss"] for row in rows],
        "val_ap50_per_epoch": [row[MONITOR] for row in rows],
        "val_ap50": final["ap50"],
        "best_epoch": int(np.argmax([row[MONITOR] for row in rows])) + 1 if rows else 0,
        "recall_ceiling": final["recall_ceiling"],
        "train_recall_ceiling": recall_ceiling(manifests.load(config.data_dir, "train").counts),
        "val": final,
        "seconds_per_step": float(np.median(timer.seconds)) if timer.seconds else None,
        "predictions_dir": predictions,
        "config": _jsonable(config),
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def _jsonable(config: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
