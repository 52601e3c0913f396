"""Training and prediction asked to do what they cannot: one line each, exit 2 for a mistake to
correct (flags, data that cannot serve, a run that cannot go on), 1 for shards that fail while
read, never a traceback; a resumed run notices when its data changed under it. Tiny models on
the tiny build: seconds each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.sample import synthetic
from reader.core import manifest as manifests
from tests.support import build_edits, sources
from tests.support.builds import run_build
from tests.support.paths import ROOT
from train import cli, run_state

TINY = ["--alpha=0.35", "--freeze_backbone", "--head_filters=8", "--batch_size=8", "--pictures=0", "--nowrite_predictions",
        "--progress=lines", "--progress_interval=0"]  # fmt: skip


def _copy(data_dir: str, to) -> str:
    return str(build_edits.copy_build(data_dir, to))


def _rebuild(data_dir: str, root, split: str, pictures, *flags: str) -> str:
    """Builds `split` again into data_dir from `pictures`; returns its new build id."""
    annotations, images = synthetic.write_split(str(root), split, pictures)
    run_build(annotations, images, data_dir, split, "--num_shards=1", *flags)
    return manifests.load(data_dir, split).build


def _tiny_pictures(split: str, count: int, seed: int):
    return sources.LEARNABLE.pictures(split, count, seed)


@pytest.fixture(scope="module")
def first_run(tiny_build, tmp_path_factory):
    """(data_dir, output_dir) of one epoch trained on a copy of the tiny build (copy both to change them)."""
    root = tmp_path_factory.mktemp("first-run")
    data_dir = _copy(tiny_build, root / "data")
    out = str(root / "run")
    cli.run([f"--data_dir={data_dir}", f"--output_dir={out}", "--epochs=1", *TINY])
    return data_dir, out


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> str:
    """Train and val built at 160 px (5x5 grids) from the tiny build's sources."""
    root = tmp_path_factory.mktemp("small-build")
    data_dir = str(root / "shards")
    for split, count, seed in (("train", 16, 0), ("val", 8, 1)):
        _rebuild(data_dir, root / split, split, _tiny_pictures(split, count, seed), "--input_size=160", "--grid_size=5")
    return data_dir


def _one_line(stderr: str, program: str) -> str:
    """The one line a program says it failed with; nothing else of it on stderr but TensorFlow's logs."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{program}: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _run(*argv: str, module: str = "train") -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_a_batch_larger_than_the_train_split_is_refused_in_one_line(tiny_build, tmp_path, capsys):
    assert cli.main([f"--data_dir={tiny_build}", f"--output_dir={tmp_path / 'run'}", *TINY, "--batch_size=64"]) == 2
    line = _one_line(capsys.readouterr().err, "facegrid-train")
    assert line.startswith(f"facegrid-train: batch_size=64: train holds 24 records in {tiny_build}, fewer than one batch"), line
    assert "take a batch_size of at most 24" in line


def test_a_truncated_shard_fails_the_run_in_one_line(tiny_build, tmp_path):
    data_dir = _copy(tiny_build, tmp_path / "data")
    shard = os.path.join(data_dir, manifests.load(data_dir, "train").shards[0].file)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    done = _run(f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'run'}", "--epochs=1", *TINY)
    assert done.returncode == 1, done.stderr[-3000:]
    line = _one_line(done.stderr, "facegrid-train")
    assert line.startswith(f"facegrid-train: failed: {shard}: ") and "the manifest says" in line, line


def test_resuming_on_shards_of_another_input_size_is_refused_in_one_line(first_run, small_build, tmp_path, capsys):
    _, trained = first_run
    out = shutil.copytree(trained, str(tmp_path / "run"))
    assert cli.main([f"--data_dir={small_build}", f"--output_dir={out}", "--epochs=2", *TINY]) == 2
    line = _one_line(capsys.readouterr().err, "facegrid-train")
    assert line.startswith(
        f"facegrid-train: {out}: its model was trained on 224 px images (epochs 1-1); the shards in {small_build} are 160 px now"
    ), line


def test_predicting_with_a_model_of_another_input_size_is_refused_in_one_line(first_run, small_build, tmp_path):
    _, trained = first_run
    model = os.path.join(trained, "best.keras")
    done = _run(f"--model={model}", f"--data_dir={small_build}", f"--output_dir={tmp_path / 'pictures'}", module="train.predict")
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done.stderr, "train.predict")
    assert line == (
        f"train.predict: {model}: takes 224x224 images and predicts a 7x7 grid; the val shards in {small_build} hold "
        f"160x160 images with 5x5 grids: use a model trained on such shards"
    )


def test_a_resumed_run_whose_val_split_was_built_again_chooses_best_keras_afresh(first_run, tmp_path, capsys):
    data, trained = first_run
    data_dir, out = _copy(data, tmp_path / "data"), shutil.copytree(trained, str(tmp_path / "run"))
    with open(os.path.join(out, run_state.RUN_STATE)) as f:
        before = json.load(f)
    assert before["builds"]["val"] == manifests.load(data_dir, "val").build and before["best_since"] == 1
    # The same val images, built again: another build, whose AP50 the first epoch's is not comparable to.
    rebuilt = _rebuild(data_dir, tmp_path / "val-source", "val", _tiny_pictures("val", 8, 1))
    assert rebuilt != before["builds"]["val"]
    capsys.readouterr()
    metrics = cli.run([f"--data_dir={data_dir}", f"--output_dir={out}", "--epochs=2", *TINY])
    printed = capsys.readouterr().out
    assert (
        f"val was built again since epoch 1 (build {before['builds']['val']}, now {rebuilt}): the val AP50 of epochs 1-1 "
        f"is not comparable, so best.keras is chosen afresh from epoch 2 on"
    ) in printed, printed
    assert "train was built again" not in printed
    assert metrics["epochs"] == [1, 2] and metrics["best_epoch"] == 2  # whatever epoch 1 scored on the earlier val
    with open(os.path.join(out, run_state.RUN_STATE)) as f:
        after = json.load(f)
    assert after["builds"] == {"train": before["builds"]["train"], "val": rebuilt} and after["best_since"] == 2


def test_a_val_split_without_faces_warns(tiny_build, tmp_path, capsys):
    data_dir = _copy(tiny_build, tmp_path / "data")
    faceless = (synthetic.Picture(p.filename, [], p.data) for p in _tiny_pictures("val", 4, 1))
    _rebuild(data_dir, tmp_path / "val-source", "val", faceless)
    capsys.readouterr()
    metrics = cli.run([f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'run'}", "--epochs=0", *TINY])
    printed = capsys.readouterr().out
    assert (
        f"warning: val in {data_dir} holds no face (4 images): its AP50 is 0 whatever the model does, and best.keras is "
        f"simply the first epoch's; validate on a split with faces"
    ) in printed.splitlines(), printed
    assert metrics["val"]["positives"] == 0


def test_a_val_split_without_records_is_refused_in_one_line(tiny_build, tmp_path, capsys):
    data_dir = _copy(tiny_build, tmp_path / "data")
    missing = (synthetic.Picture(p.filename, p.faces, None) for p in _tiny_pictures("val", 3, 1))  # no image written
    os.makedirs(tmp_path / "val-source" / "images")
    _rebuild(data_dir, tmp_path / "val-source", "val", missing, "--max_error_fraction=1")
    val = manifests.load(data_dir, "val")
    assert val.num_records == 0 and val.counts["errors"] == 3
    assert cli.main([f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'run'}", "--epochs=1", *TINY]) == 2
    line = _one_line(capsys.readouterr().err, "facegrid-train")
    assert line == (
        f"facegrid-train: {data_dir}: val holds no record: there is nothing to validate on (see its errors file, "
        f"{val.errors_file}); --help lists every flag"
    )


def test_a_reader_failure_inside_a_step_is_told_in_the_readers_words():
    """A damaged record found while a step runs reaches the CLI as TensorFlow's
    InvalidArgumentError, the reader's line wrapped in graph details (reader.data.damage's
    assertion): the one line printed is the reader's, quotes unescaped."""
    import tensorflow as tf

    from train import failures

    @tf.function
    def step(x):
        message = tf.constant('shard.tfrecord: record 3: expected "image/encoded", found nothing')
        with tf.control_dependencies([tf.debugging.Assert(tf.equal(x, 0), [message], summarize=1)]):
            return tf.identity(x)

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        step(tf.constant(1))
    assert "\n" in caught.value.message  # what TensorFlow wraps around it
    assert failures.one_line(caught.value) == 'shard.tfrecord: record 3: expected "image/encoded", found nothing'
