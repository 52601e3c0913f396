"""Mutation fuzzing of the annotation parser (pipeline.annotations), seeded and reproducible.

Each case is an excerpt of a real annotation file (a few whole images of the train or val
`*_bbx_gt.txt`, or a few lines of the test file list), put through 0 to 3 mutations: truncation
at a byte offset, bit flips, inserted, deleted or random bytes, duplicated, swapped or dropped
lines, odd encodings (UTF-16, UTF-32, Latin-1, BOMs), CRLF / CR / mixed line endings, NUL and
other control characters, huge numbers and counts, Unicode digits, underscores, signs, other
whitespace, path spellings of one image (`./`, `//`, `/./`), lines past the length cap, whole
binary files. Case `i` of seed `s` depends on (s, i) alone, so any case can be replayed.

The invariant (check_case): parse either yields annotations (at least one image; faces int32
[N, 10]; attributes within reader.core.schema.ATTRIBUTE_MAX; paths without control characters,
unique after posixpath.normpath; increasing line numbers inside the file), or raises
AnnotationError whose message is one line `SOURCE:LINE: expected ..., found ...`, short, with
LINE between 1 and one past the file's last line. Nothing else escapes; no case is slow. The
bytes are parsed as a binary file (what the Beam job passes), and again through reads of random
sizes and, when they are UTF-8, as a text file: all must agree.

    python -m fuzzing.annotation_fuzz [--cases=200000] [--seed=0] [--data_dir=...] [--show=I]

prints cases run, accepted, refused, escapes (exceptions other than AnnotationError), violations
(anything else breaking the invariant), the first failures and the slowest case; exits 1 on any
failure.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import random
import re
import sys
import time

import numpy as np
from absl import flags

from fuzzing import annotation_cases
from pipeline import annotations
from reader.core.schema import ATTRIBUTE_MAX

SOURCE = "gs://bucket/wider (fuzz).txt"  # regex metacharacters: the check must quote the name
# Per case, all its parses together. A case takes a few milliseconds; the bound is there to catch
# a hang or a blow-up (quadratic work on some input), not a machine that is busy meanwhile.
SLOW_SECONDS = 10.0
_MESSAGE = re.compile(re.escape(SOURCE) + r":(\d+): expected .+, found .+")
_MAX_MESSAGE = 300
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")  # spelled apart from the parser's on purpose
_ATTRIBUTE_MAX = np.array([ATTRIBUTE_MAX[name] for name in annotations.BOX_FIELDS[4:]])


# --- the invariant --------------------------------------------------------------------------


class _RandomReads(io.BytesIO):
    """A binary file whose reads return fewer bytes than asked, as network readers may."""

    def __init__(self, data: bytes, rng: random.Random):
        super().__init__(data)
        self._rng = rng

    def read(self, size=-1):
        return super().read(self._rng.choice((1, 2, 3, 7, 64, 4096, 1 << 16)))


def _outcome(lines, list_format: str):
    """('accepted', [(filename, line, faces)]) or ('refused', message); other exceptions escape."""
    try:
        return "accepted", [(a.filename, a.line, a.faces) for a in annotations.parse(lines, SOURCE, list_format)]
    except annotations.AnnotationError as error:
        return "refused", error


def _violation(case: annotation_cases.Case, kind: str, result) -> str | None:
    """What breaks the invariant in one outcome, or None."""
    lines_in_file = len(case.data.splitlines())
    if kind == "refused":
        message = str(result)
        match = _MESSAGE.fullmatch(message)
        if not match or int(match.group(1)) != result.line or result.source != SOURCE:
            return f"malformed message {message[:200]!r}"
        if not 1 <= result.line <= lines_in_file + 1:
            return f"line {result.line} outside the file's {lines_in_file} lines: {message[:200]!r}"
        if len(message) > _MAX_MESSAGE:
            return f"message of {len(message)} characters: {message[:200]!r}..."
        return None
    if not result:
        return "accepted a file without images"
    seen, previous = set(), 0
    for filename, line, faces in result:
        if not isinstance(faces, np.ndarray) or faces.dtype != np.int32 or faces.ndim != 2 or faces.shape[1] != 10:
            return f"faces of {filename!r}: {type(faces).__name__} {getattr(faces, 'dtype', '')} {getattr(faces, 'shape', '')}"
        if case.list_format == "names" and len(faces):
            return f"faces in a file list for {filename!r}"
        if ((faces[:, 4:] < 0) | (faces[:, 4:] > _ATTRIBUTE_MAX)).any():
            return f"attribute out of range for {filename!r}: {faces.tolist()[:3]}"
        if not isinstance(filename, str) or not filename or _CONTROL.search(filename) or filename != filename.strip(" \t"):
            return f"path {filename!r} accepted"
        key = posixpath.normpath(filename)
        if key in seen:
            return f"{filename!r} accepted twice"
        seen.add(key)
        if not previous < line <= lines_in_file:
            return f"line {line} of {filename!r} after line {previous}, in a file of {lines_in_file} lines"
        previous = line
    return None


def _same(a, b) -> bool:
    (kind_a, result_a), (kind_b, result_b) = a, b
    if kind_a != kind_b:
        return False
    if kind_a == "refused":
        return str(result_a) == str(result_b)
    return len(result_a) == len(result_b) and all(
        x[:2] == y[:2] and np.array_equal(x[2], y[2]) for x, y in zip(result_a, result_b, strict=True)
    )


def check_case(case: annotation_cases.Case) -> tuple[str, str | None, float]:
    """Parses the case's bytes and checks the invariant: (outcome, what went wrong or None,
    seconds). outcome: "accepted" or "refused" (both fine), "escape" (an exception other than
    AnnotationError) or "violation" (a bad result or message, parses that disagree, a slow case)."""
    rng = random.Random(f"reads/{case.seed}/{case.index}")
    started = time.perf_counter()
    try:
        first = _outcome(io.BytesIO(case.data), case.list_format)
        others = [("reads of random sizes", _outcome(_RandomReads(case.data, rng), case.list_format))]
        try:
            case.data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            text_file = io.TextIOWrapper(io.BytesIO(case.data), encoding="utf-8")  # universal newlines
            others.append(("a text file", _outcome(text_file, case.list_format)))
    except Exception as error:  # what the fuzzer hunts: anything but AnnotationError
        return "escape", f"{type(error).__name__}: {str(error)[:200]}", time.perf_counter() - started
    seconds = time.perf_counter() - started
    problem = _violation(case, *first)
    for how, other in others:
        if problem is None and not _same(first, other):
            problem = f"parsed as {how}: {other[0]} {str(other[1])[:120]!r}, as a binary file: {first[0]} {str(first[1])[:120]!r}"
    if problem is None and seconds > SLOW_SECONDS:
        problem = f"took {seconds:.2f} s"
    return ("violation" if problem else first[0]), problem, seconds


@dataclasses.dataclass
class Summary:
    """Figures of a run. failures: (case index, steps, what went wrong), the first 20."""

    cases: int = 0
    accepted: int = 0
    refused: int = 0
    escape: int = 0
    violation: int = 0
    slowest: float = 0.0
    slowest_index: int = -1
    failures: list = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"cases run: {self.cases}\naccepted: {self.accepted}\nrefused: {self.refused}\n"
            f"escapes: {self.escape}\nviolations: {self.violation}\n"
            f"slowest case: {self.slowest * 1000:.1f} ms (case {self.slowest_index})"
        )


def run(corpus: annotation_cases.Corpus, seed: int, count: int, start: int = 0) -> Summary:
    """Generates and checks cases start .. start+count-1 of `seed`."""
    summary = Summary()
    for case in annotation_cases.cases(corpus, seed, count, start):
        outcome, problem, seconds = check_case(case)
        summary.cases += 1
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        if problem is not None and len(summary.failures) < 20:
            summary.failures.append((case.index, case.steps, f"{outcome}: {problem}"))
        if seconds > summary.slowest:
            summary.slowest, summary.slowest_index = seconds, case.index
    return summary


def _define_flags() -> flags.FlagValues:
    values = flags.FlagValues()
    flags.DEFINE_integer("cases", 200_000, "Cases to run.", lower_bound=1, flag_values=values)
    flags.DEFINE_integer("seed", 0, "Same seed, same cases.", lower_bound=0, flag_values=values)
    flags.DEFINE_integer("start", 0, "Index of the first case.", lower_bound=0, flag_values=values)
    flags.DEFINE_string(
        "data_dir", str(annotation_cases.DATA_DIR), "The real annotation files (data/wider_face_split).", flag_values=values
    )
    flags.DEFINE_integer(
        "show", None, "Print case SHOW of --seed (its bytes and outcome) instead of a run.", lower_bound=0, flag_values=values
    )
    return values


def main(argv: list[str] | None = None) -> int:
    """The CLI. argv includes the program name (default sys.argv). Returns 0, 1 when anything
    escaped, or 2 on bad usage."""
    values = _define_flags()
    try:
        values(sys.argv if argv is None else argv)
    except flags.Error as error:
        print(f"error: {error}\n{__doc__}", file=sys.stderr)
        return 2
    corpus = annotation_cases.load_corpus(values.data_dir)
    if values.show is not None:
        case = annotation_cases.make_case(corpus, values.seed, values.show)
        print(f"steps: {case.steps}\nformat: {case.list_format}\ndata: {case.data[:2000]!r}")
        print(check_case(case))
        return 0
    started = time.perf_counter()
    summary = run(corpus, values.seed, values.cases, values.start)
    print(f"seed {values.seed}, cases {values.start}..{values.start + values.cases - 1}\n{summary}")
    for index, steps, problem in summary.failures:
        print(f"case {index} {steps}: {problem}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
