"""The benchmark's data: the real WIDER val annotation file, images generated for it (by
`pipeline.sample.render_images`, seed 0: `pipeline.sample.synthetic` photos), and its builds."""

from __future__ import annotations

import dataclasses
import pathlib

# The real WIDER annotation files, checked in under data/.
WIDER_SPLIT = pathlib.Path(__file__).resolve().parents[1] / "data" / "wider_face_split"


@dataclasses.dataclass(frozen=True)
class BenchData:
    """annotations: the real val annotation file; images_dir: generated images for it;
    shards_jpeg / shards_raw: the val split built from them (jpeg and raw image_format)."""

    annotations: str
    images_dir: str
    shards_jpeg: str
    shards_raw: str
