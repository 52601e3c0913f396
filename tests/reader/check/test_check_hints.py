"""The checker's one line for a data directory without the split asked for: the splits there
are, or the folder below that holds them; a missing bucket, missing credentials; and the same
S3 flags as the build's."""

from __future__ import annotations

import pytest

from reader.core import storage
from tests.reader.data.test_reader_hostile_s3 import BUCKET, s3  # noqa: F401 (s3: moto's server, a fixture)
from tests.support import cloud_fixtures
from tests.support.checker import problems, run_check


def _manifest_problem(data_dir, split, capsys, *flags) -> str:
    capsys.readouterr()
    code, report = run_check(data_dir, f"--split={split}", *flags, capsys=capsys)
    assert code == 1
    (found,) = problems(report, "manifest")
    return found[2]


def test_the_parent_directory_names_the_folder_that_holds_the_split(good_build, capsys):
    message = _manifest_problem(good_build.parent, "val", capsys)
    assert message == (f"no manifest here, but {good_build} holds val: give that folder as the data directory, "
                       "or build the split first (python -m pipeline ... --split=val)")  # fmt: skip


def test_another_split_names_the_splits_there_are(good_build, capsys):
    message = _manifest_problem(good_build, "train", capsys)
    assert message == (f"no manifest; {good_build} holds the splits val: give one of them, "
                       "or build the split first (python -m pipeline ... --split=train)")  # fmt: skip


def test_an_empty_directory_says_to_build(tmp_path, capsys):
    assert _manifest_problem(tmp_path, "val", capsys) == "no manifest; build the split first (python -m pipeline ... --split=val)"


@pytest.fixture
def no_keys(monkeypatch, tmp_path):
    """No credentials anywhere boto3 looks (environment, ~/.aws, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", cloud_fixtures.S3_REGION)


def test_the_checker_takes_the_builds_s3_flags(s3, no_keys, good_build, capsys):  # noqa: F811 (the fixture)
    s3.upload_tree(BUCKET, "hints", good_build)
    code, report = run_check(f"s3://{BUCKET}/hints", *s3.beam_flags(), capsys=capsys)  # keys as flags, none elsewhere
    assert code == 0, report["problems"]


def test_no_credentials_and_no_bucket_say_so(s3, no_keys, capsys):  # noqa: F811 (the fixture)
    message = _manifest_problem(f"s3://{BUCKET}/none", "val", capsys, f"--s3_endpoint_url={s3.endpoint}")
    assert message == f"unreadable manifest: no S3 credentials: {storage.NO_CREDENTIALS}"
    keys = [flag for flag in s3.beam_flags() if "endpoint" not in flag]
    message = _manifest_problem("s3://no-such-bucket/shards", "val", capsys, f"--s3_endpoint_url={s3.endpoint}", *keys)
    assert message == "no manifest: no bucket no-such-bucket on S3"
