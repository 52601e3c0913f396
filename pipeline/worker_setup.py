"""The storage settings every step of the build needs, on whichever machine runs it.

Beam's FnApiRunner and Dataflow hand each worker the pipeline options, and Beam's file systems
(gs://, s3://) are configured from them there. Beam's DaskRunner hands its workers nothing: a
Dask worker would reach s3:// without --s3_endpoint_url and the keys, gs:// without --project.
So the graph carries what the file systems read (the --s3_*, Google Cloud, Azure and HDFS
options given, as plain values) and every step applies them as it is set up (`Configured`): to
Beam's file systems (on a runner that already set them this finds them equal and does nothing)
and to the storage layer the build reads and writes through (reader.core.storage), which takes
plain settings and never Beam's options.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options as beam_options

from reader.core import storage

# The option classes Beam's file systems read (reader.core.storage: S3's and Google Cloud's).
_STORAGE_OPTIONS = (
    beam_options.S3Options,
    beam_options.GoogleCloudOptions,
    beam_options.AzureOptions,
    beam_options.HadoopFileSystemOptions,
)
_LOCK = threading.Lock()
# Set by the launcher unless --verbose: the worker processes it starts on this machine (Beam's local
# multi-process runner) inherit it and leave a failing step's traceback to the launcher's one line.
# Dataflow's workers do not inherit it: their logs keep every traceback.
QUIET_ENV = "FACEGRID_QUIET_WORKERS"


def settings_of(options: beam_options.PipelineOptions | None) -> dict:
    """{option name: value} of the storage options given in `options` (defaults left out)."""
    found = {}
    if options is not None:
        for cls in _STORAGE_OPTIONS:
            found.update(options.view_as(cls).get_all_options(drop_default=True, current_only=True))
    return found


def apply(settings: dict) -> None:
    """Configures Beam's file systems in this process with `settings` (from `settings_of`),
    unless they already hold exactly those, and the storage layer (`storage_settings`)."""
    with _LOCK:
        if settings_of(FileSystems._pipeline_options) != settings:
            FileSystems.set_options(beam_options.PipelineOptions(**settings))
        storage.configure(storage_settings(settings))


def storage_settings(settings: dict) -> storage.Settings:
    """The storage layer's settings for Beam's option values `settings` (from `settings_of`):
    --s3_* as Beam's S3 filesystem reads them, --project as its GCS filesystem does."""
    s3 = storage.S3Settings(
        endpoint_url=settings.get("s3_endpoint_url"),
        region_name=settings.get("s3_region_name"),
        access_key_id=settings.get("s3_access_key_id"),
        secret_access_key=settings.get("s3_secret_access_key"),
        session_token=settings.get("s3_session_token"),
        api_version=settings.get("s3_api_version"),
        verify=settings.get("s3_verify"),
        disable_ssl=bool(settings.get("s3_disable_ssl")),
    )
    return storage.Settings(s3=s3, gcs=storage.GcsSettings(project=settings.get("project")))


def quiet_worker_tracebacks() -> None:
    """In a worker process the launcher started (Beam's local multi-process runner, whose
    sdk_worker_main inherits QUIET_ENV), Beam prints a failing step's traceback straight to
    stderr, the launcher's, and logs it again through the runner's logging channel, besides
    sending it to the launcher, whose one line says what failed (and, with --verbose, shows the
    traceback): both are silenced here. Elsewhere nothing changes."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main, "name", None) != "apache_beam.runners.worker.sdk_worker_main" or not os.environ.get(QUIET_ENV):
        return
    from apache_beam.runners.worker import sdk_worker

    sdk_worker.print = lambda *args, **kwargs: None  # its one print: the traceback of a failed instruction
    logging.getLogger(sdk_worker.__name__).addFilter(_NO_INSTRUCTION_TRACEBACK)  # the same object: added once


def _no_instruction_traceback(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Error processing instruction")


_NO_INSTRUCTION_TRACEBACK = _no_instruction_traceback


class Configured(beam.DoFn):
    """`fn` with the storage `settings` applied before it is set up (None: left as the runner
    set them); otherwise `fn` itself (its side inputs, bundles and teardown)."""

    def __init__(self, fn: beam.DoFn, settings: dict | None):
        super().__init__()
        self._fn, self._settings = fn, None if settings is None else dict(settings)

    def setup(self):
        quiet_worker_tracebacks()
        if self._settings is not None:
            apply(self._settings)
        self._fn.setup()

    def start_bundle(self):
        self._fn.start_bundle()

    def process(self, element, *args, **kwargs):
        return self._fn.process(element, *args, **kwargs)

    def finish_bundle(self):
        return self._fn.finish_bundle()

    def teardown(self):
        self._fn.teardown()

    def display_data(self):
        return self._fn.display_data()

    def default_label(self):
        return self._fn.default_label()
