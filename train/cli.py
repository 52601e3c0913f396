"""`python -m train` / `facegrid-train`: train and evaluate the face detector on a build's shards.

    python -m train --data_dir=build/demo/shards --output_dir=build/demo/train --epochs=10 \\
        [--batch_size=16] [--learning_rate=0.001] [--alpha=0.75] [--weights=none|imagenet|FILE] \\
        [--freeze_backbone] [--steps_per_epoch=N] [--noaugment] [--pictures=8] [--progress=auto|bar|lines] ...

Reads DATA_DIR/train.* and DATA_DIR/val.* (built by `python -m pipeline`), writes what
`train.training` lists under OUTPUT_DIR, and prints the best model's val AP50 and the recall
ceiling of the grid. Running again with the same OUTPUT_DIR resumes (it says after which epoch).
Progress: Keras' bar on a terminal; elsewhere (logs) a line every --progress_interval seconds
with the step, loss, rate and time left. Exit status 2 on bad usage (flags, a data_dir without
a usable build, an output_dir whose run cannot resume on it), 1 when the run fails on damaged
or vanished shards; either with one line saying why.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from reader.core.manifest import ManifestError
from train import failures, predict, run_state, training, wider_report
from train import model as models
from train.detect import DetectSettings
from train.progress import MODES as PROGRESS_MODES
from train.progress import Reporter

USAGE_EXIT = 2


def define_flags(fv: flags.FlagValues) -> None:
    """The training flags, on `fv` (never absl's global FLAGS)."""
    flags.DEFINE_string("data_dir", None, "Directory holding the train and val shards and manifests.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for checkpoints, logs, predictions and metrics.json.", flag_values=fv)
    # Defaults are the configs' own (TrainConfig, ModelConfig, DetectSettings), never repeated here.
    train, model, detect = training.TrainConfig(data_dir="", output_dir=""), models.ModelConfig(), DetectSettings()
    flags.DEFINE_integer(
        "epochs", train.epochs, "Epochs to train in all (a resumed run continues up to this).", lower_bound=0, flag_values=fv
    )
    flags.DEFINE_integer("batch_size", train.batch_size, "Images per step.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "steps_per_epoch", train.steps_per_epoch, "Steps per epoch; default one pass over train.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_float("learning_rate", train.learning_rate, "Adam's learning rate.", lower_bound=0, flag_values=fv)
    flags.DEFINE_float(
        "box_weight", train.box_weight, "Weight of the box term against objectness in the loss.", lower_bound=0, flag_values=fv
    )
    flags.DEFINE_float("alpha", model.alpha, "MobileNetV2 width multiplier.", lower_bound=0.05, flag_values=fv)
    flags.DEFINE_string(
        "weights", model.weights, "Backbone weights: none, imagenet (downloads), or a local .h5 file.", flag_values=fv
    )
    flags.DEFINE_boolean("freeze_backbone", model.freeze_backbone, "Train the head only.", flag_values=fv)
    flags.DEFINE_integer(
        "head_filters", model.head_filters, "Width of the head's separable convolution.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_boolean("augment", train.augment, "Random horizontal flips of the training images.", flag_values=fv)
    flags.DEFINE_integer("seed", train.seed, "Seed of weights, data order and flips.", lower_bound=0, flag_values=fv)
    unit = dict(lower_bound=0, upper_bound=1, flag_values=fv)
    flags.DEFINE_float(
        "score_threshold", detect.score_threshold, "Lowest objectness kept for evaluation and predictions.", **unit
    )
    flags.DEFINE_float("nms_iou", detect.iou_threshold, "NMS drops a box overlapping a better one by more than this IoU.", **unit)
    flags.DEFINE_boolean(
        "write_predictions", train.write_predictions, "Write val detections in the WIDER evaluation layout.", flag_values=fv
    )
    flags.DEFINE_integer(
        "pictures", predict.PICTURES, "Val images to draw with detections (PNG) after training.", lower_bound=0, flag_values=fv
    )
    flags.DEFINE_float("picture_threshold", predict.PICTURE_THRESHOLD, "Lowest objectness drawn on the pictures.", **unit)
    flags.DEFINE_boolean("jit_compile", train.jit_compile, "XLA-compile the train step (slow to compile on CPU).", flag_values=fv)
    flags.DEFINE_enum(
        "progress", "auto", PROGRESS_MODES, "Keras' progress bar, or periodic lines; auto: the bar on a terminal.", flag_values=fv
    )
    flags.DEFINE_float(
        "progress_interval", 30, "Seconds between progress lines (--progress=lines).", lower_bound=0, flag_values=fv
    )


class UsageError(ValueError):
    """Bad command line, or a data_dir without a usable build: exit status 2."""


def parse_args(argv: list[str]):
    """argv (argv[0] is the program) to (TrainConfig, pictures, picture_threshold, Reporter)."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        fv(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from None
    missing = [name for name in ("data_dir", "output_dir") if fv[name].value is None]
    if missing:
        raise UsageError("missing required flags: " + ", ".join(f"--{m}" for m in missing))
    try:
        config = training.TrainConfig(
            data_dir=fv.data_dir,
            output_dir=fv.output_dir,
            epochs=fv.epochs,
            batch_size=fv.batch_size,
            learning_rate=fv.learning_rate,
            box_weight=fv.box_weight,
            model=models.ModelConfig(
                alpha=fv.alpha, weights=fv.weights, freeze_backbone=fv.freeze_backbone, head_filters=fv.head_filters
            ),
            detect=DetectSettings(fv.score_threshold, fv.nms_iou),
            steps_per_epoch=fv.steps_per_epoch,
            augment=fv.augment,
            seed=fv.seed,
            write_predictions=fv.write_predictions,
            jit_compile=fv.jit_compile,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return config, fv.pictures, fv.picture_threshold, Reporter(fv.progress, fv.progress_interval)


def run(argv: list[str] | None = None) -> dict:
    """Trains and evaluates as the flags in argv (without the program name) say; returns the
    metrics written to OUTPUT_DIR/metrics.json. Raises UsageError on bad flags or a data_dir
    that holds no usable train and val build."""
    config, pictures, picture_threshold, reporter = parse_args(["facegrid-train", *(sys.argv[1:] if argv is None else argv)])
    try:
        training.model_config_for_build(config)
        run_state.resume_plan(config)
    except (ManifestError, failures.UnusableData) as e:
        raise UsageError(str(e)) from None
    metrics = training.train(config, reporter)
    if pictures:
        best = os.path.join(config.output_dir, "best.keras")
        metrics["pictures"] = predict.draw_split(
            best,
            config.data_dir,
            "val",
            os.path.join(config.output_dir, "pictures"),
            pictures,
            dataclasses.replace(config.detect, score_threshold=picture_threshold),
            threshold_flag="--picture_threshold",
        )
    return metrics


def summary(metrics: dict) -> str:
    """The lines printed at the end of a run."""
    val = metrics["val"]
    losses = ", ".join(f"{v:.4f}" for v in metrics["loss"])
    step = metrics["seconds_per_step"]
    return "\n".join(
        [
            f"loss per epoch: {losses}",
            f"val AP50: {metrics['val_ap50']:.4f} (best epoch {metrics['best_epoch']}; {val['positives']} valid faces "
            f"in {val['images']} images, {val['discarded']} detections of invalid faces discarded)",
            f"recall ceiling of the grid: {metrics['recall_ceiling']:.4f} on val, {metrics['train_recall_ceiling']:.4f} on "
            f"train (faces that own a cell / target faces); val recall reached: {val['recall']:.4f}",
            wider_report.summary_line(metrics),
            f"seconds per step: {step:.3f}" if step is not None else "seconds per step: no step timed",
            *([f"predictions (WIDER layout): {metrics['predictions_dir']}"] if metrics["predictions_dir"] else []),
            *([f"pictures: {os.path.dirname(metrics['pictures'][0])}"] if metrics.get("pictures") else []),
        ]
    )  # the TensorBoard logs were named when training started


def usage() -> str:
    fv = flags.FlagValues()
    define_flags(fv)
    return f"{__doc__}\nflags:\n{fv.get_help()}"


def main(argv: list[str] | None = None) -> int:
    """The console script (argv without the program name): returns the exit status, 0, 2 on
    bad usage, 1 when the data fails while training (one line each)."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(usage())
        return 0
    try:
        metrics = run(argv)
    except UsageError as e:
        print(f"facegrid-train: {e}; --help lists every flag", file=sys.stderr)
        return USAGE_EXIT
    except models.WeightsUnavailable as e:
        print(f"facegrid-train: {e}", file=sys.stderr)
        return 1
    except failures.data_errors() as e:
        print(f"facegrid-train: failed: {failures.one_line(e)}", file=sys.stderr)
        return 1
    print(summary(metrics))
    return 0
