"""`python -m train.predict`: draw a trained model's detections over a split's images, as PNG.

    python -m train.predict --model=OUTPUT_DIR/best.keras --data_dir=SHARDS --output_dir=DIR \\
        [--split=val] [--num_images=8] [--picture_threshold=0.5] [--nms_iou=0.4] [--scale=2]

Each picture is the stored canvas (what the model sees), scaled up `scale` times, with the grid
cells in faint lines, the stored faces in green (invalid ones dashed orange) and the detections
in red with their scores, and a legend below (train.pictures). One PNG per image, named after the image's path (event__name.png).

A young model's objectness stays low everywhere: when no cell of the pictures reaches the
threshold, a warning gives the highest score seen and a lower threshold to try: one that about
as many cells reach as the pictures hold faces (pictures.suggested_threshold).

Exit status 2 on bad usage (flags, a split without a manifest, a model made for images of
another size than the shards'), 1 when the shards fail while read; either with one line.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import numpy as np
from absl import flags

from train import pictures
from train.detect import DetectSettings

draw = pictures.draw  # one picture: see train.pictures
PICTURE_THRESHOLD = 0.5  # objectness drawn on pictures (evaluation keeps far lower scores: DetectSettings)
PICTURES = 8  # images drawn by default
_log = logging.getLogger(__name__)


class ModelMismatch(ValueError):
    """A model that cannot take the split's images: made for another input size or grid."""


def below_threshold_note(highest: float, threshold: float, images: int, threshold_flag: str = "--picture_threshold",
                         suggested: float | None = None, faces: int | None = None) -> str:  # fmt: skip
    """The warning for pictures in which no detection reached the threshold; `suggested` (from
    pictures.suggested_threshold, for the pictures' `faces` faces) else the highest score, floored."""
    lower = math.floor(highest * 100) / 100 if suggested is None else suggested
    reach = "" if faces is None else f" (about as many cells reach it as the pictures hold faces, {faces})"
    return (
        f"no detection in the {images} pictures: the highest objectness is {highest:.4f}, under "
        f"{threshold_flag}={threshold:g} (a model early in training scores low everywhere); "
        f"lower it to see its best guesses, e.g. {threshold_flag}={lower:g}{reach}"
    )


def draw_split(
    model, data_dir: str, split: str, output_dir: str, num_images: int, settings, scale: int = 2,
    threshold_flag: str = "--picture_threshold",
) -> list[str]:  # fmt: skip
    """Draws the first `num_images` records of a split (manifest order); returns the PNG paths.

    model: a keras.Model or the path of a saved one (.keras); settings: `DetectSettings`.
    When no detection reaches settings.score_threshold in any picture, logs a warning (see
    `below_threshold_note`; threshold_flag names the flag that sets it).
    """
    import keras

    import reader
    from reader.core import manifest as manifests
    from reader.core import targets
    from train import detect

    where = model if isinstance(model, str) else "the model"
    if isinstance(model, str):
        model = keras.saving.load_model(model, compile=False)
    manifest = manifests.load(data_dir, split)
    grid_size = manifest.grid_size
    _check_fits(model, where, manifest)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    highest, drawn, objectness, faces = 0.0, 0, [], 0
    dataset = reader.make_dataset(data_dir, split, min(num_images, 16), training=False, with_boxes=True)
    for images, _, meta in dataset.take(math.ceil(num_images / min(num_images, 16))):
        grids = np.asarray(model.predict_on_batch(images))
        for image, grid, boxes, invalid, filename in zip(
            images.numpy(), grids, meta["boxes"].numpy(), meta["invalid"].numpy(), meta["filename"].numpy()
        ):
            if len(paths) == num_images:
                break
            det_boxes, det_scores = detect.detect(grid, settings.score_threshold, settings.iou_threshold, settings.max_detections)
            highest, drawn = max(highest, float(grid[..., targets.OBJ].max())), drawn + len(det_scores)
            objectness.append(grid[..., targets.OBJ].ravel())
            faces += int(np.sum(np.asarray(invalid).reshape(-1)[: len(np.asarray(boxes).reshape(-1, 4))] == 0))
            picture = draw(image, boxes, invalid, det_boxes, det_scores, grid_size, scale, settings.score_threshold)
            name = os.path.splitext(filename.decode("utf-8"))[0].replace("/", "__")
            paths.append(os.path.join(output_dir, f"{name}.png"))
            picture.save(paths[-1])
    if paths and not drawn:
        suggested = pictures.suggested_threshold(np.concatenate(objectness), max(faces, len(paths)))
        _log.warning(
            "%s",
            below_threshold_note(
                highest, settings.score_threshold, len(paths), threshold_flag, suggested, max(faces, len(paths))
            ),
        )
    return paths


def _check_fits(model, where: str, manifest) -> None:
    """Raises ModelMismatch when `model` takes images of another size than the split's, or
    predicts another grid."""
    takes, gives = getattr(model, "input_shape", None), getattr(model, "output_shape", None)
    if takes is None or gives is None:  # not a Keras model (a stand-in with predict_on_batch): nothing to compare
        return
    size, grid = manifest.input_size, manifest.grid_size
    if tuple(takes[1:3]) != (size, size) or tuple(gives[1:3]) != (grid, grid):
        raise ModelMismatch(
            f"{where}: takes {takes[1]}x{takes[2]} images and predicts a {gives[1]}x{gives[2]} grid; the {manifest.split} "
            f"shards in {manifest.data_dir} hold {size}x{size} images with {grid}x{grid} grids: use a model trained on such shards"
        )


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "A saved model (OUTPUT_DIR/best.keras of `python -m train`).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Directory holding the shards and manifests.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for the PNG pictures.", flag_values=fv)
    flags.DEFINE_string("split", "val", "Split to draw.", flag_values=fv)
    flags.DEFINE_integer("num_images", PICTURES, "Images to draw.", lower_bound=1, flag_values=fv)
    # Named as train's flag for its pictures: train's --score_threshold is the evaluation's cut.
    flags.DEFINE_float(
        "picture_threshold", PICTURE_THRESHOLD, "Lowest objectness drawn.", lower_bound=0, upper_bound=1, flag_values=fv
    )
    flags.DEFINE_float(
        "nms_iou", DetectSettings().iou_threshold, "NMS IoU threshold.", lower_bound=0, upper_bound=1, flag_values=fv
    )
    flags.DEFINE_integer("scale", 2, "Pictures are the canvas scaled up this many times.", lower_bound=1, flag_values=fv)
    return fv


def usage() -> str:
    return f"{__doc__}\nflags:\n{_define_flags().get_help()}"


def main(argv: list[str] | None = None) -> int:
    """argv includes the program name (default sys.argv). Returns 0, 2 on bad usage, 1 when the
    shards fail while read."""
    argv = sys.argv if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv[1:]):
        print(usage())
        return 0
    fv = _define_flags()
    try:
        fv(argv)
        missing = [name for name in ("model", "data_dir", "output_dir") if fv[name].value is None]
        if missing:
            raise flags.Error("missing required flags: " + ", ".join(f"--{m}" for m in missing))
    except flags.Error as e:
        print(f"train.predict: {e}\n{__doc__}", file=sys.stderr)
        return 2

    from reader.core.manifest import ManifestError
    from train import failures

    settings = DetectSettings(fv.picture_threshold, fv.nms_iou)
    try:
        paths = draw_split(fv.model, fv.data_dir, fv.split, fv.output_dir, fv.num_images, settings, fv.scale)
    except (ModelMismatch, ManifestError) as e:
        print(f"train.predict: {e}", file=sys.stderr)
        return 2
    except failures.data_errors() as e:
        print(f"train.predict: failed: {failures.one_line(e)}", file=sys.stderr)
        return 1
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
