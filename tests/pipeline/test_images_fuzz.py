"""Fuzzing images.prepare: every format Pillow writes and reads here, truncated and mutated.

Invariant: prepare() returns a PreparedImage of the configured size, or raises UnusableImage
with a reason of REASONS; nothing else escapes and no case hangs. The corpus, the mutations
and the invariant live in fuzzing/image_fuzz.py, whose runner does the big run
(`python -m fuzzing.image_fuzz --part=fuzz`, figures in BENCHMARKS.md).
"""

import collections
import threading
import time
import warnings

import pytest
from PIL import Image

from fuzzing import image_fuzz as fuzz_images
from pipeline import images

RANDOM_CASES = 6000
SEED = 0
CASE_SECONDS = 10.0  # the slowest case of the big run takes well under 1 s


@pytest.fixture(scope="module")
def corpus():
    return fuzz_images.corpus()


def _run_guarded(cases) -> collections.Counter:
    """Runs the cases on a daemon thread, failing (not hanging) if one runs past CASE_SECONDS;
    fails listing every case where something other than UnusableImage escaped."""
    outcomes: collections.Counter = collections.Counter()
    escapes: list[str] = []
    progress = {"index": -1, "started": time.monotonic(), "case": None}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and such
            for index, case in enumerate(cases):
                progress.update(index=index, started=time.monotonic(), case=case)
                try:
                    outcomes[fuzz_images.outcome(case)] += 1
                except Exception as e:
                    escapes.append(f"{case.describe()}: {type(e).__name__}: {e}")
        progress["case"] = None

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        case = progress["case"]
        if worker.is_alive() and case is not None and time.monotonic() - progress["started"] > CASE_SECONDS:
            pytest.fail(f"{case.describe()} ran past {CASE_SECONDS} s")
    assert not escapes, f"{len(escapes)} escapes:\n" + "\n".join(escapes[:20])
    assert sum(outcomes.values()) == len(cases)
    return outcomes


def test_the_corpus_holds_every_format_pillow_writes_and_reads(corpus):
    Image.init()
    formats = {seed.format for seed in corpus}
    writable = (set(Image.SAVE) & set(Image.OPEN)) - fuzz_images._NEEDS_HANDLER
    assert formats == writable, writable - formats
    names = {seed.name for seed in corpus}
    for name in (
        "JPEG RGB",
        "JPEG L",
        "JPEG CMYK",
        "JPEG RGB quality=90 progressive=True",
        "PNG RGB",
        "PNG RGBA",
        "PNG P",
        "PNG I;16",
        "GIF P",
        "BMP RGB",
        "TIFF RGB compression=tiff_lzw",
        "WEBP RGB",
        "WEBP RGB lossless=True",
        "ICO RGBA",
        "JPEG2000 RGB",
        "PPM RGB",
        "TGA RGB",
        "PCX RGB",
    ):
        assert name in names
    for seed in corpus:  # every seed itself is a record
        assert fuzz_images.outcome(fuzz_images.Case(0, seed, "whole", seed.data, fuzz_images._CONFIGS[0])) == "record", seed.name


def test_cuts_at_every_offset_of_every_header(corpus):
    cases = fuzz_images.header_cases(corpus)
    assert len(cases) > 5000
    outcomes = _run_guarded(cases)
    assert "record" not in outcomes or outcomes["record"] < len(cases) // 100


def test_random_truncations_and_mutations(corpus):
    cases = [fuzz_images.random_case(corpus, SEED, i) for i in range(RANDOM_CASES)]
    assert {c.kind for c in cases} == {
        "truncate",
        "repaired",
        "zero_tail",
        "flip",
        "byte",
        "word",
        "insert",
        "delete",
        "duplicate",
    }
    outcomes = _run_guarded(cases)
    # Mutations leave many files decodable, and refuse the rest for every kind of reason.
    assert outcomes["record"] > RANDOM_CASES // 10
    assert {"truncated", "undecodable", "not_an_image"} <= set(outcomes)
    assert set(outcomes) <= set(images.REASONS) | {"record"}


def test_the_same_seed_gives_the_same_cases(corpus):
    first = [fuzz_images.random_case(corpus, 7, i).data for i in range(50)]
    assert first == [fuzz_images.random_case(corpus, 7, i).data for i in range(50)]
