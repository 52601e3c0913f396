"""A training run's state across resumes: what the runs before left in its output_dir, and how
this one goes on.

run.json (the builds trained and validated on, the first epoch best.keras is chosen from),
backup/'s epoch count and log.csv's rows are read here, so that a resumed run is judged against
the data it was trained on: another input size is refused, a split built again gets a note.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import TYPE_CHECKING

from reader.core import manifest as manifests
from train.failures import RunMismatch

if TYPE_CHECKING:
    from train.training import TrainConfig


RUN_STATE = "run.json"


@dataclasses.dataclass(frozen=True)
class Resume:
    """How a run goes on from the one before in its output_dir: `best_since`, the first epoch
    whose val AP50 counts for best.keras; `notes`, what changed in the data, one line each."""

    best_since: int = 1
    notes: tuple[str, ...] = ()


def _data_state(config: TrainConfig) -> dict:
    """What run.json records of the data: each split's build id, and the shards' sizes."""
    builds = {split: manifests.load(config.data_dir, split) for split in ("train", "val")}
    return {
        "builds": {split: m.build for split, m in builds.items()},
        "input_size": builds["train"].input_size,
        "grid_size": builds["train"].grid_size,
    }


def _read_state(output_dir: str) -> dict | None:
    try:
        with open(os.path.join(output_dir, RUN_STATE)) as f:
            state = json.load(f)
    except (OSError, ValueError):  # none (a run from before run.json), or not ours: nothing to compare
        return None
    if not isinstance(state, dict) or not isinstance(state.get("builds"), dict):
        return None
    since = state.get("best_since")
    return {**state, "best_since": since if isinstance(since, int) and not isinstance(since, bool) and since >= 1 else 1}


def resume_plan(config: TrainConfig) -> Resume:
    """How a run in config.output_dir goes on, judged against its run.json: the same builds
    resume as they were; a train split built again is trained on (a note says so); a val split
    built again starts best.keras's choice afresh from the next epoch (a note says so). Raises
    RunMismatch when the shards now have another input size than the run's model."""
    done = epochs_done(os.path.join(config.output_dir, "backup"))
    earlier = _read_state(config.output_dir)
    if not done or earlier is None:
        return Resume(earlier["best_since"] if done and earlier else 1)
    now = _data_state(config)
    if (earlier.get("input_size"), earlier.get("grid_size")) != (now["input_size"], now["grid_size"]):
        raise RunMismatch(
            f"{config.output_dir}: its model was trained on {earlier.get('input_size')} px images (epochs 1-{done}); the "
            f"shards in {config.data_dir} are {now['input_size']} px now: resume it on {earlier.get('input_size')} px "
            f"shards, or train into another output_dir"
        )
    best_since, notes = earlier["best_since"], []
    was, built = earlier["builds"], now["builds"]
    if was.get("train") != built["train"]:
        notes.append(
            f"train was built again since epoch {done} (build {was.get('train')}, now {built['train']}): training goes on with the new build"
        )
    if was.get("val") != built["val"]:
        best_since = done + 1
        notes.append(
            f"val was built again since epoch {done} (build {was.get('val')}, now {built['val']}): the val AP50 of epochs "
            f"1-{done} is not comparable, so best.keras is chosen afresh from epoch {best_since} on"
        )
    return Resume(best_since, tuple(notes))


def write_state(config: TrainConfig, resume: Resume) -> None:
    path = os.path.join(config.output_dir, RUN_STATE)
    with open(f"{path}.partial", "w") as f:
        json.dump({**_data_state(config), "best_since": resume.best_since}, f, indent=2)
    os.replace(f"{path}.partial", path)  # whole or not at all: a run stopped here resumes as before


def read_log(path: str) -> list[dict]:
    """The rows of log.csv, one per finished epoch (the last row wins if an epoch repeats,
    as it does when a run stopped between writing the log and the backup)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [{key: float(value) for key, value in rows[epoch].items()} for epoch in sorted(rows)]


def epochs_done(backup_dir: str) -> int:
    """Epochs finished by the runs before, as BackupAndRestore recorded them (0 without a backup)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])
