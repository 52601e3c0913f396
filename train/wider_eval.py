"""WIDER FACE's official evaluation (Easy / Medium / Hard AP on val), for any detector.

    python -m train.wider_eval --predictions=DIR [--ground_truth=DIR] [--json=FILE] [--plot=FILE.png]

Scores a folder of prediction files in the WIDER layout (`train.wider`: DIR/<event>/<name>.txt,
line 1 the image name, line 2 the number of detections, then `x y w h score` lines in source
pixels) against the release's ground truth (data/eval_tools/, read with scipy), and prints one
line `easy 0.xxxx medium 0.xxxx hard 0.xxxx`. --json writes the APs and the three
precision-recall curves; --plot draws the curves (matplotlib). Exit status: 0, 1 when the
predictions or the ground truth are unusable (one line naming the file and line), 2 on bad usage.

The protocol is the release's (data/eval_tools/README.md), written again here in NumPy:
- scores are normalized over every detection of every image evaluated: (s - min) / (max - min);
  when they are all equal (max = min, where the release's tools divide by zero) every score
  becomes 1;
- per image, detections in decreasing score (ties in file order) each take the face they
  overlap most (the first such face on a tie). IoU uses the +1 pixel convention: corners
  (x, y, x + w, y + h), every side, the intersection's too, is x2 - x1 + 1, and a side <= 0 is no
  overlap. At IoU >= 0.5 with a face the subset ignores, the detection counts neither way; with
  a face that counts and is not yet recalled, it recalls it; otherwise it is a false positive;
- an image whose face list is empty contributes no detection (the four val images without a
  face hold one all-zero box, so theirs are false positives, as in the release's tools); the
  faces of an image without detections still count;
- at the thresholds t = 1 - k/1000, k = 1..1000: precision = faces recalled / counted detections
  scoring >= t, recall = faces recalled / faces of the subset; AP is the VOC all-point area
  under that curve (precision made non-increasing from the right, recall 0 and 1 added).

What a prediction file must be (anything else is an error naming the file and line):
- a regular file of at most 64 MiB, UTF-8; `\\n` or `\\r\\n` line ends; blank lines at the end;
- line 1 the image's name (a path before it and a `.jpg` after it are allowed);
- line 2 an integer >= 0, the number of lines that follow;
- then that many lines of exactly five decimal numbers, all finite (no NaN or inf), separated
  by spaces or tabs; boxes are taken as written: a negative size is no error, it overlaps
  nothing (as in the release's tools);
- every image of the ground truth has its file (count 0 when nothing is detected), and every
  .txt file under DIR is one of them (another split's files are refused); other files are
  left alone, as are directories; a link leading out of DIR is refused.
Evaluating only some images (`images=` of `evaluate`, what training does for a build holding
part of WIDER val) scores them alone: figures not comparable with published ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
from absl import flags

from train import wider_ap
from train.wider_ap import SUBSETS, EvalError, Result, ap_text, evaluate, load_ground_truth
from train.wider_predictions import read_predictions

USAGE_EXIT, FAILED_EXIT = 2, 1


class UsageError(ValueError):
    """Bad flags, or no ground truth to default to. Exit 2."""


def plot(result: Result, path: str, title: str = "WIDER FACE val") -> None:
    """The three precision-recall curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    for subset in SUBSETS:
        keep = ~np.isnan(result.precision[subset])
        axes.plot(result.recall[subset][keep], result.precision[subset][keep], label=f"{subset} AP {ap_text(result.ap[subset])}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def default_ground_truth() -> str:
    """The repository's data/eval_tools/ground_truth/. Raises UsageError where it is absent."""
    if not wider_ap.DEFAULT_GROUND_TRUTH.is_dir():
        raise UsageError(
            f"no ground truth at {wider_ap.DEFAULT_GROUND_TRUTH} (facegrid installed without its repository): pass --ground_truth=DIR"
        )
    return str(wider_ap.DEFAULT_GROUND_TRUTH)


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("predictions", None, "Folder of WIDER-layout prediction files: DIR/<event>/<name>.txt.", flag_values=fv)
    flags.DEFINE_string(
        "ground_truth",
        None,
        "Folder of wider_face_val.mat and wider_{easy,medium,hard}_val.mat (default: the repository's).",
        flag_values=fv,
    )
    flags.DEFINE_string("json", None, "Write the APs and the precision-recall curves here.", flag_values=fv)
    flags.DEFINE_string("plot", None, "Draw the precision-recall curves here (PNG).", flag_values=fv)
    return fv


def usage() -> str:
    return f"{__doc__}\nflags:\n{_define_flags().get_help()}"


def run(argv: list[str]) -> Result:
    """argv with the program name first. Raises UsageError or EvalError."""
    fv = _define_flags()
    try:
        fv(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from None
    if fv.predictions is None:
        raise UsageError("missing required flag --predictions=DIR")
    if not os.path.isdir(fv.predictions):
        raise UsageError(f"--predictions={fv.predictions}: not a directory")
    ground_truth = fv.ground_truth or default_ground_truth()
    if not os.path.isdir(ground_truth):
        raise UsageError(f"--ground_truth={ground_truth}: not a directory")
    for path in (fv.json, fv.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{path}: its directory does not exist")
    if fv.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'facegrid[report]'")
    truth = load_ground_truth(ground_truth)
    result = evaluate(truth, read_predictions(fv.predictions, truth))
    if fv.json:
        with open(fv.json, "w") as f:
            json.dump({**result.to_json(), "predictions": fv.predictions, "ground_truth": ground_truth}, f, indent=1)
    if fv.plot:
        plot(result, fv.plot)
    return result


def main(argv: list[str] | None = None) -> int:
    """The command (argv with the program name first; default sys.argv): returns the exit status."""
    argv = sys.argv if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv[1:]):
        print(usage())
        return 0
    try:
        result = run(argv)
    except UsageError as e:
        print(f"train.wider_eval: {e}", file=sys.stderr)
        return USAGE_EXIT
    except EvalError as e:
        print(f"train.wider_eval: {e}", file=sys.stderr)
        return FAILED_EXIT
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
