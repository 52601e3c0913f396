"""`python -m train`'s own lines: --weights=imagenet without network (one line naming the flag and
what to give instead, exit status 1, no traceback), and the TensorBoard logs named once."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT


def test_imagenet_weights_without_network_is_one_line(tiny_build, tmp_path):
    refused = "http://127.0.0.1:9"  # the discard port: nothing listens, the download is refused at once
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"), https_proxy=refused, HTTPS_PROXY=refused,
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "train", f"--data_dir={tiny_build}", f"--output_dir={tmp_path / 'out'}", "--weights=imagenet", "--epochs=1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("facegrid-train:")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "facegrid-train: --weights=imagenet: cannot download MobileNetV2's ImageNet weights (URL fetch failure on https://"
    )
    assert lines[0].endswith("); without network, give --weights=none or a local weights file")


def test_the_summary_does_not_repeat_where_the_tensorboard_logs_are():
    """Training names them once, when it starts (train.training); the closing summary does not."""
    from train import cli

    val = {"positives": 10, "images": 8, "discarded": 0, "recall": 0.5}
    metrics = {"val": val, "loss": [1.0], "val_ap50": 0.1, "best_epoch": 1, "recall_ceiling": 0.6, "train_recall_ceiling": 0.7,
               "seconds_per_step": 0.1, "predictions_dir": None, "tensorboard_dir": "out/tensorboard"}  # fmt: skip
    assert "TensorBoard" not in cli.summary(metrics)


def test_a_model_compiled_with_gridloss_loads_after_import_train_loss(tmp_path):
    """What the README says of a model compiled with GridLoss and saved: Keras alone cannot find
    the loss; `import train.loss` registers it."""
    script = (
        "import sys, keras\n"
        "if sys.argv[2] == 'import':\n"
        "    import train.loss\n"
        "if sys.argv[2] == 'save':\n"
        "    from train.loss import GridLoss\n"
        "    model = keras.Sequential([keras.Input((7, 7, 5)), keras.layers.Dense(5, activation='sigmoid')])\n"
        "    model.compile(optimizer='adam', loss=GridLoss())\n"
        "    model.save(sys.argv[1])\n"
        "else:\n"
        "    print(type(keras.saving.load_model(sys.argv[1]).loss).__name__)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    path = str(tmp_path / "compiled.keras")
    runs = {how: subprocess.run([sys.executable, "-c", script, path, how], capture_output=True, text=True, env=env, timeout=300)
            for how in ("save", "plain", "import")}  # fmt: skip
    assert runs["save"].returncode == 0, runs["save"].stderr[-2000:]
    assert runs["plain"].returncode == 1 and "Could not locate class 'GridLoss'" in runs["plain"].stderr
    assert runs["import"].returncode == 0 and runs["import"].stdout.strip() == "GridLoss", runs["import"].stderr[-2000:]
