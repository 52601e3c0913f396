"""`python -m train` end to end on a tiny real build: the loss falls, a rerun resumes, every
promised output is written, and the pictures come out."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from train_fixtures import tiny_build  # noqa: F401 (a pytest fixture)

from train import cli, predict
from train.validation import DetectSettings

# Small and quick, not the default model: alpha 0.35, a frozen backbone (the head alone learns),
# a high learning rate so that a handful of steps shows the loss falling.
FAST = ["--alpha=0.35", "--freeze_backbone", "--learning_rate=0.01", "--batch_size=8", "--pictures=2"]


def test_trains_resumes_and_writes_everything(tiny_build, tmp_path):  # noqa: F811
    """One test, not several sharing a fixture: under pytest-xdist each worker would train."""
    out = str(tmp_path / "run")
    args = [f"--data_dir={tiny_build}", f"--output_dir={out}", *FAST]
    first = cli.run([*args, "--epochs=2"])
    # A rerun asking for three epochs trains only the third.
    second = cli.run([*args, "--epochs=3", "--steps_per_epoch=3"])

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
    for name in ("best.keras", "last.keras", "log.csv", "backup", "tensorboard/train", "tensorboard/validation"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "log.csv")) as f:
        assert f.readline().strip().split(",") == ["epoch", "loss", "val_ap50", "val_loss"]

    # Predictions in the WIDER layout: one file per val image under its event, source pixels.
    root = os.path.join(out, "predictions", "val")
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert files == sorted(f"{i % 2}--Event{i % 2}/val_{i}.txt" for i in range(8))
    with open(os.path.join(root, "1--Event1", "val_1.txt")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "val_1" and int(lines[1]) == len(lines) - 2
    boxes = np.array([[float(v) for v in line.split()] for line in lines[2:]]).reshape(-1, 5)
    assert (boxes[:, :4] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 224 + 1e-3).all()  # images <= 224 px wide

    # Pictures, after training and on demand.
    assert len(second["pictures"]) == 2
    paths = predict.draw_split(os.path.join(out, "best.keras"), tiny_build, "val", str(tmp_path / "more"), 3, DetectSettings(0.0))
    assert len(paths) == 3
    with Image.open(paths[0]) as picture:
        assert picture.size == (448, 448)


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
