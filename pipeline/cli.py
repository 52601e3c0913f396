"""`python -m pipeline` / `facegrid-build`: build one split's shards with Apache Beam.

    python -m pipeline --annotations=wider_face_val_bbx_gt.txt --images_dir=WIDER_val/images \\
        --output_dir=shards --split=val [--num_shards=8] [--image_format=jpeg|raw] ...

facegrid's flags are read here; every other flag goes to Beam (`--runner`, `--project`,
`--temp_location`, `--s3_endpoint_url`, ...). Without `--runner` the build runs on this
machine with Beam's FnApiRunner (the batch engine behind DirectRunner; the DirectRunner would
first try to download its Prism runner) in in_memory mode: one worker, in this process, whose
shard writer prepares --image_threads images at once. Pillow releases the GIL while it decodes
and resizes, so those threads keep the cores busy, and no worker process pays for importing
Beam (about 1.5 s of CPU and 180 MB each). With many cores, where the GIL-bound part of each
image starts to limit one process, choose --direct_running_mode=multi_processing: one worker
process per core unless --direct_num_workers says otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import traceback

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipeline import beam_flags, build_report, commit, job, leases, preflight, transforms, worker_setup
from pipeline.beam_flags import UsageError
from reader.core import layout, storage
from reader.core.boxes import RESIZE_MODES
from reader.core.config import IMAGE_FORMATS, BuildConfig

PROGRAM = "facegrid-build"


def define_flags(fv: flags.FlagValues) -> None:
    """facegrid's build flags (the flex template's metadata.json mirrors these)."""
    flags.DEFINE_string(
        "annotations", None, "WIDER annotation file (*_bbx_gt.txt, or the test file list). Required.", flag_values=fv
    )
    flags.DEFINE_string("images_dir", None, "Directory the annotation paths are relative to. Required.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for shards, manifest and errors file. Required.", flag_values=fv)
    flags.DEFINE_enum(
        "split", None, list(layout.SPLITS), "Split name; `test` reads the file-list format. Required.", flag_values=fv
    )
    flags.DEFINE_integer("num_shards", 8, "Number of TFRecord shards.", lower_bound=1, flag_values=fv)
    # The build config's settings: defaults and allowed values are BuildConfig's (reader.core.config).
    default = BuildConfig()
    flags.DEFINE_enum(
        "image_format", default.image_format, list(IMAGE_FORMATS), "How the stored image is encoded.", flag_values=fv
    )
    flags.DEFINE_integer(
        "jpeg_quality", default.jpeg_quality, "JPEG quality of the stored image.", lower_bound=1, upper_bound=100, flag_values=fv
    )
    flags.DEFINE_integer(
        "input_size", default.input_size, "Side of the stored square image, pixels.", lower_bound=16, flag_values=fv
    )
    flags.DEFINE_integer("grid_size", default.grid_size, "Side of the target grid, cells.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("resize", default.resize, list(RESIZE_MODES), "Fill the square, or keep the aspect ratio.", flag_values=fv)
    flags.DEFINE_float(
        "min_face_px",
        default.min_face_px,
        "Faces smaller than this on either side once resized are ignored, not targets.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_float(
        "max_error_fraction",
        0.01,
        "Fail the build when more than this share of images is unusable.",
        lower_bound=0,
        upper_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "image_threads",
        transforms.IMAGE_THREADS,
        "Images each shard writer reads and prepares at once, on threads (speed only: never changes a byte).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "reuse",
        True,
        "Reuse the images an earlier build prepared from the same source bytes (--noreuse: prepare every image).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "reuse_from",
        None,
        "The earlier build's directory (local, gs://, s3://) to reuse images from; default --output_dir.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("verbose", False, "On failure, also print the Python traceback.", flag_values=fv)
    for name in ("min_face_px", "max_error_fraction"):
        # absl's bounds let NaN through (every comparison with NaN is false), and infinity past a lower bound.
        flags.register_validator(
            name, lambda value: value is None or math.isfinite(value), f"--{name} must be a finite number", flag_values=fv
        )


REQUIRED = ("annotations", "images_dir", "output_dir", "split")  # the flags without a default that must be given


def usage() -> str:
    fv = flags.FlagValues()
    define_flags(fv)
    return (
        f"{__doc__.strip()}\n\nfacegrid flags:\n{fv.get_help()}\n\n"
        "Every other flag is Beam's (--runner, --direct_num_workers, --project, --temp_location,\n"
        "--s3_endpoint_url, ...): --helpfull lists them all."
    )


def parse_args(argv: list[str]) -> tuple[job.Job, PipelineOptions]:
    """Splits argv (argv[0] is the program) into the Job and Beam's PipelineOptions
    (pipeline.beam_flags). Raises UsageError for anything wrong with the flags themselves."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        beam_args = fv(argv, known_only=True)[1:]
    except flags.Error as e:
        raise UsageError(str(e)) from None
    beam_flags.check_flags(beam_args, list(fv))
    missing = [name for name in REQUIRED if fv[name].value is None]
    if missing:
        raise UsageError("missing required flags: " + ", ".join(f"--{m}" for m in missing))
    options = beam_flags.pipeline_options(beam_args, fv.num_shards)
    in_process = beam_flags.in_process(options)
    paths = {name: _absolute(fv[name].value) for name in ("annotations", "images_dir", "output_dir")}
    if fv.reuse_from is not None and not fv.reuse:
        raise UsageError("--reuse_from names a build to reuse images from; --noreuse reuses none: give one of them")
    reuse_from = _absolute(fv.reuse_from or paths["output_dir"]) if fv.reuse else None
    try:
        config = BuildConfig(**{field.name: fv[field.name].value for field in dataclasses.fields(BuildConfig)})
        output = commit.OutputSpec(
            paths["output_dir"],
            fv.split,
            fv.num_shards,
            # A classic template is one graph run many times: each run draws its own id.
            build_id=None if options.view_as(GoogleCloudOptions).template_location else commit.new_build_id(),
            host=leases.host_id() if in_process else None,
            pid=os.getpid() if in_process else None,
        )
        build = job.Job(
            paths["annotations"],
            paths["images_dir"],
            output,
            config,
            fv.max_error_fraction,
            fv.image_threads,
            reuse_from,
            worker_setup.settings_of(options),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return build, options


def _absolute(path: str) -> str:
    """A local path made absolute (`file://` dropped): the workers of a Dask cluster run in
    directories of their own, and a relative path would name another file there (or none)."""
    path = path.removeprefix("file://")
    return os.path.abspath(path) if path and storage.is_local(path) else path


def check_inputs(build: job.Job, options: PipelineOptions) -> None:
    """Before Beam starts: the annotation file and images directory exist, and the output
    directory takes a file. Raises UsageError with one line naming the flag."""
    FileSystems.set_options(options)  # what beam.Pipeline would do: gs:// and s3:// need them
    worker_setup.apply(worker_setup.settings_of(options))  # and the storage layer
    path = build.annotations
    try:
        if storage.is_local(path):
            local = path.removeprefix("file://")
            if not os.path.isfile(local):
                raise UsageError(f"--annotations={path}: {'a directory, not a file' if os.path.isdir(local) else 'no such file'}")
            with open(local, "rb") as f:  # PermissionError is an OSError: refused below
                f.read(1)
        elif not storage.exists(path):
            raise UsageError(f"--annotations={path}: no such file")
    except UsageError:
        raise
    except Exception as e:  # permissions, credentials, a bucket that does not exist
        raise UsageError(f"--annotations={path}: cannot read: {storage.describe(e)}") from None
    images_dir = build.images_dir
    if storage.is_local(images_dir):
        if not os.path.isdir(images_dir):
            raise UsageError(f"--images_dir={images_dir}: no such directory")
        try:
            with os.scandir(images_dir) as entries:
                next(entries, None)
        except OSError as e:
            raise UsageError(f"--images_dir={images_dir}: cannot read: {storage.describe(e)}") from None
    output_dir = build.output.output_dir
    if storage.is_local(output_dir) and os.path.isfile(output_dir.removeprefix("file://")):
        raise UsageError(f"--output_dir={output_dir}: a file, not a directory")
    # Named as a file of a build that never started: a crash right here leaves a file that the
    # next commit removes. Written in place: another build committing meanwhile may remove it
    # (it has no lease), which a probe survives, and a temporary file renamed to it would not.
    probe_build, split = commit.new_build_id(), build.output.split
    probe = storage.join(output_dir, layout.probe_name(split, probe_build))
    try:
        storage.ensure_dir(output_dir)
        storage.write_bytes(probe, b"", in_place=True)
        storage.delete([probe])
    except storage.StorageError as e:
        raise UsageError(f"--output_dir={output_dir}: cannot write there: {e.problem.removeprefix('cannot write: ')}") from None


def prepare(argv: list[str]) -> tuple[job.Job, PipelineOptions]:
    """The build that `argv` (the flags, without the program name) asks for, with its one
    build id, and its PipelineOptions; its inputs checked unless the run only translates the
    job. What run() runs, and main() reports on. Raises UsageError."""
    build, options = parse_args([PROGRAM, *argv])
    preflight.check(build, options)
    if beam_flags.writes(options):
        check_inputs(build, options)
    return build, options


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Builds one split from `argv` (the flags, without the program name; default
    sys.argv[1:]); returns its PipelineResult, finished unless --no_wait_until_finish. Raises
    UsageError on bad flags or inputs."""
    return run_job(*prepare(sys.argv[1:] if argv is None else argv))


def run_job(build: job.Job, options: PipelineOptions) -> beam.runners.runner.PipelineResult:
    """Runs the parsed build. When it fails here (not submitted elsewhere), the files it wrote
    are removed (but its errors file, for the user to read) and the earlier build stays."""
    pipeline = beam.Pipeline(runner=beam_flags.local_runner(options), options=options)
    job.build(pipeline, build)
    wait = not options.view_as(StandardOptions).no_wait_until_finish
    result = None
    try:
        with beam_flags.starting_local_cluster(options):
            result = pipeline.run()
        if wait:
            result.wait_until_finish()
    except BaseException:
        _abandon(build)
        raise
    finally:
        if wait:
            beam_flags.release(result)
    return result


def _abandon(build: job.Job) -> None:
    """Removes the files the failed `build` wrote, but its errors file. A store failing
    meanwhile is only logged: the next build that commits removes what is left."""
    output = build.output
    if output.build_id is None:
        return
    try:
        commit.abandon(
            output.output_dir, output.split, output.build_id, keep=(layout.errors_name(output.split, output.build_id),)
        )
    except storage.StorageError as e:
        logging.warning("could not remove the files of the failed build %s: %s", output.build_id, e)


def _verbose(argv: list[str]) -> bool:
    """--verbose as absl reads it (--verbose, --verbose=1, -verbose, --noverbose...), even when
    the rest of the command line is wrong."""
    fv = flags.FlagValues()
    flags.DEFINE_boolean("verbose", False, "", flag_values=fv)
    try:
        fv([PROGRAM, *argv], known_only=True)
    except flags.Error:
        return False
    return fv.verbose


def main(argv: list[str] | None = None) -> int:
    """The console script: `argv` the flags (default sys.argv[1:]). Returns 0 when the build
    committed (or was translated or submitted), 1 when it failed (the earlier build stays), 2
    for a mistake on the command line, 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    verbose = _verbose(argv)
    build_report.setup_logging(verbose)
    if verbose:  # the local multi-process runner's workers show a failing step's traceback too
        os.environ.pop(worker_setup.QUIET_ENV, None)
    else:
        os.environ[worker_setup.QUIET_ENV] = "1"
    if {"-h", "--help", "-help"} & set(argv):
        print(usage())
        return 0
    if "--helpfull" in argv:
        beam_flags.load_dask(required=False)
        print(f"{usage()}\n\nBeam's flags:\n{beam_flags.parser().format_help()}")
        return 0
    try:
        build, options = prepare(argv)
    except UsageError as e:
        print(f"{PROGRAM}: {e}; --help lists every flag", file=sys.stderr)
        return 2
    try:
        run_job(build, options)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; the split holds the earlier build or this one, whole", file=sys.stderr)
        return 130
    except Exception as e:
        message = build_report.fatal_message(e)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        text = message or f"the build failed: {build_report.last_line(e)}{'' if verbose else ' (--verbose shows the traceback)'}"
        print(f"{PROGRAM}: {text}", file=sys.stderr)
        return 1
    if not beam_flags.built_here(options):
        runner = beam_flags.runner_name(options)
        if options.view_as(TestOptions).dry_run:
            print(f"{build.output.split}: translated by {runner} (dry run); nothing was built or written")
        elif options.view_as(GoogleCloudOptions).template_location:
            print(f"{build.output.split}: written as a template by {runner}; nothing was built")
        else:
            print(f"{build.output.split}: submitted to {runner}; the job writes {build.output.output_dir}")
        return 0
    print(build_report.summary(build.output, build.output.build_id))
    return 0
