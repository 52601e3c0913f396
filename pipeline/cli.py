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

import json
import logging
import os
import re
import sys
import uuid

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipeline import annotations, images, job, records, transforms
from reader import layout

LOCAL_RUNNER = "FnApiRunner"


def define_flags(fv: flags.FlagValues) -> None:
    """facegrid's build flags (the flex template's metadata.json mirrors these)."""
    flags.DEFINE_string("annotations", None, "WIDER annotation file (*_bbx_gt.txt, or the test file list).", flag_values=fv)
    flags.DEFINE_string("images_dir", None, "Directory the annotation paths are relative to.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for shards, manifest and errors.jsonl.", flag_values=fv)
    flags.DEFINE_enum("split", None, list(layout.SPLITS), "Split name; `test` reads the file-list format.", flag_values=fv)
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


class UsageError(ValueError):
    """Bad command line: exit status 2."""


def usage() -> str:
    fv = flags.FlagValues()
    define_flags(fv)
    return (
        f"{__doc__.strip()}\n\nfacegrid flags:\n{fv.get_help()}\n\n"
        "Beam's own flags (--runner, --direct_num_workers, --project, --temp_location, ...) are listed by\n"
        "  python -c 'from apache_beam.options.pipeline_options import PipelineOptions; PipelineOptions([\"--help\"])'"
    )


def parse_args(argv: list[str]) -> tuple[job.Job, PipelineOptions]:
    """Splits argv (argv[0] is the program) into the Job and Beam's PipelineOptions."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        beam_args = fv(argv, known_only=True)[1:]
    except flags.Error as e:
        raise UsageError(str(e)) from None
    missing = [name for name in ("annotations", "images_dir", "output_dir", "split") if fv[name].value is None]
    if missing:
        raise UsageError("missing required flags: " + ", ".join(f"--{m}" for m in missing))
    try:
        config = records.BuildConfig(
            image=images.ImageConfig(fv.input_size, fv.resize, fv.image_format, fv.jpeg_quality),
            grid_size=fv.grid_size,
            min_face_px=fv.min_face_px,
        )
        output = transforms.OutputSpec(fv.output_dir, fv.split, fv.num_shards, uuid.uuid4().hex[:12])
        build = job.Job(fv.annotations, fv.images_dir, output, config, fv.max_error_fraction, fv.image_threads)
    except ValueError as e:
        raise UsageError(str(e)) from None

    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = "in_memory"
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else os.cpu_count() or 1
    # DoFns reference only importable modules; nothing of __main__ needs shipping.
    options.view_as(SetupOptions).save_main_session = False
    return build, options


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Builds one split; returns its PipelineResult, finished unless --no_wait_until_finish.
    Raises UsageError on bad flags."""
    build, options = parse_args(sys.argv if argv is None else ["facegrid-build", *argv])
    pipeline = beam.Pipeline(runner=_local_runner(options), options=options)
    job.build(pipeline, build)
    result = pipeline.run()
    if not options.view_as(StandardOptions).no_wait_until_finish:
        result.wait_until_finish()
    return result


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


def _built_here(options: PipelineOptions) -> bool:
    """False when run() only translated or submitted the job: a dry run, a template, no waiting."""
    return not (
        options.view_as(TestOptions).dry_run
        or options.view_as(GoogleCloudOptions).template_location
        or options.view_as(StandardOptions).no_wait_until_finish
    )


class _WorkerLogs(logging.Filter):
    """Beam's local runner relays each worker log line as a protobuf dump. Keep warnings and
    facegrid's own progress lines, shown as their message alone."""

    # Every local worker warns that it has no semi_persistent_directory: nothing to act on.
    _NOISE = ("No semi_persistent_directory found",)
    _FIELDS = re.compile(r'message: "(?P<message>.*?)" (?=instruction_id|transform_id|log_location).*?log_location: "(?P<where>[^"]*)"')

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FIELDS.search(record.getMessage())
        if match is None:
            return record.levelno >= logging.WARNING
        if record.levelno < logging.WARNING and "/pipeline/" not in match["where"]:
            return False
        if match["message"].startswith(self._NOISE):
            return False
        record.msg, record.args = match["message"], ()
        return True


_FATAL = (annotations.AnnotationError, transforms.BuildError)
_FATAL_MARKERS = tuple(f"{cls.__module__}.{cls.__qualname__}: " for cls in _FATAL)


def _fatal_message(error: Exception) -> str | None:
    """The message of an AnnotationError or BuildError, raised as is (in-process runners) or
    found inside the runner's wrapping (worker processes send their traceback as text)."""
    if isinstance(error, _FATAL):
        return str(error).split(" [while running")[0]
    for line in reversed(str(error).splitlines()):
        for marker in _FATAL_MARKERS:
            if marker in line:
                return line.split(marker, 1)[1].split(" [while running")[0]
    return None


def _summary(output: transforms.OutputSpec) -> str:
    with FileSystems.open(output.path(layout.manifest_name(output.split))) as f:
        manifest = json.load(f)
    c = manifest["counts"]
    size = sum(s["bytes"] for s in manifest["shards"]) / 1e6
    return (
        f"{output.split}: {c['images_annotated']} images -> {c['records']} records in {len(manifest['shards'])} shards "
        f"({size:.1f} MB), {c['errors']} unusable; faces: {c['faces_annotated']} annotated, {c['faces_stored']} stored, "
        f"{c['targets']} targets, {c['dropped']} dropped by cell collisions, {c['ignored']} ignored, "
        f"{c['degenerate']} degenerate\nwrote {output.path(layout.manifest_name(output.split))}"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Beam's own INFO lines (servers starting, type hints) bury the progress lines of the build.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    relay.setLevel(logging.INFO)
    relay.addFilter(_WorkerLogs())
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(usage())
        return 0
    try:
        build, options = parse_args(["facegrid-build", *argv])
        run(argv)
    except UsageError as e:
        print(f"facegrid-build: {e}\nTry --help for every flag.", file=sys.stderr)
        return 2
    except Exception as e:
        message = _fatal_message(e)
        if message is None:
            raise
        print(f"facegrid-build: {message}", file=sys.stderr)
        return 1
    if not _built_here(options):
        runner = options.view_as(StandardOptions).runner
        print(f"{build.output.split}: handed to {runner} (dry run, template or no wait); it writes {build.output.output_dir}")
        return 0
    print(_summary(build.output))
    return 0
