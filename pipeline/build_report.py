"""What facegrid-build shows of a build: its log while it runs, then one line or a summary.

This module owns the console's side of a build (pipeline.cli decides when each is shown):
- the logging setup, and the filter that turns the local runner's relayed worker log lines
  (protobuf dumps) back into facegrid's progress lines and warnings;
- the one-line message of a build that failed, found inside whatever the runner raised;
- the summary of a committed build, read from its manifest.
"""

from __future__ import annotations

import logging
import re

from pipeline import annotations, commit
from reader.core import manifest as manifests
from reader.core import storage

# Where Beam's local runner relays its workers' log lines.
_RELAY = "apache_beam.runners.portability.local_job_service"


def plural(n: int, noun: str) -> str:
    """`1 record`, `2 records`: a count and its noun, as the build's lines print them."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def setup_logging(verbose: bool) -> None:
    """Logs INFO and up to stderr: facegrid's progress, Beam's warnings. A failing step's
    traceback only when `verbose` (the build's one-line error says what failed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Beam's own INFO lines (servers starting, type hints) bury the progress lines of the build.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # Dask's scheduler, workers and nannies log every start, connection and close at INFO.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    relay = logging.getLogger(_RELAY)
    relay.setLevel(logging.INFO)
    relay.addFilter(WorkerLogs(verbose))
    if not verbose:
        # Beam logs a failing step's traceback before it raises; the one line main prints says it.
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


class WorkerLogs(logging.Filter):
    """Beam's local runner relays each worker log line as a protobuf dump. Keep warnings and
    facegrid's own progress lines, shown as their message alone; a failing step's traceback
    only when `verbose` (the build's one-line error says what failed)."""

    # Every local worker warns that it has no semi_persistent_directory: nothing to act on.
    _NOISE = ("No semi_persistent_directory found",)
    _FIELDS = re.compile(
        r'message: "(?P<message>.*?)" (?=instruction_id|transform_id|log_location).*?log_location: "(?P<where>[^"]*)"'
    )

    def __init__(self, verbose: bool = False):
        super().__init__()
        self._verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FIELDS.search(record.getMessage())
        if match is None:
            return record.levelno >= logging.WARNING
        if record.levelno < logging.WARNING and not any(
            ours in match["where"] for ours in ("/pipeline/", "/reader/core/progress.py")
        ):
            return False
        if not self._verbose and record.levelno >= logging.ERROR and "apache_beam/runners/" in match["where"]:
            return False
        if match["message"].startswith(self._NOISE):
            return False
        record.msg, record.args = match["message"], ()
        return True


_FATAL = (annotations.AnnotationError, commit.BuildError, storage.StorageError)
_FATAL_MARKERS = tuple(f"{cls.__module__}.{cls.__qualname__}: " for cls in _FATAL)


def fatal_message(error: BaseException) -> str | None:
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
    return fatal_message(cause) if cause is not None and cause is not error else None


def last_line(error: BaseException) -> str:
    """`ExceptionType: ` and the last non-blank line of its message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def summary(output: commit.OutputSpec, build_id: str) -> str:
    """What was built, for build `build_id` that has committed into `output`: its counts, read
    from the split's manifest. Two builds of a split may run at once and the later commit wins:
    when the manifest names another build by now (or is gone), says so rather than show that
    build's counts as this one's."""
    try:  # parsed as every tool parses a manifest (nesting too deep for Python's json included)
        data = storage.read_or_none(output.manifest_path, storage.MANIFEST)
        manifest = manifests.loads(data, output.manifest_path) if data is not None else None
    except (ValueError, storage.RefusedFile):
        manifest = None
    if not isinstance(manifest, dict):
        return f"{output.split}: build {build_id} committed; {output.manifest_path} is gone or unreadable since"
    if manifest.get("build") != build_id:
        return (
            f"{output.split}: build {build_id} committed, then build {manifest.get('build')} committed over it: "
            f"{output.manifest_path} names that one"
        )
    c = manifest["counts"]
    size = sum(s["bytes"] for s in manifest["shards"]) / 1e6
    text = (
        f"{output.split}: {c['images_annotated']} images -> {c['records']} records in {len(manifest['shards'])} shards "
        f"({size:.1f} MB), {c['errors']} unusable; faces: {c['faces_annotated']} annotated, {c['faces_stored']} stored, "
        f"{c['targets']} targets, {c['dropped']} dropped by cell collisions, {c['ignored']} ignored, "
        f"{c['degenerate']} degenerate\nwrote {output.manifest_path} (build {manifest['build']})"
    )
    if c["errors"]:
        text += f"\nunusable images: {output.path(manifest['errors_file'])}"
    return text + _reuse_line(manifest.get("reuse"))


def _reuse_line(reuse) -> str:
    """How many images came from the earlier build, and why any of it was not taken."""
    if not isinstance(reuse, dict) or not reuse.get("from") and not reuse.get("notes"):
        return ""  # nothing to reuse from: every image prepared, as the counts say
    notes = reuse.get("notes") or []
    shown = "".join(f"\n  {note}" for note in notes[:_SHOWN_NOTES])
    more = f"\n  ... and {len(notes) - _SHOWN_NOTES} more (the manifest's reuse.notes)" if len(notes) > _SHOWN_NOTES else ""
    source = f" from build {reuse['from']}" if reuse.get("from") else ""
    return f"\nimages: {reuse.get('reused')} reused{source}, {reuse.get('prepared')} prepared" + (
        f"; not reused:{shown}{more}" if notes else ""
    )


_SHOWN_NOTES = 5
