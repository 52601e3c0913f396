"""`facegrid-build` refuses mistakes before Beam starts: one line on stderr, exit status 2, no
traceback, nothing written; a build that fails says so in one line, exit status 1."""

from __future__ import annotations

import json
import pathlib

import pytest

from pipeline import beam_flags, cli
from tests.support import builds
from tests.support.builds import files
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

REQUIRED = [f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", "--split=val", "--max_error_fraction=0.5"]


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([*builds.IN_MEMORY, *argv])  # the test's flags win
    out, err = capsys.readouterr()
    return status, out, err


def _refused(capsys, *argv: str) -> str:
    status, out, err = _main(capsys, *argv)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("facegrid-build: ") and lines[0].endswith("; --help lists every flag")
    return lines[0].removeprefix("facegrid-build: ").removesuffix("; --help lists every flag")


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--num_shard=3", "unknown flag --num_shard (did you mean --num_shards?)"),  # facegrid's, misspelled
        ("--runer=DirectRunner", "unknown flag --runer (did you mean --runner?)"),  # Beam's, misspelled
        ("--direct_num_worker=2", "unknown flag --direct_num_worker (did you mean --direct_num_workers?)"),
        ("--s3_endpoint=http://x", "unknown flag --s3_endpoint (did you mean --s3_endpoint_url?)"),
        ("--zzzz=1", "unknown flag --zzzz"),
        ("stray", "unexpected argument 'stray': every flag is --name=value"),
        ("--min_face_px=nan", "flag --min_face_px=nan: --min_face_px must be a finite number"),
        ("--min_face_px=inf", "flag --min_face_px=inf: --min_face_px must be a finite number"),
        ("--max_error_fraction=nan", "flag --max_error_fraction=nan: --max_error_fraction must be a finite number"),
        ("--num_shards=0", "flag --num_shards=0: 0 is not a positive integer"),
        ("--direct_num_workers=two", "argument --direct_num_workers: invalid int value: 'two'"),
        ("--direct_num_workers=-2", "--direct_num_workers=-2: expected 0 (one per core) or more"),
        ("--runner=DirectRuner", "--runner=DirectRuner: not a runner Beam knows (did you mean DirectRunner?)"),
        # Only Dataflow translates without running: the local runner would build and commit.
        ("--dry_run=True", "--dry_run translates a job for --runner=DataflowRunner; the local runner FnApiRunner would build"),
        ("--template_location=t.json", "--template_location translates a job for --runner=DataflowRunner;"),
        # Beam's aliases of its DirectRunner are that runner: no way around the refusal.
        (
            "--runner=direct --dry_run=True",
            "--dry_run translates a job for --runner=DataflowRunner; the local runner DirectRunner",
        ),
        (
            "--runner=DIRECTRUNNER --dry_run=True",
            "--dry_run translates a job for --runner=DataflowRunner; the local runner DirectRunner",
        ),
        ("--runner=BundleBasedDirectRunner", "--runner=BundleBasedDirectRunner: not supported"),
        ("--runner=InteractiveRunner", "--runner=InteractiveRunner: cannot be used here: ImportError"),
    ],
)
def test_flag_mistakes_are_refused_naming_the_flag(capsys, tmp_path, flag, message):
    # Beam alone would drop an unknown flag with a warning and build with the defaults.
    found = _refused(capsys, *REQUIRED, f"--output_dir={tmp_path / 'out'}", *flag.split())
    assert found.startswith(message), found
    assert not (tmp_path / "out").exists()


def test_missing_and_wrong_inputs_are_refused_before_beam_starts(capsys, tmp_path):
    out = f"--output_dir={tmp_path / 'out'}"
    images = f"--images_dir={FIXTURE_IMAGES}"
    assert _refused(capsys, "--split=val", images, out) == "missing required flags: --annotations"
    assert (
        _refused(capsys, "--annotations=/nowhere/gt.txt", images, "--split=val", out)
        == "--annotations=/nowhere/gt.txt: no such file"
    )
    assert (
        _refused(capsys, f"--annotations={tmp_path}", images, "--split=val", out)
        == f"--annotations={tmp_path}: a directory, not a file"
    )
    # Beam would otherwise start and report every image unusable, with no word on why.
    assert _refused(capsys, f"--annotations={FIXTURE_ANNOTATIONS}", "--images_dir=/nowhere", "--split=val", out) == (
        "--images_dir=/nowhere: no such directory"
    )
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert _refused(capsys, *REQUIRED, f"--output_dir={a_file}") == f"--output_dir={a_file}: a file, not a directory"
    assert _refused(capsys, *REQUIRED, f"--output_dir={a_file}/sub") == (
        f"--output_dir={a_file}/sub: cannot write there: cannot create the directory: Not a directory"
    )
    assert not (tmp_path / "out").exists()
    assert _refused(capsys, "--annotations=/proc/self/mem", images, "--split=val", out) == (
        "--annotations=/proc/self/mem: cannot read: Input/output error"
    )


def test_runner_names_as_beam_takes_them_and_file_urls(capsys, tmp_path):
    flags = [f"--annotations=file://{FIXTURE_ANNOTATIONS}", f"--images_dir=file://{FIXTURE_IMAGES}", "--split=val",
             f"--output_dir=file://{tmp_path}", "--max_error_fraction=0.5"]  # fmt: skip
    job, options = cli.parse_args(["facegrid-build", *flags, "--runner=fnapirunner"])
    # Beam's alias is its FnApiRunner, which runs in this process: the lease names it.
    assert beam_flags.runner_name(options) == "FnApiRunner" and job.output.pid is not None
    assert job.output.output_dir == str(tmp_path) and job.annotations == str(FIXTURE_ANNOTATIONS)
    status, out, _ = _main(capsys, *flags)
    assert status == 0 and f"wrote {tmp_path}/val.manifest.json" in out


def test_what_beam_reads_loosely_is_read_as_meant():
    def parsed(*flags):
        job, options = cli.parse_args(["facegrid-build", *REQUIRED, "--output_dir=out", *flags])
        return job, options

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TestOptions

    # Beam keeps "--dry_run=False" as the string "False", which its runners would take as true.
    for no in ("--dry_run=False", "--dry_run=0", "--dry_run=false"):
        assert parsed(no)[1].view_as(TestOptions).dry_run is False
    # Workers asked for are worker processes (an in_memory build has one worker, whatever it is told).
    direct = parsed("--direct_num_workers=2")[1].view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_processing", 2)
    # A local runner finishes inside run(): not waiting for it would only skip the summary.
    assert parsed("--no_wait_until_finish")[1].view_as(StandardOptions).no_wait_until_finish is False
    job, options = parsed("--runner=directrunner")
    assert beam_flags.runner_name(options) == "DirectRunner" and job.output.pid is not None  # its lease names this process


def _bad_annotations(tmp_path: pathlib.Path, data: bytes) -> pathlib.Path:
    path = tmp_path / "bad_gt.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data, message",
    [
        (b"0--Parade/caf\xe9.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \n", ":1: expected UTF-8 text, found "),
        ((FIXTURE_IMAGES / "0--Parade/0_Parade_rgb_1.jpg").read_bytes(), ":1: expected "),
        (b"0--Parade/a.jpg\n1\n1 2 3 99999999999 0 0 0 0 0 0 \n", ":3: expected h within int32"),
        (b"0--Parade/a.jpg\n\xc2\xb2\n", ":2: expected a face count"),
        (b"", ":1: expected at least one image, found an empty file"),
    ],
)
def test_a_malformed_annotation_file_fails_in_one_line_and_leaves_the_earlier_build(capsys, tmp_path, data, message):
    out = tmp_path / "out"
    assert _main(capsys, *REQUIRED, f"--output_dir={out}", "--num_shards=2")[0] == 0
    before = files(out)
    bad = _bad_annotations(tmp_path, data)
    status, _, err = _main(capsys, f"--annotations={bad}", f"--images_dir={FIXTURE_IMAGES}", "--split=val", f"--output_dir={out}")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"facegrid-build: {bad}{message}"), lines[0]
    assert files(out) == before  # an empty file, above all, never replaces a good build with nothing


def test_verbose_shows_the_traceback_of_a_failed_build(capsys, tmp_path):
    bad = _bad_annotations(tmp_path, b"")
    argv = [f"--annotations={bad}", f"--images_dir={FIXTURE_IMAGES}", "--split=val", f"--output_dir={tmp_path / 'out'}"]
    for verbose in ("--verbose", "--verbose=1", "-verbose", "--verbose=true"):
        status, _, err = _main(capsys, *argv, verbose)
        assert status == 1 and "Traceback (most recent call last)" in err, verbose
        assert err.strip().splitlines()[-1].startswith(f"facegrid-build: {bad}:1: expected at least one image")
    status, _, err = _main(capsys, *argv, "--noverbose")
    assert status == 1 and "Traceback" not in err


def test_help_lists_facegrid_flags_and_helpfull_beams_too(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--max_error_fraction: Fail the build" in text and "--helpfull lists them all" in text
    assert "--s3_disable_ssl" not in text
    assert cli.main(["--helpfull"]) == 0
    text = capsys.readouterr().out
    assert "--s3_disable_ssl" in text and "--direct_running_mode" in text and "--annotations" in text


def test_summary_names_the_build_and_its_errors_file(capsys, tmp_path):
    status, out, _ = _main(capsys, *REQUIRED, f"--output_dir={tmp_path}", "--num_shards=2")
    manifest = json.loads((tmp_path / "val.manifest.json").read_text())
    assert status == 0
    assert f"wrote {tmp_path}/val.manifest.json (build {manifest['build']})" in out
    assert f"unusable images: {tmp_path}/{manifest['errors_file']}" in out


def test_the_summary_is_of_the_build_that_ran_even_when_a_later_one_committed_over_it(capsys, tmp_path, monkeypatch):
    # Two builds of one split may run at once and the later commit wins. Reading the manifest
    # alone, the summary showed that later build's counts and id as what this command built.
    parsed, ran, later = [], [], {}
    parse_args, run_job = cli.parse_args, cli.run_job

    def parsing(argv):
        parsed.append(parse_args(argv))
        return parsed[-1]

    def run_then_another_build_commits(build, options):
        result = run_job(build, options)
        if not ran:
            ran.append(build.output.build_id)
            later.update(builds.build(tmp_path, "--num_shards=1"))
        return result

    monkeypatch.setattr(cli, "parse_args", parsing)
    monkeypatch.setattr(cli, "run_job", run_then_another_build_commits)
    status, out, _ = _main(capsys, *REQUIRED, f"--output_dir={tmp_path}", "--num_shards=2")
    (job, _options), ours = parsed[0], ran[0]
    assert status == 0 and job.output.build_id == ours and later["build"] != ours
    assert out.strip() == (
        f"val: build {ours} committed, then build {later['build']} committed over it: {tmp_path}/val.manifest.json names that one"
    )
