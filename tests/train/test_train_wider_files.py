"""The WIDER-layout prediction files hold the numbers exactly, and AP does not depend on the
order of tied scores: AP recomputed from the files is the AP of metrics.json (the end-to-end
check is in test_train_cli.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train import metrics, wider


def _read(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return lines[2:]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_scores_and_boxes_read_back_exactly(tmp_path_factory, seed):
    rng = np.random.default_rng(seed)
    xywh = rng.uniform(0, 1024, (12, 4))
    scores = rng.uniform(0, 1, 12).astype(np.float32)
    scores[3] = np.nextafter(scores[2], np.float32(1))  # one float32 step apart: must not tie when read
    path = wider.write_predictions(str(tmp_path_factory.mktemp("p")), "0--Parade/x.jpg", xywh, scores)
    numbers = [line.split() for line in _read(path)]
    np.testing.assert_array_equal(np.array([n[:4] for n in numbers], np.float64), xywh)
    np.testing.assert_array_equal(np.array([n[4] for n in numbers], np.float32), scores)
    # Parsed as float64, as the WIDER tool parses them: the same order, the same ties.
    read = np.array([n[4] for n in numbers], np.float64)
    assert (np.sign(read[:, None] - read[None]) == np.sign(scores[:, None] - scores[None])).all()


def test_short_numbers_stay_short(tmp_path):
    path = wider.write_predictions(str(tmp_path), "a/b.jpg", [[1.0, 2.5, 30.25, 40.0]], np.array([0.9], np.float32))
    assert _read(path) == ["1 2.5 30.25 40 0.9"]


def test_tied_scores_enter_the_curve_together():
    # One face, two detections of equal score, one right and one wrong: whichever comes first,
    # a threshold takes both, precision 1/2 at recall 1.
    assert metrics.average_precision([0.7, 0.7], [1, 0], 1) == pytest.approx(0.5)
    assert metrics.average_precision([0.7, 0.7], [0, 1], 1) == pytest.approx(0.5)
    # TP, then {FP, TP} together (precision 2/3, raised to the 3/4 after it), then TP.
    assert metrics.average_precision([0.9, 0.7, 0.7, 0.5], [1, 0, 1, 1], 3) == pytest.approx(1 / 3 + 2 / 3 * 3 / 4)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_ap_does_not_depend_on_the_order_of_detections(seed):
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.9, 0.5, 0.25, 0.125], 20)  # many ties
    labels = rng.choice([metrics.TRUE_POSITIVE, metrics.FALSE_POSITIVE, metrics.DISCARDED], 20)
    ap = metrics.average_precision(scores, labels, 12)
    order = rng.permutation(20)
    assert metrics.average_precision(scores[order], labels[order], 12) == ap
