"""`python -m train` end to end on a tiny real build: the loss falls, a rerun resumes (and says
so), progress shows every step, every promised output is written and agrees with metrics.json,
the saved models load in a process that imports only Keras, and the pictures come out."""

import csv
import glob
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import reader
from reader.core import boxes as box_formats
from reader.core import manifest as manifests
from train import cli, pictures, predict
from train.detect import DetectSettings
from train.metrics import Evaluator

# Small and quick, not the default model: alpha 0.35, a frozen backbone (the head alone learns),
# a high learning rate so that a handful of steps shows the loss falling. Progress as in a log,
# a line at every step.
FAST = ["--alpha=0.35", "--freeze_backbone", "--learning_rate=0.01", "--batch_size=8", "--pictures=2",
        "--progress=lines", "--progress_interval=0"]  # fmt: skip


def _ap_from_prediction_files(root: str, data_dir: str) -> float:
    """AP50 recomputed from the WIDER-layout files alone (numbers parsed as float64, as the WIDER
    tool does), against the stored faces, images taken in reverse order."""
    config = manifests.load(data_dir, "val").config
    records = []
    for _, _, meta in reader.make_dataset(data_dir, "val", 4, training=False, with_boxes=True):
        records += zip(meta["filename"].numpy(), meta["boxes"].numpy(), meta["invalid"].numpy(), meta["original_size"].numpy())
    evaluator = Evaluator()
    for filename, boxes, invalid, (height, width) in reversed(records):
        name = filename.decode()
        with open(os.path.join(root, os.path.splitext(name)[0] + ".txt")) as f:
            lines = f.read().splitlines()
        numbers = np.array([[float(v) for v in line.split()] for line in lines[2:]], np.float64).reshape(-1, 5)
        placement = box_formats.Placement.fit(int(width), int(height), int(config.input_size), config.resize)
        xyxy = np.concatenate([numbers[:, :2], numbers[:, :2] + numbers[:, 2:4]], axis=1)
        evaluator.add(placement.to_rel_xyxy(xyxy), numbers[:, 4], boxes, invalid)
    return evaluator.result()["ap"]


def _tensorboard_steps(log_dir: str) -> list[int]:
    import tensorflow as tf

    steps = set()
    for path in glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                steps.add(int(event.step))
    return sorted(steps)


def test_trains_resumes_and_writes_everything(tiny_build, tmp_path, capsys):
    """One test, not several sharing a fixture: under pytest-xdist each worker would train."""
    out = str(tmp_path / "run")
    args = [f"--data_dir={tiny_build}", f"--output_dir={out}", *FAST]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = cli.run([*args, "--epochs=2"])
    # facegrid's fit passes shuffle=False: the dataset shuffles itself, Keras has nothing to warn of.
    assert not [w for w in caught if "shuffle" in str(w.message)]
    printed = capsys.readouterr().out
    assert f"training {out} from scratch: epochs 1-2, 3 steps of 8 images per epoch" in printed
    assert "epoch 1/2 step 1/3 (33%): loss " in printed and "epoch 2/2 step 3/3 (100%): loss " in printed
    assert "steps/s" in printed and "left in the epoch" in printed
    tensorboard = os.path.join(out, "tensorboard")
    assert f"TensorBoard logs: {tensorboard} (view them: tensorboard --logdir {tensorboard})" in printed

    # A rerun asking for three epochs trains only the third, and says so.
    second = cli.run([*args, "--epochs=3", "--steps_per_epoch=3"])
    printed = capsys.readouterr().out
    assert f"resuming {out} after epoch 2 from its backup ({os.path.join(out, 'backup')}): epochs 3-3" in printed
    assert "epoch 3/3 step 1/3" in printed and "epoch 1/" not in printed

    # The loss falls, and the resumed run kept the first run's epochs.
    assert len(first["loss"]) == 2 and second["loss"][:2] == first["loss"]
    assert len(second["loss"]) == len(second["val_loss"]) == len(second["val_ap50_per_epoch"]) == 3
    assert second["loss"][-1] < second["loss"][0]
    assert all(np.isfinite(second["val_loss"]))

    # metrics.json, checkpoints, logs.
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["loss"] == second["loss"] and 0.0 <= metrics["val_ap50"] <= 1.0
    assert metrics["recall_ceiling"] == 1.0  # the tiny build has no cell collisions
    assert metrics["val"]["positives"] == 14 and metrics["val"]["images"] == 8
    # WIDER's Easy / Medium / Hard need WIDER val images: absent here, saying why, in the summary too.
    absent = "val is not WIDER's val: its image 0--Event0/val_0.jpg is none of WIDER val's 3,226 images"
    assert metrics["wider_absent"] == absent and metrics["wider_hard"] is None and metrics["wider_recall_ceiling"] is None
    assert f"WIDER Easy/Medium/Hard AP: absent: {absent}" in cli.summary(second).splitlines()
    for name in ("best.keras", "last.keras", "log.csv", "backup", "tensorboard/train", "tensorboard/validation"):
        assert os.path.exists(os.path.join(out, name)), name
    # Epochs count from 1 in log.csv, metrics.json and TensorBoard alike.
    with open(os.path.join(out, "log.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "val_ap50", "val_loss"] and [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert metrics["epochs"] == [1, 2, 3] and metrics["best_epoch"] in (1, 2, 3)
    assert metrics["val_ap50_per_epoch"][metrics["best_epoch"] - 1] == max(metrics["val_ap50_per_epoch"])
    assert _tensorboard_steps(tensorboard) == [1, 2, 3]

    # Predictions in the WIDER layout: one file per val image under its event, source pixels.
    root = os.path.join(out, "predictions", "val")
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert files == sorted(f"{i % 2}--Event{i % 2}/val_{i}.txt" for i in range(8))
    with open(os.path.join(root, "1--Event1", "val_1.txt")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "val_1" and int(lines[1]) == len(lines) - 2
    boxes = np.array([[float(v) for v in line.split()] for line in lines[2:]]).reshape(-1, 5)
    assert (boxes[:, :4] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 224 + 1e-3).all()  # images <= 224 px wide
    # The files hold the scores and boxes exactly: their AP is metrics.json's, to the last bit.
    assert _ap_from_prediction_files(root, tiny_build) == metrics["val_ap50"]

    # The saved models load with Keras alone: no facegrid import, no custom object, no compile=False.
    load = (
        "import sys, keras\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras.saving.load_model(path)\n"
        "    print(model.name, model.output.shape)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('train', 'reader', 'pipeline')]\n"
    )
    models = [os.path.join(out, name) for name in ("best.keras", "last.keras")]
    done = subprocess.run([sys.executable, "-c", load, *models], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.count("facegrid (None, 7, 7, 5)") == 2, done.stderr[-3000:]

    # Pictures, after training and on demand.
    assert len(second["pictures"]) == 2
    paths = predict.draw_split(os.path.join(out, "best.keras"), tiny_build, "val", str(tmp_path / "more"), 3, DetectSettings(0.0))
    assert len(paths) == 3
    with Image.open(paths[0]) as picture:
        assert picture.size == (448, 448 + pictures.LEGEND_HEIGHT)  # the legend strip below the image


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output_dir=x"], "--data_dir"),
        (["--data_dir=x", "--output_dir=y", "--weights=nowhere.h5"], "weights must be one of"),
        (["--data_dir=x", "--output_dir=y", "--epochs=-1"], "epochs"),
        (["--data_dir=/nonexistent", "--output_dir=y"], "no manifest"),
    ],
)
def test_bad_usage_exits_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


class _ConstantModel:
    """Predicts objectness 0.2 in every cell: a young model, as far as the pictures can tell."""

    def predict_on_batch(self, images):
        grid = np.full((len(images), 7, 7, 5), 0.5, np.float32)
        grid[..., 4] = 0.2
        return grid


def test_pictures_say_why_nothing_is_drawn(tiny_build, tmp_path, caplog):
    paths = predict.draw_split(_ConstantModel(), tiny_build, "val", str(tmp_path / "a"), 3, DetectSettings(0.5))
    assert len(paths) == 3
    assert "no detection in the 3 pictures: the highest objectness is 0.2000, under --picture_threshold=0.5" in caplog.text
    assert "e.g. --picture_threshold=0.2 (about as many cells reach it as the pictures hold faces" in caplog.text
    caplog.clear()
    assert len(predict.draw_split(_ConstantModel(), tiny_build, "val", str(tmp_path / "b"), 2, DetectSettings(0.1))) == 2
    assert "no detection" not in caplog.text


def test_predict_help_prints_the_flags(capsys):
    assert predict.main(["train.predict", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "--picture_threshold" in printed and "--score_threshold" not in printed and "--model" in printed
    assert cli.main(["--help"]) == 0 and "--progress_interval" in capsys.readouterr().out
