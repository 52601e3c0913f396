"""Seeded fuzzing of the annotation parser (issue 10, item 5): mutated excerpts of the real WIDER
files, fed as bytes, are either parsed into valid annotations or refused with one
`FILE:LINE: expected ..., found ...` AnnotationError; nothing else escapes.

The generator lives in fuzzing.annotation_cases and the invariant in fuzzing.annotation_fuzz,
so that a bigger run is `python -m fuzzing.annotation_fuzz --cases=200000`.
"""

import numpy as np
import pytest

from fuzzing import annotation_cases, annotation_fuzz
from pipeline import annotations

CASES = 5_000  # about 3 s on one core


@pytest.fixture(scope="module")
def corpus(wider_split_dir):
    return annotation_cases.load_corpus(wider_split_dir)


def test_no_case_escapes_or_breaks_the_invariant(corpus):
    summary = annotation_fuzz.run(corpus, seed=0, count=CASES)
    assert summary.failures == [], "\n".join(f"case {i} {steps}: {problem}" for i, steps, problem in summary.failures)
    assert summary.cases == summary.accepted + summary.refused == CASES
    # Both outcomes are exercised in strength, not a run where every case is refused at line 1.
    assert summary.accepted > CASES // 5 and summary.refused > CASES // 2
    assert summary.slowest < annotation_fuzz.SLOW_SECONDS


def test_cases_are_reproducible_from_seed_and_index(corpus):
    again = annotation_cases.make_case(corpus, seed=0, index=123)
    assert again == annotation_cases.make_case(corpus, seed=0, index=123)
    assert [c.data for c in annotation_cases.cases(corpus, seed=0, count=3, start=122)][1] == again.data
    assert again.data != annotation_cases.make_case(corpus, seed=1, index=123).data


def _case(data: bytes, list_format: str = "boxes") -> annotation_cases.Case:
    return annotation_cases.Case(0, 0, list_format, data, ())


def test_the_check_accepts_good_files_and_good_refusals():
    assert annotation_fuzz.check_case(_case(b"a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \n"))[:2] == ("accepted", None)
    assert annotation_fuzz.check_case(_case(b"a.jpg\n\xb2\n"))[:2] == ("refused", None)


@pytest.mark.parametrize(
    "fake, outcome, problem",
    [
        (OverflowError("Python integer out of bounds for int32"), "escape", "OverflowError"),
        ([annotations.ImageAnnotation("a.jpg", 1, np.zeros((1, 10), np.int64))], "violation", "faces of 'a.jpg'"),
        ([annotations.ImageAnnotation("a.jpg", 1, np.full((1, 10), 3, np.int32))], "violation", "attribute out of range"),
        (
            [annotations.ImageAnnotation(n, 1 + i, np.zeros((0, 10), np.int32)) for i, n in enumerate(["d/x.jpg", "d/./x.jpg"])],
            "violation",
            "accepted twice",
        ),
        (
            [annotations.ImageAnnotation("\ufeffa.jpg", 1, np.zeros((0, 10), np.int32))],
            "violation",
            "path '\\ufeffa.jpg' accepted",
        ),
        ([], "violation", "without images"),
        (annotations.AnnotationError(annotation_fuzz.SOURCE, 9, "x", "y"), "violation", "line 9 outside"),
        (annotations.AnnotationError("other.txt", 1, "x", "y"), "violation", "malformed message"),
        (annotations.AnnotationError(annotation_fuzz.SOURCE, 1, "x", "y\nz"), "violation", "malformed message"),
        (annotations.AnnotationError(annotation_fuzz.SOURCE, 1, "x", "y" * 400), "violation", "message of"),
    ],
)
def test_the_check_catches_a_parser_that_misbehaves(monkeypatch, fake, outcome, problem):
    def fake_parse(lines, source, list_format):
        if isinstance(fake, Exception):
            raise fake
        return iter(fake)

    monkeypatch.setattr(annotations, "parse", fake_parse)
    found, detail, _ = annotation_fuzz.check_case(_case(b"a.jpg\n0\n"))
    assert found == outcome and problem in detail, detail


def test_the_command_line_prints_the_figures(capsys, wider_split_dir):
    assert annotation_fuzz.main(["fuzz", "--cases=40", "--seed=5", f"--data_dir={wider_split_dir}"]) == 0
    printed = capsys.readouterr().out
    for figure in ("cases run: 40", "accepted: ", "refused: ", "escapes: 0", "violations: 0"):
        assert figure in printed
    assert annotation_fuzz.main(["fuzz", "--cases=0"]) == 2
