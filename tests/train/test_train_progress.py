"""What a training run shows: step lines off a terminal, Keras' bar on one, where it starts."""

import io

import pytest

from reader.core.progress import duration
from tests.support.fakes import Clock, Terminal
from train import run_state, training
from train.progress import Reporter, StepLines


def _step_lines(interval, steps=805, epochs=10):
    clock, stream = Clock(100.0), io.StringIO()
    lines = StepLines(stream, interval, batch_size=16, clock=clock)
    lines.set_params({"epochs": epochs, "steps": steps, "verbose": 2})
    return lines, clock, stream


def test_step_lines_give_step_loss_rate_and_time_left():
    lines, clock, stream = _step_lines(interval=30)
    lines.on_epoch_begin(1)
    clock.now += 20  # the first step waits for tracing: shown at once, left out of the rate
    lines.on_train_batch_end(0, {"loss": 0.9})
    for step in range(1, 60):  # 0.5 s per step: nothing more until 30 s have passed
        clock.now += 0.5
        lines.on_train_batch_end(step, {"loss": 0.5})
    assert stream.getvalue().splitlines() == ["epoch 2/10 step 1/805 (0%): loss 0.9000"]
    clock.now += 0.5
    lines.on_train_batch_end(60, {"loss": 0.5})
    assert stream.getvalue().splitlines()[1:] == [
        "epoch 2/10 step 61/805 (7%): loss 0.5000, 2.00 steps/s (32 images/s), 6:12 left in the epoch"
    ]


def test_the_last_step_of_an_epoch_is_always_shown():
    lines, clock, stream = _step_lines(interval=3600, steps=3, epochs=1)
    lines.on_epoch_begin(0)
    for step in range(3):
        clock.now += 1
        lines.on_train_batch_end(step, {"loss": 1.0})
    assert stream.getvalue().splitlines() == [
        "epoch 1/1 step 1/3 (33%): loss 1.0000",
        "epoch 1/1 step 3/3 (100%): loss 1.0000, 1.00 steps/s (16 images/s); validating",
    ]


def test_without_a_known_length_the_lines_give_what_is_known():
    lines, clock, stream = _step_lines(interval=0, steps=None, epochs=2)
    lines.on_epoch_begin(0)
    lines.on_train_batch_end(0, {})
    clock.now += 2
    lines.on_train_batch_end(1, {"loss": 2.0})
    assert stream.getvalue().splitlines() == ["epoch 1/2 step 1", "epoch 1/2 step 2: loss 2.0000, 0.50 steps/s (8 images/s)"]


def test_reporter_draws_keras_bar_on_a_terminal_and_lines_elsewhere():
    terminal, log = Terminal(), io.StringIO()
    assert Reporter(stream=terminal).bar and Reporter(stream=terminal).keras_verbose == 1
    assert Reporter(stream=terminal).callbacks(16) == []
    assert not Reporter(stream=log).bar and Reporter(stream=log).keras_verbose == 2
    assert [type(c) for c in Reporter(stream=log).callbacks(16)] == [StepLines]
    assert Reporter("lines", stream=terminal).keras_verbose == 2 and Reporter("bar", stream=log).keras_verbose == 1
    Reporter(stream=log).say("hello")
    assert log.getvalue() == "hello\n"
    with pytest.raises(ValueError, match="progress mode"):
        Reporter("sometimes")


def test_durations():
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0:00", "1:00", "1:01", "1:00:00", "1:02:05"]


def _config(tmp_path, epochs):
    return training.TrainConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run"), epochs=epochs, batch_size=16)


def test_a_run_says_where_it_starts(tmp_path):
    rows = [{"epoch": 1.0, "val_ap50": 0.2}, {"epoch": 2.0, "val_ap50": 0.31}, {"epoch": 3.0, "val_ap50": 0.3}]
    out, backup = tmp_path / "run", tmp_path / "run" / "backup"
    assert training._start_note(_config(tmp_path, 10), 0, [], 805) == (
        f"training {out} from scratch: epochs 1-10, 805 steps of 16 images per epoch"
    )
    assert training._start_note(_config(tmp_path, 10), 3, rows, 805) == (
        f"resuming {out} after epoch 3 from its backup ({backup}): epochs 4-10, 805 steps of 16 images "
        "per epoch; best val AP50 so far 0.3100 (epoch 2, best.keras)"
    )
    assert training._start_note(_config(tmp_path, 3), 3, rows, 805).endswith("nothing to train: raise epochs to train further")
    assert "there is no backup: starting again" in training._start_note(_config(tmp_path, 3), 0, rows, None)


def test_epochs_done_reads_the_backup(tmp_path):
    assert run_state.epochs_done(str(tmp_path)) == 0
    (tmp_path / "training_metadata.json").write_text('{"epoch": 4, "batch": 0}')
    assert run_state.epochs_done(str(tmp_path)) == 4


def test_tensorboard_note_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(training.importlib.util, "find_spec", lambda name: None)
    note = training.tensorboard_note("out/tensorboard")
    assert note.startswith("TensorBoard logs: out/tensorboard (view them: tensorboard --logdir out/tensorboard)")
    assert "pip install tensorboard" in note
    monkeypatch.setattr(training.importlib.util, "find_spec", lambda name: object())
    assert "pip install" not in training.tensorboard_note("out/tensorboard")
