"""make_dataset on s3:// against local disk (issue 21), through the same code.

The val build is uploaded to moto's S3 server on loopback (tests/cloud_fixtures.py) and read by
`make_dataset`, batch 32, as an evaluation epoch (training=False) and a training epoch
(training=True, seed 0, 8 shards interleaved). Candidates:
- s3://          through reader.core.storage (ranged GETs of 1 MiB, `damage.records_through_storage`)
- local, layer   the same directory on local disk read by that same code (the s3:// path with
                 local files: what the store itself costs is the difference)
- local, native  TensorFlow's own TFRecordDataset, what make_dataset uses on local disk
Timed in turn, best of `repeats` rounds after a warm-up round (benchmarks/read.py's race). moto
is a Python server on the same machine: it takes CPU from the reader, which a real S3 does not.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys

from benchmarks.read import BATCH_SIZE, SPLIT, _dataset_pass, _race

BUCKET = "facegrid-bench"


@contextlib.contextmanager
def _through_storage():
    """make_dataset pipelines made in the block read local shards through the storage layer."""
    from reader.data import dataset

    saved, dataset.NATIVE_SCHEMES = dataset.NATIVE_SCHEMES, ()
    try:
        yield
    finally:
        dataset.NATIVE_SCHEMES = saved


def run(shards: str, repeats: int = 3) -> dict:
    """Measures make_dataset on the val build `shards` (a local directory) and on its copy on
    S3; prints a table and returns the figures (records/s, ratios)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import reader
    from reader.core import storage
    from tests.support import cloud_fixtures

    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket=BUCKET)
        s3.upload_tree(BUCKET, "val", pathlib.Path(shards))
        previous = storage.configure_s3(
            storage.S3Settings(s3.endpoint, cloud_fixtures.S3_REGION, cloud_fixtures.S3_KEY_ID, cloud_fixtures.S3_SECRET)
        )
        try:
            passes = {}
            for training in (False, True):
                kind = "train" if training else "eval"

                def make(data_dir, training=training):
                    return reader.make_dataset(data_dir, SPLIT, BATCH_SIZE, training=training, seed=0 if training else None)

                passes[f"s3_{kind}"] = _dataset_pass(make(f"s3://{BUCKET}/val"))
                with _through_storage():
                    passes[f"local_layer_{kind}"] = _dataset_pass(make(shards))
                passes[f"local_native_{kind}"] = _dataset_pass(make(shards))
            timings = _race(passes, repeats)
        finally:
            storage.configure_s3(previous)
    figures = {name: round(t.rate, 1) for name, t in timings.items()} | {
        "records": timings["s3_eval"].records,
        "repeats": repeats,
    }
    for kind in ("eval", "train"):
        figures[f"ratio_s3_to_local_layer_{kind}"] = round(figures[f"s3_{kind}"] / figures[f"local_layer_{kind}"], 3)
        figures[f"ratio_s3_to_local_native_{kind}"] = round(figures[f"s3_{kind}"] / figures[f"local_native_{kind}"], 3)
    print("| make_dataset | evaluation, records/s | training, records/s |\n| --- | --- | --- |")
    for name, label in (("s3", "s3:// (moto, loopback), storage layer"), ("local_layer", "local disk, storage layer"),
                        ("local_native", "local disk, TensorFlow's reader")):  # fmt: skip
        print(f"| {label} | {figures[name + '_eval']:,.0f} | {figures[name + '_train']:,.0f} |")
    for against in ("local_layer", "local_native"):
        print(f"| **s3 / {against.replace('_', ' ')}** | **{figures[f'ratio_s3_to_{against}_eval']:.2f}** | "
              f"**{figures[f'ratio_s3_to_{against}_train']:.2f}** |")  # fmt: skip
    return figures


if __name__ == "__main__":  # python -m benchmarks.read_s3 SHARDS_JPEG
    print(run(sys.argv[1]))
