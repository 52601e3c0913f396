"""Beam's flags on facegrid-build's command line: every flag that is not facegrid's.

pipeline.cli reads facegrid's own flags and hands the rest here. This module owns what becomes
of them: refusing a flag neither knows (Beam alone would drop it with a warning and build with
the defaults), the runner's name as Beam resolves its aliases, the defaults of a build without
--runner (the FnApiRunner, in_memory, one worker, unless workers are asked for), refusing what
a local runner or a Dask cluster cannot do (--dry_run, --template_location), Beam's DaskRunner
(which Beam does not list among its runners: its flags are known once the `dask` extra is
imported, which only a command line naming Dask pays for), and the FnApiRunner built with
every option for its worker processes. Mistakes raise UsageError, which the console script reports
in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
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
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Runners whose job lives only as long as this process waits for it (a Dask computation ends
# with the client that submitted it): the command line always waits, and translates nothing.
_BOUND_RUNNERS = (*IN_PROCESS_RUNNERS, "DaskRunner")


class UsageError(ValueError):
    """Bad command line: exit status 2."""


def load_dask(required: bool = True) -> bool:
    """Imports Beam's DaskRunner, which makes its flags (--dask_client_address, ...) known.
    Without the `dask` extra: UsageError when `required`, else False. Importing Dask sets its
    loggers to INFO (Dask's own config): the level the command set (build_report.setup_logging)
    is put back, and the workers of a local cluster, forked from this process, keep it."""
    level = logging.getLogger("distributed").level
    try:
        import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers DaskOptions)
    except ImportError as e:
        if required:
            raise UsageError(f"Beam's DaskRunner needs Dask: pip install 'facegrid[dask]' ({last_line(e)})") from None
        return False
    if level:
        logging.getLogger("distributed").setLevel(level)
    return True


def _names_dask(beam_args: list[str]) -> bool:
    return any("dask" in arg.lower() for arg in beam_args)


def parser() -> argparse.ArgumentParser:
    """Every flag Beam's PipelineOptions know, parsed as Beam parses them (Dask's once
    load_dask has run)."""
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
    if _names_dask(beam_args):
        load_dask()
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


def pipeline_options(beam_args: list[str], num_shards: int = 1) -> PipelineOptions:
    """The PipelineOptions of `beam_args` (flags check_flags let through), as the build runs
    with them: the runner by its own name, the local defaults, on Dask one partition per shard
    (of `num_shards`) unless --dask_npartitions or --dask_partition_size say otherwise, --dry_run
    read as meant, a local runner or a Dask client waiting for its build. Raises UsageError."""
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
    if runner_name(options) == "DaskRunner":
        _dask_defaults(options, num_shards)
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise UsageError(f"--direct_num_workers={workers}: expected 0 (one per core) or more")
    # DoFns reference only importable modules; nothing of __main__ needs shipping.
    options.view_as(SetupOptions).save_main_session = False

    test_options = options.view_as(TestOptions)
    test_options.dry_run = _flag_is_set(test_options.dry_run)
    if runner_name(options) in _BOUND_RUNNERS:
        kind = "the Dask cluster" if runner_name(options) == "DaskRunner" else "the local runner"
        for given, what in (
            (test_options.dry_run, "--dry_run"),
            (options.view_as(GoogleCloudOptions).template_location, "--template_location"),
        ):
            if given:
                raise UsageError(
                    f"{what} translates a job for --runner=DataflowRunner; {kind} {runner_name(options)} would build and commit the split"
                )
        # The local runners finish their work inside run(), and a Dask computation ends with
        # the client that submitted it: there is nothing to leave running.
        standard.no_wait_until_finish = False
    return options


def _dask_defaults(options: PipelineOptions, num_shards: int) -> None:
    """Beam's DaskRunner splits only a Create into partitions (128 elements each unless told):
    one partition per shard lets every shard's writer run on its own worker."""
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    if dask.npartitions is None and dask.partition_size is None:
        dask.npartitions = num_shards
    if dask.npartitions is not None and dask.npartitions < 1:
        raise UsageError(f"--dask_npartitions={dask.npartitions}: expected 1 or more")


def _known_runner(name):
    """The runner's own name for what --runner says (Beam also takes `fnapirunner`, `direct`...),
    or UsageError naming the nearest real one."""
    if not isinstance(name, str):
        return name
    from apache_beam.runners import runner as runners

    if name.lower().removesuffix("runner") == "dask" or name == DASK_RUNNER:
        load_dask()
        return DASK_RUNNER  # Beam does not resolve its own DaskRunner's short name

    valid = sorted({path.rsplit(".", 1)[-1] for path in (*StandardOptions.ALL_KNOWN_RUNNERS, DASK_RUNNER)})
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
    return runner.rsplit(".", 1)[-1] if isinstance(runner, str) else type(runner).__name__


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


def starting_local_cluster(options: PipelineOptions) -> contextlib.AbstractContextManager:
    """Around the run: on Beam's DaskRunner with no scheduler named (Beam then starts a local
    Dask cluster sized to the machine, one worker process per core), the worker processes are
    forked from this one rather than started afresh (Dask's `spawn`): they begin with Beam and
    facegrid imported, in a fraction of a second instead of an interpreter's start and every
    import each, and end without an interpreter's shut-down. Nothing for other runners, nor for
    a cluster named by --dask_client_address or --dask_scheduler_file."""
    if runner_name(options) != "DaskRunner":
        return contextlib.nullcontext()
    from apache_beam.runners.dask.dask_runner import DaskOptions

    named = options.view_as(DaskOptions)
    if named.address or named.scheduler_file:
        return contextlib.nullcontext()
    import dask

    return dask.config.set({"distributed.worker.multiprocessing-method": "fork"})


def release(result) -> None:
    """Lets go of what the run held once it is over: the Dask client Beam's DaskRunner made (and
    the local cluster it started when no scheduler was named). Nothing for other runners."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close()


def writes(options: PipelineOptions) -> bool:
    """False when the run only translates the job: a dry run, or a classic template."""
    return not (options.view_as(TestOptions).dry_run or options.view_as(GoogleCloudOptions).template_location)


def built_here(options: PipelineOptions) -> bool:
    """False when the run only translated or submitted the job: a dry run, a template, no waiting."""
    return writes(options) and not options.view_as(StandardOptions).no_wait_until_finish
