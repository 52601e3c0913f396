"""The build's baseline: one process, one image after another, same decode/resize/encode/write.

    python -m benchmarks.build_loop ANNOTATIONS IMAGES_DIR OUTPUT_DIR SPLIT NUM_SHARDS

Runs `pipeline.records.make_record` per image, as every Beam worker does, and appends each
record to its hash-chosen shard. No Beam: this is what the Beam build is measured against.
"""

from __future__ import annotations

import os
import sys

from pipeline import annotations, images, records
from reader.core import layout, tfrecord
from reader.core.config import BuildConfig


def build_loop(annotations_path: str, images_dir: str, output_dir: str, split: str, num_shards: int) -> records.Counts:
    os.makedirs(output_dir, exist_ok=True)
    config = BuildConfig()
    counts = records.Counts()
    names = [os.path.join(output_dir, layout.shard_name(split, i, num_shards)) for i in range(num_shards)]
    shards = [open(name, "wb") for name in names]  # noqa: SIM115 (closed after the loop)
    with open(annotations_path, "rb") as f:
        for annotation in annotations.parse(f, annotations_path, annotations.list_format_for_split(split)):
            try:
                path = os.path.join(images_dir, images.confined_path(annotation.filename))
                with open(path, "rb") as source:
                    data = source.read()
                record, image_counts = records.make_record(annotation, data, config)
            except (images.UnusableImage, OSError):
                counts.update(errors=1)
                continue
            shards[layout.shard_of(annotation.filename, num_shards)].write(tfrecord.encode_record(record.serialize()))
            counts.update(image_counts)
    for shard in shards:
        shard.close()
    return counts


if __name__ == "__main__":
    annotations_path, images_dir, output_dir, split, num_shards = sys.argv[1:]
    print(dict(build_loop(annotations_path, images_dir, output_dir, split, int(num_shards))))
