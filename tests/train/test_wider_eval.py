"""`python -m train.wider_eval`: WIDER FACE's Easy / Medium / Hard AP by the release's protocol
(data/eval_tools/README.md), on hand-computed cases over small ground truths written as the
release's .mat files, against a slow loop-by-loop reading of the protocol on random cases, with
perfect predictions on the real val ground truth, and on bad input (hand-listed and fuzzed)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from train import wider, wider_ap, wider_eval, wider_predictions

# -- a ground truth in the release's layout ------------------------------------------------------


def _column(items):
    column = np.empty((len(items), 1), object)
    for i, item in enumerate(items):
        column[i, 0] = item
    return column


def write_ground_truth(directory, images):
    """images: [(event, name, boxes [N, 4] xywh, {subset: 1-based rows that count})] -> the four
    .mat files in `directory` (the subsets not given count every face)."""
    os.makedirs(directory, exist_ok=True)
    events = list(dict.fromkeys(event for event, *_ in images))
    of = {event: [image for image in images if image[0] == event] for event in events}
    common = {
        "event_list": _column([np.array([event]) for event in events]),
        "file_list": _column([_column([np.array([name]) for _, name, *_ in of[e]]) for e in events]),
        "face_bbx_list": _column([_column([np.array(b, np.int32).reshape(-1, 4) for _, _, b, _ in of[e]]) for e in events]),
        "invalid_label_list": _column(
            [_column([np.zeros((len(np.reshape(b, (-1, 4))), 1), np.uint8) for _, _, b, _ in of[e]]) for e in events]
        ),
    }
    scipy.io.savemat(os.path.join(directory, wider_ap.FACE_FILE), common)
    for subset, filename in wider_ap.SUBSET_FILES.items():

        def rows(boxes, keep, subset=subset):
            return np.array(keep.get(subset, range(1, len(np.reshape(boxes, (-1, 4))) + 1)), np.uint16).reshape(-1, 1)

        gt = _column([_column([rows(b, keep) for _, _, b, keep in of[e]]) for e in events])
        scipy.io.savemat(os.path.join(directory, filename), {**common, "gt_list": gt})
    return directory


def write_predictions(directory, detections):
    """detections: {(event, name): rows of x y w h score} -> the WIDER-layout files."""
    for (event, name), rows in detections.items():
        rows = np.array(rows, np.float64).reshape(-1, 5)
        wider.write_predictions(str(directory), f"{event}/{name}.jpg", rows[:, :4], rows[:, 4])
    return str(directory)


def score(tmp_path, images, detections):
    """The Result of `detections` against `images` (see write_ground_truth)."""
    truth = wider_ap.load_ground_truth(write_ground_truth(tmp_path / "gt", images))
    return wider_ap.evaluate(truth, wider_predictions.read_predictions(write_predictions(tmp_path / "pred", detections), truth))


A = [10, 10, 20, 20]  # x y w h
B = [100, 100, 30, 30]
C = [300, 50, 10, 12]


def near(box, dx):
    return [box[0] + dx, *box[1:]]


# -- hand-computed cases ----------------------------------------------------------------------


def test_ignored_faces_count_neither_way(tmp_path):
    # B is ignored in easy (only row 1, A, counts there), counted in medium and hard.
    images = [("0--E", "a", [A, B], {"easy": [1]})]
    result = score(tmp_path, images, {("0--E", "a"): [[*B, 0.9], [*A, 0.5]]})
    # easy: the detection of B counts neither way: precision 1 at recall 1.
    assert result.ap["easy"] == 1.0 and result.faces["easy"] == 1
    assert result.ap["hard"] == 1.0 and result.faces["hard"] == 2
    # Only B detected: in easy nothing counts (no precision anywhere, AP 0); in hard recall 1/2.
    only_b = score(tmp_path / "b", images, {("0--E", "a"): [[*B, 0.9], [*C, 0.1]]})
    assert only_b.ap["easy"] == 0.0
    assert only_b.ap["hard"] == pytest.approx(0.5)  # B at precision 1, then C a false positive


def test_duplicates_are_false_positives(tmp_path):
    # A, A again (IoU 0.5+), B over two faces. Normalized scores 1, 0.5, 0: precision 1 at recall
    # 1/2, then 1/2 (the duplicate), then 2/3 at recall 1; the envelope gives 1/2 + 1/2 * 2/3.
    images = [("0--E", "a", [A, B], {})]
    result = score(tmp_path, images, {("0--E", "a"): [[*A, 0.9], [*near(A, 2), 0.8], [*B, 0.7]]})
    assert result.ap["hard"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result.precision["hard"][0] == 1.0 and result.precision["hard"][-1] == pytest.approx(2 / 3)


def test_images_without_faces_or_without_predictions(tmp_path):
    images = [("0--E", "a", [A], {}), ("0--E", "empty", np.zeros((0, 4)), {}), ("1--F", "b", [B, C], {})]
    # The image without faces: its detection is no false positive. Image b: nothing detected,
    # its two faces still count: recall stops at 1/3.
    result = score(tmp_path, images, {("0--E", "a"): [[*A, 0.9]], ("0--E", "empty"): [[*B, 1.0]], ("1--F", "b"): []})
    assert result.faces["hard"] == 3
    assert result.ap["hard"] == pytest.approx(1 / 3)
    assert result.detections == 2 and result.images == 3


def test_tied_scores_enter_together_whatever_the_order(tmp_path):
    # A hit and a miss tied in image a, a miss tied with them in image b, a low miss: at the
    # first threshold all three tied ones are in (precision 1/3 at recall 1/2), in either order.
    images = [("0--E", "a", [A], {}), ("0--E", "b", [B], {})]
    results = [
        score(tmp_path / str(i), images, {("0--E", "a"): rows, ("0--E", "b"): [[*C, 0.5], [*near(C, 50), 0.1]]})
        for i, rows in enumerate(([[*A, 0.5], [*C, 0.5]], [[*C, 0.5], [*A, 0.5]]))
    ]
    assert results[0].ap == results[1].ap
    assert results[0].ap["hard"] == pytest.approx(0.5 / 3)


def test_unsorted_files_score_as_sorted_ones(tmp_path):
    images = [("0--E", "a", [A, B, C], {})]
    rows = [[*A, 0.9], [*near(B, 60), 0.8], [*B, 0.7], [*C, 0.2]]
    sorted_result = score(tmp_path / "s", images, {("0--E", "a"): rows})
    shuffled = score(tmp_path / "u", images, {("0--E", "a"): [rows[3], rows[1], rows[0], rows[2]]})
    assert shuffled.ap == sorted_result.ap
    assert sorted_result.ap["hard"] == pytest.approx(1 / 3 + 2 / 3 * 3 / 4)  # TP, FP, TP, TP


def test_iou_follows_the_plus_one_pixel_convention(tmp_path):
    # A 2 x 2 face and the same box shifted by one pixel: corners (0,0,2,2) and (1,0,3,2) are 3 x 3
    # pixels each with +1, overlapping 2 x 3: IoU 6/12 = 0.5, a match (plain geometry: 2/6).
    assert wider_ap.overlaps([[1, 0, 2, 2]], [[0, 0, 2, 2]])[0, 0] == 0.5
    assert score(tmp_path, [("0--E", "a", [[0, 0, 2, 2]], {})], {("0--E", "a"): [[1, 0, 2, 2, 1.0]]}).ap["hard"] == 1.0
    # A side of x2 - x1 + 1 <= 0 is no overlap: a box of width -2 overlaps nothing, not even itself.
    assert wider_ap.overlaps([[5, 5, -2, 4]], [[5, 5, -2, 4]])[0, 0] == 0.0
    assert wider_ap.overlaps([[5, 5, 0, 0]], [[5, 5, 0, 0]])[0, 0] == 1.0  # one pixel


def test_scores_are_normalized_then_sampled_at_1000_thresholds(tmp_path):
    images = [("0--E", "a", [A, B], {})]
    # TP at 1, FP at 0.9995 (normalized), TP at 0: the threshold 0.999 takes the first two
    # together (precision 1/2 at recall 1/2), so the exact ranking's 1/2 + 1/2 * 2/3 becomes 2/3.
    result = score(tmp_path, images, {("0--E", "a"): [[*A, 1.0], [*C, 0.9995], [*B, 0.0]]})
    assert result.ap["hard"] == pytest.approx(2 / 3)
    # Scores on any scale: only their normalized values matter.
    scaled = score(tmp_path / "x", images, {("0--E", "a"): [[*A, 30.0], [*C, 29.985], [*B, -10.0]]})
    assert scaled.ap == result.ap and scaled.score_range == (-10.0, 30.0)
    assert len(result.recall["hard"]) == 1000 and wider_ap.thresholds()[[0, -1]].tolist() == [0.999, 0.0]


def test_equal_scores_all_become_one(tmp_path):
    # max = min: the release's tools divide by zero; here every detection enters at once.
    images = [("0--E", "a", [A, B], {})]
    result = score(tmp_path, images, {("0--E", "a"): [[*A, 0.7], [*C, 0.7]]})
    assert result.ap["hard"] == pytest.approx(0.5 * 0.5)


def test_a_subset_without_faces_has_no_ap(tmp_path):
    images = [("0--E", "a", [A, B], {"easy": []})]
    result = score(tmp_path, images, {("0--E", "a"): [[*A, 0.7], [*B, 0.6]]})
    assert result.ap["easy"] is None and result.faces["easy"] == 0
    assert result.line() == "easy n/a medium 1.0000 hard 1.0000"


def test_evaluating_some_images_only(tmp_path):
    images = [("0--E", "a", [A], {}), ("0--E", "b", [B, C], {})]
    truth = wider_ap.load_ground_truth(write_ground_truth(tmp_path / "gt", images))
    result = wider_ap.evaluate(truth, {("0--E", "a"): np.array([[*A, 0.9]])}, images=[("0--E", "a")])
    assert result.ap["hard"] == 1.0 and result.images == 1 and result.ground_truth_images == 2
    with pytest.raises(wider_ap.EvalError, match="0--E/b: no predictions given"):
        wider_ap.evaluate(truth, {("0--E", "a"): np.array([[*A, 0.9]])})


# -- a slow reading of the protocol, loop by loop, against the vectorized one -----------------------


def _slow_ap(truth, predictions, subset):
    """The protocol as data/eval_tools/README.md words it, one threshold and detection at a time."""
    scores = [row[4] for key in truth.images for row in predictions[key]]
    low, high = min(scores), max(scores)
    per_image = []
    faces = 0
    for i, key in enumerate(truth.images):
        counted = truth.counted[subset][i]
        faces += int(counted.sum())
        rows = sorted(([*r[:4], (r[4] - low) / (high - low)] for r in predictions[key]), key=lambda r: -r[4])
        labels = []  # per detection: "tp", "fp" or "ignored"
        recalled = set()
        for row in rows:
            best, best_iou = None, -1.0
            for f, face in enumerate(truth.boxes[i]):
                d = (row[0], row[1], row[0] + row[2], row[1] + row[3])
                g = (face[0], face[1], face[0] + face[2], face[1] + face[3])
                iw = min(d[2], g[2]) - max(d[0], g[0]) + 1
                ih = min(d[3], g[3]) - max(d[1], g[1]) + 1
                iou = 0.0
                if iw > 0 and ih > 0:
                    iou = iw * ih / ((d[2] - d[0] + 1) * (d[3] - d[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih)
                if iou > best_iou:
                    best, best_iou = f, iou
            if best_iou >= 0.5 and not counted[best]:
                labels.append("ignored")
            elif best_iou >= 0.5 and best not in recalled:
                recalled.add(best)
                labels.append("tp")
            else:
                labels.append("fp")
        per_image.append([(row[4], label) for row, label in zip(rows, labels)] if len(truth.boxes[i]) else [])
    precision, recall = [], []
    for k in range(1, 1001):
        t = 1 - k / 1000
        tp = sum(1 for image in per_image for s, label in image if s >= t and label == "tp")
        counted_dets = sum(1 for image in per_image for s, label in image if s >= t and label != "ignored")
        precision.append(tp / counted_dets if counted_dets else 0.0)
        recall.append(tp / faces)
    mrec, mpre = [0.0, *recall, 1.0], [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_evaluation_agrees_with_a_slow_reading_of_the_protocol(tmp_path, seed):
    rng = np.random.default_rng(seed)
    images, detections = [], {}
    for i in range(6):
        n = int(rng.integers(0, 6))
        boxes = np.c_[rng.integers(0, 60, (n, 2)), rng.integers(0, 25, (n, 2))]
        if n > 1 and rng.random() < 0.3:
            boxes[1] = boxes[0]  # two equal faces
        keep = {"easy": sorted(rng.choice(np.arange(1, n + 1), int(rng.integers(0, n + 1)), replace=False).tolist())}
        images.append((f"{i % 2}--E", f"img{i}", boxes, keep))
        k = int(rng.integers(0, 8))
        picks = boxes[rng.integers(0, n, k)] + rng.integers(-3, 4, (k, 4)) if n else np.zeros((k, 4))
        picks = np.where(rng.random((k, 1)) < 0.3, np.c_[rng.integers(0, 60, (k, 2)), rng.integers(1, 25, (k, 2))], picks)
        detections[(f"{i % 2}--E", f"img{i}")] = np.c_[picks, rng.choice([0.1, 0.3, 0.5, 0.7, 0.9, 0.95], k)]
    truth = wider_ap.load_ground_truth(write_ground_truth(tmp_path, images))
    if not sum(len(d) for d in detections.values()):
        return
    result = wider_ap.evaluate(truth, detections)
    for subset in wider_ap.SUBSETS:
        if result.faces[subset]:
            assert result.ap[subset] == pytest.approx(_slow_ap(truth, detections, subset), abs=1e-12), subset


# -- the real ground truth -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truth():
    return wider_ap.load_ground_truth(wider_ap.DEFAULT_GROUND_TRUTH)


def test_the_real_ground_truth_holds_what_its_readme_says(truth):
    assert len(truth.images) == 3226 and len({event for event, _ in truth.images}) == 61
    assert sum(len(b) for b in truth.boxes) == 39708
    assert {s: truth.faces(s) for s in wider_ap.SUBSETS} == {"easy": 7211, "medium": 13319, "hard": 31958}


def test_perfect_predictions_score_1_up_to_the_faces_no_box_can_match(truth, tmp_path):
    """One detection per distinct face box that has a size (random scores, and low-scored
    misses after them): Easy and Medium AP 1; Hard misses two faces no detection can take:
    39_Ice_Skating_iceskiing_39_583 face 8 (width -2: nothing overlaps it under the +1
    convention) and 21_Festival_Festival_21_604 face 104 (the same box as an earlier face of
    that image, which every detection of it takes first)."""
    rng = np.random.default_rng(0)
    for key, boxes in zip(truth.images, truth.boxes):
        found = np.unique(boxes[(boxes[:, 2:] >= 0).all(axis=1)], axis=0)
        misses = np.c_[rng.uniform(0, 900, (3, 2)), rng.uniform(1, 9, (3, 2))] + [2000, 0, 0, 0]  # off the image
        rows = np.r_[np.c_[found, rng.uniform(0.5, 1, len(found))], np.c_[misses, rng.uniform(0, 0.4, 3)]]
        wider.write_predictions(str(tmp_path), f"{key[0]}/{key[1]}.jpg", rows[:, :4], rows[:, 4])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.wider_eval",
            f"--predictions={tmp_path}",
            f"--json={tmp_path}/r.json",
            f"--plot={tmp_path}/r.png",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "easy 1.0000 medium 1.0000 hard 0.9999\n"
    with open(tmp_path / "r.json") as f:
        report = json.load(f)
    assert report["ap"]["easy"] == 1.0 and report["ap"]["medium"] == 1.0
    assert report["ap"]["hard"] == pytest.approx(1 - 2 / 31958, abs=1e-12)
    assert report["faces"] == {"easy": 7211, "medium": 13319, "hard": 31958} and report["images"] == 3226
    assert len(report["curves"]["hard"]["precision"]) == len(report["thresholds"]) == 1000
    assert os.path.getsize(tmp_path / "r.png") > 10_000


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    """A two-image ground truth and a valid prediction folder for it; returns (gt, predictions)."""
    gt = write_ground_truth(tmp_path / "gt", [("0--E", "a", [A, B], {}), ("1--F", "b", [C], {})])
    predictions = write_predictions(tmp_path / "pred", {("0--E", "a"): [[*A, 0.9]], ("1--F", "b"): []})
    return str(gt), predictions


def _run(capsys, *argv):
    status = wider_eval.main(["train.wider_eval", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_valid_input_prints_one_line(small, capsys):
    gt, predictions = small
    assert _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}") == (
        0,
        "easy 0.3333 medium 0.3333 hard 0.3333\n",
        "",
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\n2\n1 2 3 4 0.5\n", ":2: expected 2 detection lines after it (its count), found 1"),
        ("a\n1\n1 2 3 4\n", ":3: expected 5 numbers 'x y w h score', found '1 2 3 4'"),
        ("a\n1\n1 2 3 4 nan\n", ":3: expected a finite decimal number, found a NaN in '1 2 3 4 nan'"),
        ("a\n1\n1 2 3 4 -inf\n", ":3: expected a finite decimal number, found an infinity"),
        ("a\n1\n1 2 3 4 1e999\n", ":3: expected a finite number, found '1e999' (beyond float64)"),
        ("a\n1\n1 2 3 4 0x1\n", ":3: expected a finite decimal number, found '0x1'"),
        ("a\nmany\n", ":2: expected the number of detections (an integer >= 0), found 'many'"),
        ("a\n", ":2: expected the number of detections (an integer >= 0), found the end of the file"),
        ("", ":1: expected the image name 'a', found an empty file"),
        ("b\n0\n", ":1: expected the image name 'a', found 'b'"),
        ("a\n1\n\n1 2 3 4 0.5\n", ":2: expected 1 detection lines after it (its count), found 2"),
    ],
)
def test_malformed_files_get_one_line_naming_file_and_line(small, capsys, content, message):
    gt, predictions = small
    path = os.path.join(predictions, "0--E", "a.txt")
    with open(path, "w") as f:
        f.write(content)
    status, out, err = _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")
    assert (status, out) == (1, "")
    assert err.startswith(f"train.wider_eval: {path}{message}")
    assert err.count("\n") == 1


def test_tolerated_layouts(small, capsys):
    # A path and .jpg in line 1, CRLF, tabs, blank lines at the end, signs and exponents.
    gt, predictions = small
    with open(os.path.join(predictions, "0--E", "a.txt"), "wb") as f:
        f.write(b"0--E/a.jpg\r\n2\r\n10\t10 20 20 +9e-1\r\n 100 100 30 30 .5 \r\n\r\n\n")
    assert _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")[:2] == (
        0,
        "easy 0.6667 medium 0.6667 hard 0.6667\n",
    )


def test_bytes_that_are_not_utf8(small, capsys):
    gt, predictions = small
    path = os.path.join(predictions, "0--E", "a.txt")
    with open(path, "wb") as f:
        f.write(b"a\n1\n1 2 3 4 \xff\n")
    assert _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")[::2] == (
        1,
        f"train.wider_eval: {path}:3: expected UTF-8 text, found byte 0xff\n",
    )


def test_missing_files_and_other_splits_files(small, capsys):
    gt, predictions = small
    os.remove(os.path.join(predictions, "1--F", "b.txt"))
    status, _, err = _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")
    assert status == 1 and err == (
        f"train.wider_eval: {predictions}/1--F/b.txt: no such file: 1 of the 2 images have no prediction file "
        "(each needs one, with count 0 when nothing is detected)\n"
    )
    # Another split's files (here WIDER train names) are refused, naming the first.
    write_predictions(predictions, {("1--F", "b"): [], ("0--Parade", "0_Parade_Parade_0_904"): [], ("0--E", "x"): []})
    status, _, err = _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")
    assert status == 1 and err == (
        f"train.wider_eval: {predictions}/0--E/x.txt: not an image of the ground truth (WIDER val: DIR/<event>/<name>.txt "
        "for its 2 images) (and 1 more); are these another split's predictions?\n"
    )


def test_fifos_and_links_out_are_refused_without_hanging(small, capsys, tmp_path):
    gt, predictions = small
    path = os.path.join(predictions, "0--E", "a.txt")
    os.remove(path)
    os.mkfifo(path)
    assert _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")[::2] == (
        1,
        f"train.wider_eval: {path}: not a regular file\n",
    )
    os.remove(path)
    outside = tmp_path / "outside.txt"
    outside.write_text("a\n0\n")
    os.symlink(outside, path)
    status, _, err = _run(capsys, f"--predictions={predictions}", f"--ground_truth={gt}")
    assert status == 1 and err.startswith(f"train.wider_eval: {path}: a link leading out of {predictions}")


def test_usage_errors_exit_2(small, capsys, monkeypatch, tmp_path):
    gt, predictions = small
    assert _run(capsys, f"--ground_truth={gt}")[::2] == (2, "train.wider_eval: missing required flag --predictions=DIR\n")
    assert _run(capsys, "--predictions=/nonexistent")[::2] == (
        2,
        "train.wider_eval: --predictions=/nonexistent: not a directory\n",
    )
    assert _run(capsys, f"--predictions={predictions}", "--ground_truh=x")[0] == 2
    monkeypatch.setattr(wider_ap, "DEFAULT_GROUND_TRUTH", tmp_path / "nowhere")
    status, _, err = _run(capsys, f"--predictions={predictions}")
    assert (
        status == 2
        and err
        == f"train.wider_eval: no ground truth at {tmp_path / 'nowhere'} (facegrid installed without its repository): pass --ground_truth=DIR\n"
    )
    # A ground truth folder without the release's files.
    status, _, err = _run(capsys, f"--predictions={predictions}", f"--ground_truth={tmp_path}")
    assert status == 1 and err.startswith(f"train.wider_eval: {tmp_path}/wider_face_val.mat: no such file")


def test_fuzzed_prediction_files_get_one_line_or_parse(tmp_path):
    """Seeded mutations of a valid file: each parses to finite numbers, or raises one EvalError
    line naming the file (and its line where one is at fault); never another exception."""
    rng = np.random.default_rng(20261207)
    valid = ["a", "3", "10 10 20 20 0.9", "100 100 30 30 0.5", "300 50 10 12 0.25"]
    junk = [
        "nan",
        "inf",
        "-",
        "1e999",
        "0x10",
        "1,5",
        "１",
        "",
        " ",
        "\t",
        "\r",
        "\x00",
        "é",
        "1.2.3",
        "+-1",
        "e5",
        "1e",
        "\u2028",
        "9" * 400,
    ]
    outcomes = {"parsed": 0, "error": 0}
    for case in range(3000):
        lines = list(valid)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(lines) + 1))
            kind = rng.integers(0, 6)
            if kind == 0 and lines:
                lines.pop(min(i, len(lines) - 1))
            elif kind == 1:
                lines.insert(i, " ".join(rng.choice(junk + ["1", "2.5", "-3"], int(rng.integers(0, 7)))))
            elif kind == 2 and lines:
                tokens = lines[min(i, len(lines) - 1)].split(" ")
                tokens[int(rng.integers(0, len(tokens)))] = str(rng.choice(junk))
                lines[min(i, len(lines) - 1)] = " ".join(tokens)
            elif kind == 3:
                lines.insert(i, "")
            elif kind == 4 and len(lines) > 1:
                lines[1] = str(rng.choice(["-1", "0", "2", "4", "99", "3.0", "3 3"]))
            else:
                position = int(rng.integers(0, len("\n".join(lines)) + 1))
                text = "\n".join(lines)
                lines = (text[:position] + str(rng.choice(junk)) + text[position:]).split("\n")
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        path = f"{tmp_path}/0--E/a.txt"
        try:
            values = wider_predictions.parse_prediction_file(data, path, "a")
        except wider_ap.EvalError as e:
            message = str(e)
            assert message.startswith(f"{path}:") and "\n" not in message, (case, data, message)
            outcomes["error"] += 1
        else:
            assert values.shape[1] == 5 and np.isfinite(values).all(), (case, data)
            outcomes["parsed"] += 1
    assert outcomes["parsed"] > 100 and outcomes["error"] > 1000, outcomes


def test_no_traceback_from_the_command(small, tmp_path):
    gt, predictions = small
    with open(os.path.join(predictions, "0--E", "a.txt"), "w") as f:
        f.write("a\n1\n1 2 3 4 NaN\n")
    done = subprocess.run(
        [sys.executable, "-m", "train.wider_eval", f"--predictions={predictions}", f"--ground_truth={gt}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and ":3: expected a finite decimal number, found a NaN" in done.stderr
