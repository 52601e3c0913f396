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

import argparse
import difflib
import json
import logging
import math
import os
import re
import sys
import traceback

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipeline import annotations, commit, images, job, records, storage, transforms
from reader.core import layout

LOCAL_RUNNER = "FnApiRunner"
# Runners whose workers live and die with this process: their builds' leases name it.
_IN_PROCESS_RUNNERS = ("FnApiRunner", "DirectRunner", "PrismRunner")
PROGRAM = "facegrid-build"


def define_flags(fv: flags.FlagValues) -> None:
    """facegrid's build flags (the flex template's metadata.json mirrors these)."""
    flags.DEFINE_string("annotations", None, "WIDER annotation file (*_bbx_gt.txt, or the test file list). Required.", flag_values=fv)
    flags.DEFINE_string("images_dir", None, "Directory the annotation paths are relative to. Required.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for shards, manifest and errors file. Required.", flag_values=fv)
    flags.DEFINE_enum("split", None, list(layout.SPLITS), "Split name; `test` reads the file-list format. Required.", flag_values=fv)
    flags.DEFINE_integer("num_shards", 8, "Number of TFRecord shards.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("image_format", "jpeg", ["jpeg", "raw"], "How the stored image is encoded.", flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the stored image.", lower_bound=1, upper_bound=100, flag_values=fv)
    flags.DEFINE_integer("input_size", 224, "Side of the stored square image, pixels.", lower_bound=16, flag_values=fv)
    flags.DEFINE_integer("grid_size", 7, "Side of the target grid, cells.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("resize", "stretch", ["stretch", "letterbox"], "Fill the square, or keep the aspect ratio.", flag_values=fv)
    flags.DEFINE_float("min_face_px", 0.0, "Faces smaller than this on either side once resized are ignored, not targets.", lower_bound=0, flag_values=fv)
    flags.DEFINE_float(
        "max_error_fraction", 0.01, "Fail the build when more than this share of images is unusable.", lower_bound=0, upper_bound=1, flag_values=fv
    )
    flags.DEFINE_integer(
        "image_threads", transforms.IMAGE_THREADS, "Images each shard writer reads and prepares at once, on threads (speed only: never changes a byte).",
        lower_bound=1, flag_values=fv,
    )
    flags.DEFINE_boolean("verbose", False, "On failure, also print the Python traceback.", flag_values=fv)
    for name in ("min_face_px", "max_error_fraction"):
        # absl's bounds let NaN through (every comparison with NaN is false), and infinity past a lower bound.
        flags.register_validator(name, lambda value: value is None or math.isfinite(value), f"--{name} must be a finite number", flag_values=fv)


class UsageError(ValueError):
    """Bad command line: exit status 2."""


def usage() -> str:
    fv = flags.FlagValues()
    define_flags(fv)
    return (
        f"{__doc__.strip()}\n\nfacegrid flags:\n{fv.get_help()}\n\n"
        "Every other flag is Beam's (--runner, --direct_num_workers, --project, --temp_location,\n"
        "--s3_endpoint_url, ...): --helpfull lists them all."
    )


def _beam_parser() -> argparse.ArgumentParser:
    """Every flag Beam's PipelineOptions know, parsed as Beam parses them."""
    parser = beam_options._BeamArgumentParser(allow_abbrev=False, exit_on_error=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():  # the classes Beam itself consults
        if str(cls) not in seen:
            seen.add(str(cls))
            cls._add_argparse_args(parser)
    return parser


def _check_beam_flags(beam_args: list[str], facegrid_flags: list[str]) -> None:
    """Refuses what neither facegrid nor Beam knows (Beam would drop it with a warning and run
    with defaults), naming the nearest real flag."""
    parser = _beam_parser()
    try:
        _, unknown = parser.parse_known_args(beam_args)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    for arg in unknown:
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r}: every flag is --name=value")
        name = arg.lstrip("-").split("=", 1)[0]
        known = [*facegrid_flags, *(o.lstrip("-") for o in parser._option_string_actions if o.startswith("--"))]
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean --{near[0]}?)" if near else ""
        raise UsageError(f"unknown flag --{name}{hint}")


def parse_args(argv: list[str]) -> tuple[job.Job, PipelineOptions]:
    """Splits argv (argv[0] is the program) into the Job and Beam's PipelineOptions. Raises
    UsageError for anything wrong with the flags themselves."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        beam_args = fv(argv, known_only=True)[1:]
    except flags.Error as e:
        raise UsageError(str(e)) from None
    _check_beam_flags(beam_args, list(fv))
    missing = [name for name in ("annotations", "images_dir", "output_dir", "split") if fv[name].value is None]
    if missing:
        raise UsageError("missing required flags: " + ", ".join(f"--{m}" for m in missing))

    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is not None:
        standard.runner = _known_runner(standard.runner)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        if "--direct_running_mode" not in given:
            # Asking for workers means worker processes (one in_memory worker is all it runs).
            asked = "--direct_num_workers" in given and (direct.direct_num_workers or 0) != 1
            direct.direct_running_mode = "multi_processing" if asked else "in_memory"
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else os.cpu_count() or 1
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise UsageError(f"--direct_num_workers={workers}: expected 0 (one per core) or more")
    # DoFns reference only importable modules; nothing of __main__ needs shipping.
    options.view_as(SetupOptions).save_main_session = False

    test_options = options.view_as(TestOptions)
    test_options.dry_run = _flag_is_set(test_options.dry_run)
    in_process = _runner_name(options) in _IN_PROCESS_RUNNERS
    if in_process:
        for given, what in ((test_options.dry_run, "--dry_run"), (options.view_as(GoogleCloudOptions).template_location, "--template_location")):
            if given:
                raise UsageError(f"{what} translates a job for --runner=DataflowRunner; the local runner {_runner_name(options)} would build and commit the split")
        # The local runners finish their work inside run(): there is nothing to leave running.
        standard.no_wait_until_finish = False
    paths = {name: fv[name].value.removeprefix("file://") for name in ("annotations", "images_dir", "output_dir")}
    try:
        config = records.BuildConfig(
            image=images.ImageConfig(fv.input_size, fv.resize, fv.image_format, fv.jpeg_quality),
            grid_size=fv.grid_size,
            min_face_px=fv.min_face_px,
        )
        output = commit.OutputSpec(
            paths["output_dir"],
            fv.split,
            fv.num_shards,
            # A classic template is one graph run many times: each run draws its own id.
            build_id=None if options.view_as(GoogleCloudOptions).template_location else commit.new_build_id(),
            host=commit.host_id() if in_process else None,
            pid=os.getpid() if in_process else None,
        )
        build = job.Job(paths["annotations"], paths["images_dir"], output, config, fv.max_error_fraction, fv.image_threads)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return build, options


def _known_runner(name):
    """The runner's own name for what --runner says (Beam also takes `fnapirunner`, `direct`...),
    or UsageError naming the nearest real one."""
    if not isinstance(name, str):
        return name
    from apache_beam.runners import runner as runners

    valid = sorted({path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS})
    try:
        found = type(runners.create_runner(name)).__name__
    except Exception as e:  # ValueError for an unknown name; ImportError for a runner not installed
        if name in valid:
            raise UsageError(f"--runner={name}: cannot be used here: {_last_line(e)}") from None
        near = difflib.get_close_matches(name, valid, n=1)
        raise UsageError(f"--runner={name}: not a runner Beam knows{f' (did you mean {near[0]}?)' if near else ''}") from None
    if found in _UNSUPPORTED_RUNNERS:
        raise UsageError(f"--runner={name}: {_UNSUPPORTED_RUNNERS[found]}")
    # Beam hands "DirectRunner" (and `direct`, `directrunner`...) to its SwitchingDirectRunner.
    return "DirectRunner" if found == "SwitchingDirectRunner" else found


_UNSUPPORTED_RUNNERS = {
    # It gives the commit step empty side inputs: every build would fail its count check.
    "BundleBasedDirectRunner": "not supported (its side inputs reach the commit empty); the default FnApiRunner runs here",
}


def _flag_is_set(value) -> bool:
    """Beam keeps `--dry_run=False` as the string 'False': read it as a person means it."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def check_inputs(build: job.Job, options: PipelineOptions) -> None:
    """Before Beam starts: the annotation file and images directory exist, and the output
    directory takes a file. Raises UsageError with one line naming the flag."""
    FileSystems.set_options(options)  # what beam.Pipeline would do: gs:// and s3:// need them
    path = build.annotations
    try:
        if storage.is_local(path):
            local = path.removeprefix("file://")
            if not os.path.isfile(local):
                raise UsageError(f"--annotations={path}: {'a directory, not a file' if os.path.isdir(local) else 'no such file'}")
            with open(local, "rb") as f:  # PermissionError is an OSError: refused below
                f.read(1)
        elif not FileSystems.exists(path):
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
    # next commit removes.
    probe_build, split = commit.new_build_id(), build.output.split
    probe = storage.join(output_dir, layout.probe_name(split, probe_build))
    try:
        storage.ensure_dir(output_dir)
        storage.write_bytes(probe, b"", temp=storage.join(output_dir, layout.temp_name(split, probe_build, "probe", "0")))
        storage.delete([probe])
    except storage.StorageError as e:
        raise UsageError(f"--output_dir={output_dir}: cannot write there: {e.problem.removeprefix('cannot write: ')}") from None


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Builds one split; returns its PipelineResult, finished unless --no_wait_until_finish.
    Raises UsageError on bad flags or inputs."""
    build, options = parse_args(sys.argv if argv is None else ["facegrid-build", *argv])
    if _writes(options):
        check_inputs(build, options)
    return run_job(build, options)


def run_job(build: job.Job, options: PipelineOptions) -> beam.runners.runner.PipelineResult:
    """Runs the parsed build. When it fails here (not submitted elsewhere), the files it wrote
    are removed (but its errors file, for the user to read) and the earlier build stays."""
    pipeline = beam.Pipeline(runner=_local_runner(options), options=options)
    job.build(pipeline, build)
    wait = not options.view_as(StandardOptions).no_wait_until_finish
    try:
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
    except BaseException:
        _abandon(build)
        raise
    return result


def _abandon(build: job.Job) -> None:
    output = build.output
    if output.build_id is None:
        return
    try:
        commit.abandon(output.output_dir, output.split, output.build_id, keep=(layout.errors_name(output.split, output.build_id),))
    except storage.StorageError as e:
        logging.warning("could not remove the files of the failed build %s: %s", output.build_id, e)


def _local_runner(options: PipelineOptions):
    """The FnApiRunner, given every pipeline option for its worker processes; None for any other
    runner. Built from its name alone it hands its multi_processing workers no options, so they
    would reach s3:// without --s3_endpoint_url and the keys. Beam's DirectRunner does the same."""
    if options.view_as(StandardOptions).runner != LOCAL_RUNNER:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    )


def _writes(options: PipelineOptions) -> bool:
    """False when run() only translates the job: a dry run, or a classic template."""
    return not (options.view_as(TestOptions).dry_run or options.view_as(GoogleCloudOptions).template_location)


def _built_here(options: PipelineOptions) -> bool:
    """False when run() only translated or submitted the job: a dry run, a template, no waiting."""
    return _writes(options) and not options.view_as(StandardOptions).no_wait_until_finish


class _WorkerLogs(logging.Filter):
    """Beam's local runner relays each worker log line as a protobuf dump. Keep warnings and
    facegrid's own progress lines, shown as their message alone; a failing step's traceback
    only when `verbose` (the build's one-line error says what failed)."""

    # Every local worker warns that it has no semi_persistent_directory: nothing to act on.
    _NOISE = ("No semi_persistent_directory found",)
    _FIELDS = re.compile(r'message: "(?P<message>.*?)" (?=instruction_id|transform_id|log_location).*?log_location: "(?P<where>[^"]*)"')

    def __init__(self, verbose: bool = False):
        super().__init__()
        self._verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FIELDS.search(record.getMessage())
        if match is None:
            return record.levelno >= logging.WARNING
        if record.levelno < logging.WARNING and not any(ours in match["where"] for ours in ("/pipeline/", "/reader/core/progress.py")):
            return False
        if not self._verbose and record.levelno >= logging.ERROR and "apache_beam/runners/" in match["where"]:
            return False
        if match["message"].startswith(self._NOISE):
            return False
        record.msg, record.args = match["message"], ()
        return True


_FATAL = (annotations.AnnotationError, commit.BuildError, storage.StorageError)
_FATAL_MARKERS = tuple(f"{cls.__module__}.{cls.__qualname__}: " for cls in _FATAL)


def _fatal_message(error: BaseException) -> str | None:
    """The message of an AnnotationError, BuildError or StorageError, raised as is (in-process
    runners) or found inside the runner's wrapping (worker processes send their traceback as
    text). None for anything else."""
    if isinstance(error, _FATAL):
        return str(error).split(" [while running")[0]
    for line in reversed(str(error).splitlines()):
        for marker in _FATAL_MARKERS:
            if marker in line:
                return line.split(marker, 1)[1].split(" [while running")[0]
    cause = error.__cause__ or error.__context__
    return _fatal_message(cause) if cause is not None and cause is not error else None


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def _summary(output: commit.OutputSpec) -> str:
    manifest = json.loads(storage.read_bytes(output.manifest_path))
    c = manifest["counts"]
    size = sum(s["bytes"] for s in manifest["shards"]) / 1e6
    summary = (
        f"{output.split}: {c['images_annotated']} images -> {c['records']} records in {len(manifest['shards'])} shards "
        f"({size:.1f} MB), {c['errors']} unusable; faces: {c['faces_annotated']} annotated, {c['faces_stored']} stored, "
        f"{c['targets']} targets, {c['dropped']} dropped by cell collisions, {c['ignored']} ignored, "
        f"{c['degenerate']} degenerate\nwrote {output.manifest_path} (build {manifest['build']})"
    )
    if c["errors"]:
        summary += f"\nunusable images: {output.path(manifest['errors_file'])}"
    return summary


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
    """The console script: 0 when the build committed, 1 when it failed (the earlier build
    stays), 2 for a mistake on the command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Beam's own INFO lines (servers starting, type hints) bury the progress lines of the build.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    relay.setLevel(logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    verbose = _verbose(argv)
    relay.addFilter(_WorkerLogs(verbose))
    if not verbose:
        # Beam logs a failing step's traceback before it raises; the one line below says it.
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    if {"-h", "--help", "-help"} & set(argv):
        print(usage())
        return 0
    if "--helpfull" in argv:
        print(f"{usage()}\n\nBeam's flags:\n{_beam_parser().format_help()}")
        return 0
    try:
        build, options = parse_args([PROGRAM, *argv])
        if _writes(options):
            check_inputs(build, options)
    except UsageError as e:
        print(f"{PROGRAM}: {e}; --help lists every flag", file=sys.stderr)
        return 2
    try:
        run_job(build, options)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; the split holds the earlier build or this one, whole", file=sys.stderr)
        return 130
    except Exception as e:
        message = _fatal_message(e)
        if verbose:
            traceback.print_exc(file=sys.stderr)
        text = message or f"the build failed: {_last_line(e)}{'' if verbose else ' (--verbose shows the traceback)'}"
        print(f"{PROGRAM}: {text}", file=sys.stderr)
        return 1
    if not _built_here(options):
        runner = _runner_name(options)
        if options.view_as(TestOptions).dry_run:
            print(f"{build.output.split}: translated by {runner} (dry run); nothing was built or written")
        elif options.view_as(GoogleCloudOptions).template_location:
            print(f"{build.output.split}: written as a template by {runner}; nothing was built")
        else:
            print(f"{build.output.split}: submitted to {runner}; the job writes {build.output.output_dir}")
        return 0
    print(_summary(build.output))
    return 0
