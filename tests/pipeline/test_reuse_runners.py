"""Incremental builds (pipeline/reuse.py) on other runners, from the command line, and on and from cloud storage
(s3:// on moto's server, gs:// on the GCS emulator): the same bytes as the in-memory clean build."""

from __future__ import annotations

import contextlib
import os

import pytest

from pipeline import cli
from tests.support import build_edits, cloud_fixtures
from tests.support import incremental as inc
from tests.support.incremental import FLAGS, IN_MEMORY, SPLIT
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

ANNOTATED, USABLE = 16, 10
MULTI_PROCESSING = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
MULTI_THREADING = ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
BUCKET = "facegrid-reuse"


# ---- runners, command line --------------------------------------------------------------------


def test_incremental_builds_on_other_runners_write_the_in_memory_clean_builds_bytes(first, clean, tmp_path):
    """Worker processes and threads get the index as a side input and read the earlier shards
    themselves: same bytes whatever runs them."""
    for name, runner in (("processes", MULTI_PROCESSING), ("threads", MULTI_THREADING)):
        out = build_edits.copy_build(first, tmp_path / name)
        inc.build(out, runner=runner)
        found = inc.files(out)
        assert inc.reuse_block(found)["reused"] == USABLE, name
        inc.assert_same_as_clean(found, clean())


def test_reuse_from_with_noreuse_is_a_usage_error(tmp_path, capsys):
    argv = [f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={tmp_path / 'out'}",
            f"--split={SPLIT}", "--noreuse", f"--reuse_from={tmp_path}"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--reuse_from" in err and "--noreuse" in err, err
    assert not (tmp_path / "out").exists()


def test_the_summary_says_what_was_reused_and_prepared(first, tmp_path, capsys):
    """The line a user reads: how many images came from which build, and none when the build
    reused nothing (first build, --noreuse)."""

    def argv(out):
        return [f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={out}",
                f"--split={SPLIT}", *FLAGS, *IN_MEMORY]  # fmt: skip

    capsys.readouterr()
    assert cli.main(argv(tmp_path / "new")) == 0  # nothing earlier
    assert "reused" not in capsys.readouterr().out
    assert cli.main(argv(build_edits.copy_build(first, tmp_path / "again"))) == 0
    printed = capsys.readouterr().out
    assert f"images: {USABLE} reused from build {inc.first_id(first)}, {ANNOTATED - USABLE} prepared" in printed.splitlines(), (
        printed
    )
    assert cli.main([*argv(build_edits.copy_build(first, tmp_path / "clean")), "--noreuse"]) == 0
    assert "reused" not in capsys.readouterr().out


# ---- cloud storage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(
            cloud_fixtures.write_fake_google_credentials(tmp_path_factory.mktemp("adc") / "adc.json")
        )
    }
    with cloud_fixtures.gcs_emulator(BUCKET) as emulator:
        env["STORAGE_EMULATOR_HOST"] = emulator.endpoint
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)  # this process builds there (a client per emulator: reader.core.storage.gcs)
        try:
            yield emulator
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@contextlib.contextmanager
def _remote(kind: str, request):
    """(root URL, Beam flags, files(prefix) -> {name: bytes}) of the store."""
    if kind == "s3":
        server = request.getfixturevalue("s3")
        yield f"s3://{BUCKET}", server.beam_flags(), lambda prefix: server.files(BUCKET, prefix)
    else:
        emulator = request.getfixturevalue("gcs")
        yield f"gs://{BUCKET}", ["--project=facegrid-test"], lambda prefix: emulator.files(BUCKET, prefix)


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_a_rebuild_in_place_on_cloud_storage_reuses(kind, request, clean):
    """The earlier build's shards are indexed and read back (ranged reads) from the store."""
    with _remote(kind, request) as (root, flags, files):
        runner = [*IN_MEMORY, *flags]
        inc.build(f"{root}/inplace", runner=runner)
        earlier = inc.manifest(files("inplace"))["build"]
        result = inc.build(f"{root}/inplace", runner=runner)
        found = files("inplace")
    assert inc.reuse_block(found) == {"from": earlier, "reused": USABLE, "prepared": ANNOTATED - USABLE, "notes": []}
    assert inc.counters(result)["images_reused"] == USABLE
    inc.assert_same_as_clean(found, clean())


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_reuse_from_cloud_storage_into_a_local_build(kind, request, clean, tmp_path):
    with _remote(kind, request) as (root, flags, files):
        runner = [*IN_MEMORY, *flags]
        inc.build(f"{root}/earlier", runner=runner)
        earlier = inc.manifest(files("earlier"))["build"]
        inc.build(tmp_path / "out", f"--reuse_from={root}/earlier", runner=runner)
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found) == {"from": earlier, "reused": USABLE, "prepared": ANNOTATED - USABLE, "notes": []}
    inc.assert_same_as_clean(found, clean())
