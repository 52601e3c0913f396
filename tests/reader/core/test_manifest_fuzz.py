"""The seeded manifest fuzz of fuzzing/manifest_fuzz.py, a few thousand cases in process
(`make fuzz` runs many more, with more of them through the commands): every case is accepted
and read exactly as the checker reads it, or refused in one line naming the manifest."""

from __future__ import annotations

import random

import pytest

from fuzzing import manifest_fuzz as fuzz_manifests
from pipeline import cli
from pipeline.sample import synthetic
from reader.check.split import check_split
from tests.support import build_edits as fx

CASES = 2000
CHECK_EVERY = 20  # the checker runs on every 20th case, and on the first case of each new shard list
READER_KEYS = 3  # make_dataset (about 0.6 s each) on the first 3 distinct (config, shards)


@pytest.fixture(scope="module")
def fuzzed(good_build, tmp_path_factory):
    data_dir = fx.copy_build(good_build, tmp_path_factory.mktemp("manifest-fuzz"))
    harness = fuzz_manifests.Harness(str(data_dir), reader_keys=READER_KEYS)
    rng = random.Random(0)
    outcomes = []
    for number in range(CASES):
        label, data = fuzz_manifests.mutate(harness.raw, rng)
        outcomes.append((data, harness.run_case(label, data, check=number % CHECK_EVERY == 0)))
    harness.restore()
    return harness, outcomes


def test_every_case_is_accepted_and_read_as_checked_or_refused_in_one_line(fuzzed):
    harness, outcomes = fuzzed
    findings = [f"{out.label}: {finding}" for _, out in outcomes for finding in out.findings]
    assert findings == []
    # The fuzz reaches both ends: many refusals, and accepted manifests the readers read.
    assert harness.counts["refused"] > CASES // 2 and harness.counts["accepted"] > CASES // 20, harness.counts
    assert sum(out.readers.startswith("yielded") for _, out in outcomes) > CASES // 50
    assert sum(out.readers.startswith("refused") for _, out in outcomes) > 0


def test_refused_cases_through_the_checker_command(fuzzed):
    harness, outcomes = fuzzed
    refused = [(data, out) for data, out in outcomes if out.load != "accepted" and out.load.count(": ") >= 2][:2]
    for data, out in refused:
        with open(harness.path, "wb") as f:
            f.write(data)
        code, printed = fuzz_manifests.run_cli(harness.data_dir)
        assert fuzz_manifests.cli_findings(code, printed, out.load) == [], (out.label, printed)
    harness.restore()


def test_a_fuzzed_manifest_never_stops_a_rebuild(fuzzed, good_build, tmp_path):
    harness, outcomes = fuzzed
    data, out = next((d, o) for d, o in outcomes if o.load != "accepted" and "shards" in o.label)
    data_dir = fx.copy_build(good_build, tmp_path)
    (data_dir / "val.manifest.json").write_bytes(data)
    annotations, images = synthetic.split_paths(good_build.parent / "source", fx.SPLIT)
    code = cli.main([f"--annotations={annotations}", f"--images_dir={images}", f"--output_dir={data_dir}", f"--split={fx.SPLIT}",
                     "--num_shards=3", "--max_error_fraction=0.5", "--runner=FnApiRunner", "--direct_running_mode=in_memory"])  # fmt: skip
    assert code == 0, out.label
    assert check_split(str(data_dir), fx.SPLIT, workers=1, leakage=False).report.ok
    assert fx.read_manifest(data_dir)["reuse"]["reused"] == 0  # nothing of the refused build was taken
