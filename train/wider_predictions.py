"""Prediction files in WIDER's layout (DIR/<event>/<name>.txt), read and checked.

What a file must be is stated in train/wider_eval.py's docstring; anything else is an EvalError
naming the file and line. Bounded reads and an unambiguous grammar, so that no file (however
long, linked or malformed) can hang the evaluation or exhaust its memory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable

import numpy as np

from train.wider_ap import EvalError, GroundTruth, ImageKey

MAX_FILE_BYTES = 64 * 2**20

# Unambiguous (digits before a dot, digits after it), so a long malformed line cannot make the
# regular expression backtrack through every way of splitting its digits.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DETECTION = re.compile(rf"[ \t]*{_NUMBER}(?:[ \t]+{_NUMBER}){{4}}[ \t]*\r?")
_DETECTIONS = re.compile(rf"(?:{_DETECTION.pattern}\n)*")
_NUMBER_ONLY = re.compile(rf"{_NUMBER}")
_COUNT = re.compile(r"[ \t]*(\d{1,9})[ \t]*\r?")


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_prediction_file(data: bytes, path: str, name: str) -> np.ndarray:
    """The detections of one prediction file (its bytes), float64 [K, 5] `x y w h score` in file
    order. name: the image's name without `.jpg`, which line 1 must give. Raises EvalError
    `PATH:LINE: expected ..., found ...` on anything train/wider_eval.py's docstring does not allow."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise EvalError(f"{path}:{line}: expected UTF-8 text, found byte 0x{data[e.start]:02x}") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise EvalError(f"{path}:1: expected the image name {name!r}, found an empty file")
    first = lines[0].strip().replace("\\", "/").split("/")[-1]
    if first.lower().endswith(".jpg"):
        first = first[:-4]
    if first != name:
        raise EvalError(f"{path}:1: expected the image name {name!r}, found {_shown(lines[0])}")
    count = _COUNT.fullmatch(lines[1]) if len(lines) > 1 else None
    if count is None:
        found = _shown(lines[1]) if len(lines) > 1 else "the end of the file"
        raise EvalError(f"{path}:2: expected the number of detections (an integer >= 0), found {found}")
    expected = int(count.group(1))
    body = lines[2:]
    if len(body) != expected:
        raise EvalError(f"{path}:2: expected {expected} detection lines after it (its count), found {len(body)}")
    if not expected:
        return np.zeros((0, 5))
    joined = "\n".join(body) + "\n"
    if _DETECTIONS.fullmatch(joined) is None:  # the slow path, only to say where
        for number, line in enumerate(body, start=3):
            if _DETECTION.fullmatch(line) is None:
                tokens = line.split()
                bad = next((t for t in tokens if _NUMBER_ONLY.fullmatch(t) is None), None)
                if len(tokens) == 5 and bad is not None:
                    what = "a NaN" if "nan" in bad.lower() else "an infinity" if "inf" in bad.lower() else _shown(bad)
                    raise EvalError(f"{path}:{number}: expected a finite decimal number, found {what} in {_shown(line)}")
                raise EvalError(f"{path}:{number}: expected 5 numbers 'x y w h score', found {_shown(line)}")
    values = np.array(joined.split(), np.float64).reshape(-1, 5)
    if not np.isfinite(values).all():  # a number too large for float64, such as 1e999
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise EvalError(f"{path}:{row + 3}: expected a finite number, found {_shown(body[row].split()[column])} (beyond float64)")
    return values


def _read_bounded(path: str, root: str) -> bytes:
    """The bytes of a prediction file: a regular file inside `root`, at most MAX_FILE_BYTES."""
    try:
        if os.path.islink(path):
            real = os.path.realpath(path)
            if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
                raise EvalError(f"{path}: a link leading out of {root} (to {real})")
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise EvalError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise EvalError(f"{path}: {info.st_size:,} bytes, over the {MAX_FILE_BYTES // 2**20} MiB a prediction file may hold")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise EvalError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise EvalError(f"{path}: over the {MAX_FILE_BYTES // 2**20} MiB a prediction file may hold")
    return data


def read_predictions(directory: str, truth: GroundTruth, images: Iterable[ImageKey] | None = None) -> dict[ImageKey, np.ndarray]:
    """The detections of DIR/<event>/<name>.txt for each image (default: every image of the
    ground truth), float64 [K, 5] each. Raises EvalError on a missing file, a .txt file under
    DIR that is no image of the ground truth, or a malformed file (see train/wider_eval.py's docstring)."""
    known = truth.index
    wanted = list(truth.images if images is None else images)
    stray = []
    for parent, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith(".txt"):
                continue
            relative = os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, "/").split("/")
            key = (relative[0], name[:-4]) if len(relative) == 2 else None
            if key not in known:
                stray.append(os.path.join(parent, name))
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise EvalError(
            f"{stray[0]}: not an image of the ground truth (WIDER val: DIR/<event>/<name>.txt for its "
            f"{len(known):,} images){more}; are these another split's predictions?"
        )
    paths = {key: os.path.join(directory, key[0], key[1] + ".txt") for key in wanted}
    missing = [path for path in paths.values() if not os.path.lexists(path)]
    if missing:
        raise EvalError(
            f"{missing[0]}: no such file: {len(missing):,} of the {len(wanted):,} images have no prediction "
            f"file (each needs one, with count 0 when nothing is detected)"
        )
    return {key: parse_prediction_file(_read_bounded(path, directory), path, key[1]) for key, path in paths.items()}
