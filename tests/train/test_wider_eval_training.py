"""Training's WIDER report: a val split of WIDER val images gets Easy / Medium / Hard AP beside
the grid's recall ceiling of each subset; any other val split says why they are absent. The
end-to-end training run that writes them into metrics.json is test_train_cli.py's (absent) and
test_learning.py's (present)."""

import os

import numpy as np
import pytest

import reader
from tests.support.fakes import GuessingModel
from train import validation, wider_ap, wider_predictions, wider_report
from train.detect import DetectSettings

NO_NMS = DetectSettings(score_threshold=0.5, iou_threshold=1.0)  # every cell's box kept


class _TargetsModel:
    """Predicts, batch after batch, the stored targets of the split it is evaluated on (read in
    the same order as evaluate_split reads it): the best any model of this grid can do."""

    def __init__(self, data_dir, split, batch_size):
        self._targets = (t.numpy() for _, t in reader.make_dataset(data_dir, split, batch_size, training=False))

    def predict_on_batch(self, images):
        return next(self._targets)


def test_predicting_the_targets_scores_the_grid_ceiling_of_each_subset(wider_build, tmp_path):
    """Every face that owns a cell is found exactly, with score 1, and no other box: recall,
    hence AP, is each subset's recall ceiling, to the last bit. This holds targets, decoding,
    the source-pixel boxes, the evaluation and the ceiling's own reckoning to one another."""
    predictions = str(tmp_path / "predictions")
    result = validation.evaluate_split(
        _TargetsModel(wider_build, "val", 4),
        wider_build,
        "val",
        4,
        NO_NMS,
        predictions_dir=predictions,
        coco=False,
        wider_ground_truth=str(wider_ap.DEFAULT_GROUND_TRUTH),
    )
    wider = result["wider"]
    assert wider["images"] == 10 and wider["ground_truth_images"] == 3226 and wider["complete"] is False
    for subset in wider_ap.SUBSETS:
        assert wider[subset] == wider["recall_ceiling"][subset], subset
    # The crowds make the ceilings fall short of 1: faces sharing a cell, faces too small.
    assert wider["recall_ceiling"]["hard"] < wider["recall_ceiling"]["medium"] <= wider["recall_ceiling"]["easy"] <= 1.0
    assert wider["recall_ceiling"]["hard"] < 0.9 and wider["faces"]["hard"] > wider["faces"]["easy"] > 0

    # The numbers come from what the prediction files hold: reading them back gives the same APs.
    truth = wider_ap.load_ground_truth(wider_ap.DEFAULT_GROUND_TRUTH)
    keys = [
        (event, name[:-4])
        for event in sorted(os.listdir(predictions))
        for name in sorted(os.listdir(os.path.join(predictions, event)))
    ]
    again = wider_ap.evaluate(truth, wider_predictions.read_predictions(predictions, truth, keys), keys)
    assert again.ap == {s: wider[s] for s in wider_ap.SUBSETS}

    fields = wider_report.metrics_fields(wider)
    assert fields["wider_absent"] is None and fields["wider_hard"] == wider["hard"]
    line = wider_report.summary_line({**fields, "val": {"wider": wider}})
    assert line.startswith(f"WIDER val AP of the best model: easy {wider['easy']:.4f} medium ")
    assert line.endswith("(over 10 of WIDER val's 3,226 images: not comparable with published figures)")


def test_another_val_split_says_why_wider_figures_are_absent(tiny_build, tmp_path):
    result = validation.evaluate_split(
        GuessingModel(), tiny_build, "val", 4, coco=False, wider_ground_truth=str(wider_ap.DEFAULT_GROUND_TRUTH)
    )
    reason = "val is not WIDER's val: its image 0--Event0/val_0.jpg is none of WIDER val's 3,226 images"
    assert result["wider"] == {"absent": reason}
    fields = wider_report.metrics_fields(result["wider"])
    assert fields == {
        "wider_easy": None,
        "wider_medium": None,
        "wider_hard": None,
        "wider_recall_ceiling": None,
        "wider_absent": reason,
    }
    assert wider_report.summary_line(fields) == f"WIDER Easy/Medium/Hard AP: absent: {reason}"
    # Without the ground truth (facegrid installed from a wheel): absent, saying so.
    nowhere = str(tmp_path / "nowhere")
    assert wider_report.report([], None, nowhere) == {
        "absent": f"no WIDER ground truth at {nowhere} (facegrid installed without its repository)"
    }


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_ceilings_follow_the_builds_sizes(resize):
    """The same faces own fewer cells on a coarser grid: the ceiling is the build's."""
    truth = wider_ap.load_ground_truth(wider_ap.DEFAULT_GROUND_TRUTH)
    i = truth.index[("0--Parade", "0_Parade_Parade_0_628")]
    image = wider_report.SourceImage("0--Parade/0_Parade_Parade_0_628.jpg", 1024, 768, np.zeros((0, 5)))
    from reader.core.config import BuildConfig

    fine = wider_report.grid_ceilings(truth, [image], BuildConfig(input_size=448, grid_size=14, resize=resize))
    coarse = wider_report.grid_ceilings(truth, [image], BuildConfig(input_size=224, grid_size=7, resize=resize))
    assert coarse["hard"] < fine["hard"] <= 1.0
    # Hard counts every valid face of this crowd; at most one per cell of 49 owns one.
    assert coarse["hard"] <= 49 / truth.counted["hard"][i].sum()
