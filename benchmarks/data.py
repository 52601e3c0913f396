"""The benchmark's data: the real WIDER val annotation file, images generated for it (by
`pipeline.sample.render_images`, seed 0: `pipeline.sample.synthetic` photos), and its builds."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchData:
    """annotations: the real val annotation file; images_dir: generated images for it;
    shards_jpeg / shards_raw: the val split built from them (jpeg and raw image_format)."""

    annotations: str
    images_dir: str
    shards_jpeg: str
    shards_raw: str
