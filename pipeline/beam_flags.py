"""Beam's flags on facegrid-build's command line: every flag that is not facegrid's.

pipeline.cli reads facegrid's own flags and hands the rest here. This module owns what becomes
of them: refusing a flag neither knows (Beam alone would drop it with a warning and build with
the defaults), the runner's name as Beam resolves its aliases, the defaults of a build without
--runner (the FnApiRunner, in_memory, one worker, unless workers are asked for), refusing what
a local runner cannot do (--dry_run, --template_location), and the FnApiRunner built with every
option for its worker processes. Mistakes raise UsageError, which the console script reports
in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import os

from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipeline.build_report import last_line

LOCAL_RUNNER = "FnApiRunner"
# Runners whose workers live and die with this process: their builds' leases name it.
IN_PROCESS_RUNNERS = ("FnApiRunner", "DirectRunner", "PrismRunner")


class UsageError(ValueError):
    """Bad command line: exit status 2."""


def parser() -> argparse.ArgumentParser:
    """Every flag Beam's PipelineOptions know, parsed as Beam parses them."""
    parser = beam_options._BeamArgumentParser(allow_abbrev=False, exit_on_error=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():  # the classes Beam itself consults
        if str(cls) not in seen:
            seen.add(str(cls))
            cls._add_argparse_args(parser)
    return parser


def check_flags(beam_args: list[str], facegrid_flags: list[str]) -> None:
    """Refuses what neither facegrid (`facegrid_flags`: its flag names) nor Beam knows among
    `beam_args`, naming the nearest real flag. Raises UsageError."""
    beam = parser()
    try:
        _, unknown = beam.parse_known_args(beam_args)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    for arg in unknown:
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r}: every flag is --name=value")
        name = arg.lstrip("-").split("=", 1)[0]
        known = [*facegrid_flags, *(o.lstrip("-") for o in beam._option_string_actions if o.startswith("--"))]
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean --{near[0]}?)" if near else ""
        raise UsageError(f"unknown flag --{name}{hint}")


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """The PipelineOptions of `beam_args` (flags check_flags let through), as the build runs
    with them: the runner by its own name, the local defaults, --dry_run read as meant, a local
    runner waiting for its build. Raises UsageError."""
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
    if in_process(options):
        for given, what in ((test_options.dry_run, "--dry_run"), (options.view_as(GoogleCloudOptions).template_location, "--template_location")):
            if given:
                raise UsageError(f"{what} translates a job for --runner=DataflowRunner; the local runner {runner_name(options)} would build and commit the split")
        # The local runners finish their work inside run(): there is nothing to leave running.
        standard.no_wait_until_finish = False
    return options


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
            raise UsageError(f"--runner={name}: cannot be used here: {last_line(e)}") from None
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


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def in_process(options: PipelineOptions) -> bool:
    """Whether the build's workers run inside this process's lifetime (its lease names it)."""
    return runner_name(options) in IN_PROCESS_RUNNERS


def local_runner(options: PipelineOptions):
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


def writes(options: PipelineOptions) -> bool:
    """False when the run only translates the job: a dry run, or a classic template."""
    return not (options.view_as(TestOptions).dry_run or options.view_as(GoogleCloudOptions).template_location)


def built_here(options: PipelineOptions) -> bool:
    """False when the run only translated or submitted the job: a dry run, a template, no waiting."""
    return writes(options) and not options.view_as(StandardOptions).no_wait_until_finish
