"""The whole build of one split as a Beam graph: begin, write the shards (each writer reading the
annotation file and preparing its images), commit.

The commit is the graph's last step and every other step feeds it (Beam's DaskRunner computes
the last step and what it reads, nothing else)."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipeline import annotations, commit, finalize, reuse, transforms, worker_setup
from reader.core.config import BuildConfig


@dataclasses.dataclass(frozen=True)
class Job:
    """One split's build: inputs, outputs, the record config, and how many images each shard
    writer prepares at once (threads; they decide speed, never bytes)."""

    annotations: str
    images_dir: str
    output: commit.OutputSpec
    config: BuildConfig = BuildConfig()
    max_error_fraction: float = 0.01
    image_threads: int = transforms.IMAGE_THREADS
    reuse_from: str | None = None  # an earlier build's directory whose prepared images to reuse (pipeline.reuse)
    # The storage options every step applies wherever it runs (pipeline.worker_setup: plain
    # values, from the command line's); None leaves them to the runner (the FnApiRunner and
    # Dataflow hand their workers the pipeline options; Beam's DaskRunner does not).
    storage_settings: dict | None = None

    def __post_init__(self):
        if not 0 <= self.max_error_fraction <= 1:
            raise ValueError(f"max_error_fraction must be between 0 and 1, got {self.max_error_fraction}")
        if self.image_threads < 1:
            raise ValueError(f"image_threads must be >= 1, got {self.image_threads}")


def build(pipeline: beam.Pipeline, job: Job):
    """Adds the build of `job` to `pipeline`; returns the PCollection holding the manifest."""
    list_format = annotations.list_format_for_split(job.output.split)
    settings = job.storage_settings
    handle = (
        pipeline
        | "Begin" >> beam.Create([None])
        | "BeginBuild" >> beam.ParDo(_configured(transforms.BeginBuildFn(job.output), job))
    )
    earlier = None if job.reuse_from is None else pipeline | "IndexEarlierBuild" >> _index_earlier(job)
    written = pipeline | "WriteShards" >> transforms.WriteShards(
        job.images_dir,
        job.output.num_shards,
        job.config,
        handle,
        job.annotations,
        list_format,
        job.image_threads,
        earlier=earlier,
        settings=settings,
    )
    return written | "Finalize" >> finalize.Finalize(
        job.config, job.max_error_fraction, handle, earlier, settings, annotations=job.annotations
    )


def _configured(fn: beam.DoFn, job: Job) -> beam.DoFn:
    return worker_setup.Configured(fn, job.storage_settings)


@beam.ptransform_fn
def _index_earlier(root, job: Job):
    """-> the ReuseIndex of the build in job.reuse_from: its shards indexed side by side."""
    return (
        root
        | "EarlierDir" >> beam.Create([job.reuse_from])
        | "EarlierShards"
        >> beam.ParDo(
            _configured(
                reuse.EarlierShardsFn(job.output.split, job.config, explicit=job.reuse_from != job.output.output_dir), job
            )
        )
        | "SpreadShards" >> beam.Reshuffle()
        | "IndexShards" >> beam.ParDo(_configured(reuse.IndexShardFn(job.config), job))
        | "Combine" >> beam.CombineGlobally(reuse.CombineIndexes())
    )
