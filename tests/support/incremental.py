"""The incremental builds of tests/pipeline/test_reuse*.py: builds of the checked-in fixture set
(16 images, 10 usable) in 3 shards, in memory unless a test says otherwise, and what their files say.
The `clean` and `first` fixtures (tests/pipeline/conftest.py) build with them."""

from __future__ import annotations

import io
import json
import pathlib

from reader.core import layout, schema, tfrecord
from tests.support import builds
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

SPLIT = "val"
FLAGS = ["--max_error_fraction=0.5", "--num_shards=3"]
MANIFEST = layout.manifest_name(SPLIT)
IN_MEMORY = builds.IN_MEMORY


def build(out, *flags: str, annotations=FIXTURE_ANNOTATIONS, images=FIXTURE_IMAGES, runner=IN_MEMORY):
    """The real build through pipeline.cli.run; returns its PipelineResult."""
    return builds.run_build(annotations, images, out, SPLIT, *FLAGS, *flags, runner=runner)


def counters(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace("facegrid"))["counters"]
    return {c.key.metric.name: c.committed for c in found if c.key.metric.name in ("images_reused", "images_prepared")}


def files(out) -> dict[str, bytes]:
    return builds.files(out)


def manifest(files: dict[str, bytes]) -> dict:
    return json.loads(files[MANIFEST])


def reuse_block(files: dict[str, bytes]) -> dict:
    block = manifest(files)["reuse"]
    assert block["reused"] + block["prepared"] == manifest(files)["counts"]["images_annotated"], block
    return block


def shards(files: dict[str, bytes]) -> list[bytes]:
    """The split's shards' bytes, by shard index."""
    return [files[s["file"]] for s in manifest(files)["shards"]]


def comparable(manifest: dict) -> dict:
    """The manifest without what may differ between an incremental and a clean build."""
    kept = {k: v for k, v in manifest.items() if k not in ("build", "errors_file", "reuse")}
    kept["shards"] = [{k: v for k, v in s.items() if k != "file"} for s in manifest["shards"]]
    return kept


def assert_same_as_clean(incremental: dict[str, bytes], clean: dict[str, bytes]) -> None:
    """Shards (by index) and errors file byte for byte; manifests equal but for build,
    errors_file, shard file names and reuse."""
    a, b = manifest(incremental), manifest(clean)
    assert len(shards(incremental)) == len(shards(clean))
    for index, (mine, theirs) in enumerate(zip(shards(incremental), shards(clean))):
        assert mine == theirs, f"shard {index} differs from the clean build's"
    assert incremental[a["errors_file"]] == clean[b["errors_file"]]
    assert comparable(a) == comparable(b)
    assert b["reuse"]["reused"] == 0  # the clean build really was clean


def records(files: dict[str, bytes]) -> dict[str, schema.Record]:
    """filename -> record, over every shard of the split."""
    found = {}
    for s in manifest(files)["shards"]:
        for _, data in tfrecord.iter_records(io.BytesIO(files[s["file"]]), s["file"]):
            record = schema.Record.parse(data)
            found[record.filename] = record
    return found


def spans(path: pathlib.Path) -> list[tfrecord.RecordSpan]:
    with open(path, "rb") as f:
        return [span for span, _, _ in tfrecord.walk_records(f)]


def first_id(first: pathlib.Path) -> str:
    return json.loads((first / MANIFEST).read_text())["build"]
