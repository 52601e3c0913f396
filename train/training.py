"""Training: the detector fitted on a build's train split, validated on its val split each epoch.

Everything a run writes goes under `output_dir`:

    best.keras              the model of the epoch with the highest val AP50
    last.keras              the model after the last epoch
    backup/                 weights, optimizer state and epoch of the last finished epoch (resume)
    log.csv                 one row per epoch: epoch, loss, val_ap50, val_loss (appended across resumes)
    tensorboard/            TensorBoard logs (train/, validation/): `tensorboard --logdir OUTPUT_DIR/tensorboard`
    predictions/val/        the best model's val detections in the WIDER evaluation layout
    metrics.json            epochs and their losses, the best model's val AP50, the recall ceilings, timing;
                            WIDER's Easy / Medium / Hard AP of the best model when val is (part of)
                            WIDER val, beside the grid's recall ceiling of each subset, or why absent
    run.json                the builds trained and validated on, and the first epoch best.keras is chosen from

Epochs count from 1 everywhere: log.csv's `epoch` column, metrics.json's `epochs` and
`best_epoch`, the TensorBoard step, the progress lines (Keras' own "Epoch 1/10" too).

best.keras and last.keras hold the architecture and weights only, no optimizer and no loss, so
that `keras.saving.load_model(path)` works in any process, without facegrid installed or
imported; to train one further, compile it again (with `train.loss.GridLoss`). Resuming uses
backup/, which keeps the optimizer state.

Running again with the same output_dir resumes after the last finished epoch (and says so);
raise `epochs` to train further. A resumed run compares the builds it finds with those of
run.json (train/run_state.py): shards of another input size are refused (RunMismatch); a train
split built again is trained on, with a note; a val split built again makes the earlier epochs'
val AP50 incomparable, so best.keras is chosen afresh from the first resumed epoch on, with a note.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import time

import keras
import numpy as np

import reader
from reader.core import manifest as manifests
from train import model as models
from train import run_state, wider_ap, wider_report
from train.failures import BuildMismatch, UnusableData
from train.loss import GridLoss
from train.metrics import recall_ceiling
from train.progress import Reporter
from train.validation import (
    DetectSettings,
    ValidationCallback,
    default_predictions_dir,
    evaluate_split,
)

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
    (log_dir/train/epoch_loss, log_dir/validation/epoch_loss, .../epoch_ap50), at step = the
    epoch counted from 1, as log.csv counts it.

    Keras' TensorBoard callback would count epochs from 0 (its step is Keras' epoch index); here
    epochs count from 1 in log.csv, metrics.json and TensorBoard alike, and only the scalars are
    written (no graph, no histograms).
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
                tf.summary.write(f"epoch_{name}", tf.constant(float(value), tf.float32), step=epoch + 1, metadata=scalars)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


class EpochLog(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with epochs counted from 1 (Keras counts from 0), as metrics.json, the
    TensorBoard steps and Keras' own "Epoch 1/10" do."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def save_inference_model(source: keras.Model, copy: keras.Model, path: str) -> None:
    """Saves `source`'s weights in `copy` (an uncompiled model of the same architecture) to path.

    The file then holds no compile config: loading it needs no custom object (the loss), hence
    no facegrid import, and no optimizer state to load or to skip with a warning.
    """
    for ours, theirs in zip(source.weights, copy.weights, strict=True):
        if ours.path != theirs.path:
            raise ValueError(f"the inference copy differs from the model: {theirs.path} where {ours.path}")
    copy.set_weights(source.get_weights())
    copy.save(path)


class SaveBest(keras.callbacks.Callback):
    """Saves the model (as `save_inference_model`) whenever `monitor` beats the best value so far
    (`initial_best`: the best of earlier runs, or None). Higher is better (val AP50)."""

    def __init__(self, path: str, monitor: str, copy: keras.Model, initial_best: float | None = None):
        super().__init__()
        self._path, self._monitor, self._copy = path, monitor, copy
        self.best = -np.inf if initial_best is None else float(initial_best)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self._monitor)
        if value is None:
            _log.warning("%s missing from the epoch's logs: %s not saved", self._monitor, self._path)
            return
        if float(value) > self.best:
            self.best = float(value)
            save_inference_model(self.model, self._copy, self._path)


def model_config_for_build(config: TrainConfig) -> models.ModelConfig:
    """The model config with the input size of the shards. Raises BuildMismatch, naming the
    mismatch, when the splits differ or the backbone's grid is not the targets' grid, UnusableData
    when train holds less than one batch or val no record, and
    reader.core.manifest.ManifestError when a split has no readable manifest."""
    loaded = {split: manifests.load(config.data_dir, split) for split in ("train", "val")}
    train, val = loaded["train"], loaded["val"]
    if train.num_records < config.batch_size:  # training drops the last, partial batch
        raise UnusableData(
            f"batch_size={config.batch_size}: train holds {train.num_records} records in {config.data_dir}, fewer than one "
            f"batch (training drops a last, partial one): take a batch_size of at most {train.num_records}"
        )
    if val.num_records == 0:
        raise UnusableData(
            f"{config.data_dir}: val holds no record: there is nothing to validate on (see its errors file, {val.errors_file})"
        )
    builds = {split: m.config for split, m in loaded.items()}
    sizes = {split: (b.input_size, b.grid_size) for split, b in builds.items()}
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


def val_warnings(config: TrainConfig) -> list[str]:
    """What makes the val AP50 of this data meaningless, one line each."""
    val = manifests.load(config.data_dir, "val")
    if not val.counts.get("faces_stored"):
        return [
            f"warning: val in {config.data_dir} holds no face ({val.num_records} images): its AP50 is 0 whatever the model "
            f"does, and best.keras is simply the first epoch's; validate on a split with faces"
        ]
    return []


def tensorboard_note(log_dir: str) -> str:
    """Where the TensorBoard logs are and how to view them."""
    note = f"TensorBoard logs: {log_dir} (view them: tensorboard --logdir {log_dir})"
    if importlib.util.find_spec("tensorboard") is None:
        note += "; the tensorboard package is not installed here: pip install tensorboard"
    return note


def _start_note(config: TrainConfig, done: int, rows: list[dict], steps: int | None, best_since: int = 1) -> str:
    out, epochs = config.output_dir, config.epochs
    per_epoch = f"{steps:,} steps of {config.batch_size} images per epoch" if steps else f"batches of {config.batch_size}"
    if not done:
        again = " (log.csv has earlier epochs, but there is no backup: starting again)" if rows else ""
        return f"training {out} from scratch: epochs 1-{epochs}, {per_epoch}{again}"
    best = max((row for row in rows if MONITOR in row and row["epoch"] >= best_since), key=lambda row: row[MONITOR], default=None)
    so_far = f"; best val AP50 so far {best[MONITOR]:.4f} (epoch {int(best['epoch'])}, best.keras)" if best else ""
    backup = os.path.join(out, "backup")
    if done >= epochs:
        return f"{out}: {done} epochs done already (backup in {backup}){so_far}; nothing to train: raise epochs to train further"
    return f"resuming {out} after epoch {done} from its backup ({backup}): epochs {done + 1}-{epochs}, {per_epoch}{so_far}"


def train(config: TrainConfig, reporter: Reporter | None = None) -> dict:
    """Trains, keeps the best model by val AP50, evaluates it on val; returns the metrics that
    it also writes to output_dir/metrics.json (see `metrics.json` in the module docstring).

    reporter: how progress is shown (`train.progress.Reporter`; default: Keras' bar on a
    terminal, a line every 30 s otherwise, on stdout).
    """
    reporter = reporter or Reporter()
    config = dataclasses.replace(config, model=model_config_for_build(config))
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    resume = run_state.resume_plan(config)
    run_state.write_state(config, resume)
    keras.utils.set_random_seed(config.seed)
    loss = GridLoss(config.box_weight)
    model = models.build_model(config.model)
    model.compile(keras.optimizers.Adam(config.learning_rate), loss, jit_compile=config.jit_compile)
    # Saved in place of the model (see the module docstring); the weights come from `model`.
    inference_copy = models.build_model(dataclasses.replace(config.model, weights="none"))

    train_data = reader.make_dataset(
        config.data_dir, "train", config.batch_size, training=True, seed=config.seed, augment=config.augment, with_ignore=True
    )
    batches = int(train_data.cardinality())  # from the manifest; negative when unknown
    steps = config.steps_per_epoch or (batches if batches > 0 else None)
    if config.steps_per_epoch is not None:
        train_data = train_data.repeat()  # an epoch may then end anywhere in a pass
    log_path, backup_dir, tensorboard_dir = (os.path.join(out, name) for name in ("log.csv", "backup", "tensorboard"))
    best_path = os.path.join(out, "best.keras")
    earlier = run_state.read_log(log_path)
    reporter.say(_start_note(config, run_state.epochs_done(backup_dir), earlier, steps, resume.best_since))
    for note in (*resume.notes, *val_warnings(config)):
        reporter.say(note)
    reporter.say(tensorboard_note(tensorboard_dir))
    best_so_far = [row[MONITOR] for row in earlier if MONITOR in row and row["epoch"] >= resume.best_since]
    timer = StepTimer()
    callbacks = [
        # First: the callbacks after it read val_loss and val_ap50 from the logs it fills in.
        ValidationCallback(config.data_dir, "val", config.batch_size, config.detect, loss),
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        # A resumed run must beat the best epoch of the runs before it, not start afresh.
        SaveBest(best_path, MONITOR, inference_copy, max(best_so_far) if best_so_far else None),
        EpochLog(log_path, append=True),
        EpochScalars(tensorboard_dir),
        timer,
        *reporter.callbacks(config.batch_size),
    ]
    # shuffle=False: the dataset shuffles itself (from the seed); Keras would only warn that it
    # ignores shuffle=True for a tf.data.Dataset.
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=reporter.keras_verbose,
    )
    save_inference_model(model, inference_copy, os.path.join(out, "last.keras"))

    best = keras.saving.load_model(best_path) if os.path.exists(best_path) else model
    predictions = default_predictions_dir(out, "val") if config.write_predictions else None
    writing = f", writing its detections to {predictions}" if predictions else ""
    reporter.say(f"evaluating {best_path if best is not model else 'the last model'} on val{writing}")
    final = evaluate_split(
        best,
        config.data_dir,
        "val",
        config.batch_size,
        config.detect,
        loss,
        predictions,
        wider_ground_truth=str(wider_ap.DEFAULT_GROUND_TRUTH),
    )
    rows = run_state.read_log(log_path)
    counted = [row for row in rows if row["epoch"] >= resume.best_since]  # the epochs best.keras was chosen from
    metrics = {
        "epochs": [int(row["epoch"]) for row in rows],
        "loss": [row["loss"] for row in rows],
        "val_loss": [row["val_loss"] for row in rows],
        "val_ap50_per_epoch": [row[MONITOR] for row in rows],
        "val_ap50": final["ap50"],
        "best_epoch": int(counted[int(np.argmax([row[MONITOR] for row in counted]))]["epoch"]) if counted else 0,
        "recall_ceiling": final["recall_ceiling"],
        "train_recall_ceiling": recall_ceiling(manifests.load(config.data_dir, "train").counts),
        **wider_report.metrics_fields(final["wider"]),
        "val": final,
        "seconds_per_step": float(np.median(timer.seconds)) if timer.seconds else None,
        "predictions_dir": predictions,
        "tensorboard_dir": tensorboard_dir,
        "config": _jsonable(config),
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def _jsonable(config: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
