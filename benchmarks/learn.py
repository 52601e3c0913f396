"""Does the detector learn what the shards encode? Train the real model through the real
readers on a small build until it fits the images it sees, then evaluate it on those same
images: its AP50 must come near the grid's recall ceiling.

    python -m benchmarks.learn --work_dir=build/learn [--images=32] [--input_size=128]
        [--epochs=24] [--steps_per_epoch=25] [--batch_size=8] [--alpha=0.35] [--learning_rate=0.003] [--seed=0]

The images are real WIDER val entries (their names and boxes, from data/; pixels rendered by
pipeline.sample, a face painted in every box) with 1-3 faces of at least 80 source px, none
near the middle (OFF_CENTRE), built by
the real Beam job into train and val alike (so val is the training images, and, its names being
WIDER val's, training reports WIDER's Easy / Medium / Hard over them too). `python -m train`
then trains from scratch with its defaults otherwise (flip augmentation on). Targets, reader,
loss and decoding must agree for the AP to get there: any mismatch caps it far below. The best
model is then evaluated the same way on the same images mirrored at the source
(make_mirrored_build: Pillow turns the files, the annotation file moves the boxes, the real Beam
job builds them), which the readers' flip alone showed it in training: a flip whose targets do
not follow the image (which memorizing the images as they are absorbs) caps that
"mirrored_ap50" far below its ceiling. Prints the training curve (loss and val AP50 per epoch,
then the mirrored AP50) and one summary line; writes WORK_DIR/learn.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
from absl import flags

# Faces a flip moves by at least half a cell of the 4 x 4 grid at 128 px: a flip that forgot the
# targets then teaches the wrong place (faces near the middle would hide it).
OFF_CENTRE = 0.125
# The benchmark's setting (BENCHMARKS.md, "Learning"): minutes on a 2-core CPU.
DEFAULTS = dict(images=32, input_size=128, epochs=24, steps_per_epoch=25, batch_size=8, alpha=0.35, learning_rate=3e-3)
WIDER_VAL = pathlib.Path(__file__).resolve().parents[1] / "data" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def wider_val_images(count: int, min_face: int = 0, max_faces: int = 1000, skip: int = 0, off_centre: float = 0.0) -> list:
    """The first `count` entries (after `skip` matching ones) of the real WIDER val file whose
    boxes lie inside the 1,024 px width (pipeline.sample renders every image that wide and tall
    enough for its boxes, so no face is clipped), with 1..max_faces faces, each at least
    min_face px wide and with its centre at least `off_centre` (a share of the width) left or
    right of the middle, where a flip moves it. Returns pipeline.annotations.ImageAnnotation entries."""
    from pipeline import annotations

    chosen = []
    with open(WIDER_VAL, "rb") as lines:
        for entry in annotations.parse(lines, str(WIDER_VAL), "boxes"):
            faces = entry.faces
            centres = (faces[:, 0] + faces[:, 2] / 2) / 1024
            if (
                1 <= len(faces) <= max_faces and (faces[:, 0] + faces[:, 2] <= 1024).all() and (faces[:, 2] >= min_face).all()
                and (np.abs(centres - 0.5) >= off_centre).all()
            ):  # fmt: skip
                if skip:
                    skip -= 1
                    continue
                chosen.append(entry)
                if len(chosen) == count:
                    break
    return chosen


def make_wider_build(root: str, entries: list, splits=("train", "val"), build_flags: tuple[str, ...] = ()) -> str:
    """Renders the images of `entries` (pipeline.sample) and builds them as they are into each
    of `splits` under root/shards (the real Beam job, in this process); returns that data_dir."""
    from pipeline.sample import render_images, synthetic

    os.makedirs(root, exist_ok=True)
    annotations_path = os.path.join(root, "wider_subset_bbx_gt.txt")
    synthetic.write_annotations(annotations_path, [(e.filename, e.faces) for e in entries], "val")
    images_dir = os.path.join(root, "images")
    render_images(annotations_path, images_dir, processes=1)
    return _build(root, splits, build_flags)


def make_mirrored_build(source_root: str, root: str, splits=("val",), build_flags: tuple[str, ...] = ()) -> str:
    """The build of make_wider_build(source_root, ...) with every image mirrored at the source,
    independently of the readers' flip: each image file turned by Pillow
    (Image.transpose(FLIP_LEFT_RIGHT)) and each face box mirrored in the annotation file
    (x' = W - x - w, W the image's width). Built by the real Beam job into each of `splits`
    under root/shards; returns that data_dir."""
    from PIL import Image

    from pipeline import annotations
    from pipeline.sample import synthetic

    os.makedirs(root, exist_ok=True)
    source_annotations = os.path.join(source_root, "wider_subset_bbx_gt.txt")
    with open(source_annotations, "rb") as lines:
        entries = list(annotations.parse(lines, source_annotations, "boxes"))
    mirrored = []
    for entry in entries:
        target = os.path.join(root, "images", entry.filename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with Image.open(os.path.join(source_root, "images", entry.filename)) as image:
            width = image.width
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, quality=95)
        faces = entry.faces.copy()
        faces[:, 0] = width - faces[:, 0] - faces[:, 2]
        mirrored.append((entry.filename, faces))
    synthetic.write_annotations(os.path.join(root, "wider_subset_bbx_gt.txt"), mirrored, "val")
    return _build(root, splits, build_flags)


def _build(root: str, splits, build_flags: tuple[str, ...]) -> str:
    """root/wider_subset_bbx_gt.txt and root/images built into each of `splits` under root/shards."""
    from pipeline import cli

    data_dir = os.path.join(root, "shards")
    for split in splits:
        cli.run([f"--annotations={os.path.join(root, 'wider_subset_bbx_gt.txt')}", f"--images_dir={os.path.join(root, 'images')}",
                 f"--output_dir={data_dir}", f"--split={split}", "--num_shards=1", *build_flags, *IN_MEMORY])  # fmt: skip
    return data_dir


def learn(work_dir: str, images: int, input_size: int, epochs: int, steps_per_epoch: int, batch_size: int, alpha: float,
          learning_rate: float, seed: int = 0, progress: str = "lines") -> dict:  # fmt: skip
    """Builds, trains and evaluates; returns python -m train's metrics plus "build" and
    "mirrored_ap50", "mirrored_recall_ceiling", "mirrored" (`train.validation.evaluate_split`
    of the best model on the same images mirrored at the source: make_mirrored_build). Epochs
    of `steps_per_epoch` steps (passes over the few images, repeated): each epoch ends with a
    validation, which costs more than many steps here."""
    import keras

    from train import cli
    from train.detect import DetectSettings
    from train.validation import evaluate_split

    grid = input_size // 32
    build_flags = (f"--input_size={input_size}", f"--grid_size={grid}")
    data_root = os.path.join(work_dir, "data")
    data_dir = make_wider_build(
        data_root, wider_val_images(images, min_face=80, max_faces=3, off_centre=OFF_CENTRE), build_flags=build_flags
    )
    train_dir = os.path.join(work_dir, "train")
    metrics = cli.run([
        f"--data_dir={data_dir}", f"--output_dir={train_dir}", f"--epochs={epochs}",
        f"--steps_per_epoch={steps_per_epoch}", f"--batch_size={batch_size}", f"--alpha={alpha}", f"--learning_rate={learning_rate}", f"--seed={seed}",
        "--pictures=0", f"--progress={progress}", "--progress_interval=60",
    ])  # fmt: skip
    # The flip's oracle: the training images mirrored by Pillow and their boxes by the annotation
    # file, not by the readers. A model trained with flips whose targets follow the image fits
    # these as well as the images as they are; one taught mirrored image -> unmoved targets does not.
    mirrored_dir = make_mirrored_build(data_root, os.path.join(work_dir, "mirrored"), build_flags=build_flags)
    best_path = os.path.join(train_dir, "best.keras")
    best = keras.saving.load_model(
        best_path if os.path.exists(best_path) else os.path.join(train_dir, "last.keras"), compile=False
    )
    mirrored = evaluate_split(best, mirrored_dir, "val", batch_size, DetectSettings(**metrics["config"]["detect"]), coco=False)
    return {
        **metrics,
        "mirrored_ap50": mirrored["ap50"],
        "mirrored_recall_ceiling": mirrored["recall_ceiling"],
        "mirrored": mirrored,
        "build": {
            "images": images,
            "input_size": input_size,
            "grid_size": grid,
            "data_dir": data_dir,
            "mirrored_data_dir": mirrored_dir,
        },
    }


def curve(metrics: dict) -> str:
    """The training curve as a Markdown table: epoch, loss, val AP50; then the best model's AP50
    on the same images mirrored at the source."""
    rows = ["| epoch | loss | val AP50 (the training images) |", "| ---: | ---: | ---: |"]
    rows += [
        f"| {e} | {loss:.4f} | {ap:.4f} |"
        for e, loss, ap in zip(metrics["epochs"], metrics["loss"], metrics["val_ap50_per_epoch"])
    ]
    rows += [f"| best ({metrics['best_epoch']}), the images mirrored | | {metrics['mirrored_ap50']:.4f} |"]
    return "\n".join(rows)


def summary(metrics: dict) -> str:
    wider = (
        " ".join(f"{s} {metrics[f'wider_{s}']:.4f}/{metrics['wider_recall_ceiling'][s]:.4f}" for s in ("easy", "medium", "hard"))
        if metrics.get("wider_recall_ceiling")
        else f"absent ({metrics.get('wider_absent')})"
    )
    return (
        f"learn: AP50 {metrics['val_ap50']:.4f} of recall ceiling {metrics['recall_ceiling']:.4f} "
        f"(best epoch {metrics['best_epoch']} of {len(metrics['epochs'])}, {metrics['val']['positives']} faces in "
        f"{metrics['val']['images']} images, loss {metrics['loss'][0]:.4f} -> {metrics['loss'][-1]:.4f}); "
        f"mirrored at the source: AP50 {metrics['mirrored_ap50']:.4f} of recall ceiling {metrics['mirrored_recall_ceiling']:.4f}; "
        f"WIDER AP/ceiling {wider}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    fv = flags.FlagValues()
    flags.DEFINE_string("work_dir", "build/learn", "Where the build and the training run go.", flag_values=fv)
    flags.DEFINE_integer("images", DEFAULTS["images"], "Training (and evaluation) images.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "input_size",
        DEFAULTS["input_size"],
        "Stored image side, px (a multiple of 32; the grid is input_size / 32).",
        flag_values=fv,
    )
    flags.DEFINE_integer("epochs", DEFAULTS["epochs"], "Epochs.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("steps_per_epoch", DEFAULTS["steps_per_epoch"], "Steps per epoch.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch_size", DEFAULTS["batch_size"], "Images per step.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("alpha", DEFAULTS["alpha"], "MobileNetV2 width multiplier.", flag_values=fv)
    flags.DEFINE_float("learning_rate", DEFAULTS["learning_rate"], "Adam's learning rate.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of weights, order and flips.", lower_bound=0, flag_values=fv)
    fv(argv)
    metrics = learn(
        fv.work_dir, fv.images, fv.input_size, fv.epochs, fv.steps_per_epoch, fv.batch_size, fv.alpha, fv.learning_rate, fv.seed
    )
    print(curve(metrics))
    print(summary(metrics))
    pathlib.Path(fv.work_dir, "learn.json").write_text(json.dumps(metrics, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
