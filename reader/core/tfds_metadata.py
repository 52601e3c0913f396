"""The metadata a data directory carries for other tools, derived from its manifests.

    dataset_info.json  TensorFlow Datasets: every split built in the directory, its shard
                       lengths and its shards' file names (facegrid's own, build id included)
    features.json      TensorFlow Datasets: each key of the record schema as a TFDS feature
    label_map.pbtxt    the label map (id 1 = face) in the Object Detection API's text format

With the first two beside the shards, `tfds.builder_from_directory(DIR).as_dataset(split=...)`
reads the shards in place, and decodes each record into a dict keyed by the record's own keys
("image/encoded", "image/object/bbox/xmin", "target/grid", ...). The files describe the builds
that the manifests name, so they are written after a build's manifest and before the earlier
build's shards are removed.

Plain JSON written here, without TensorFlow or TFDS (the Beam workers have neither): the
tests hold every file to what TFDS itself writes and reads. What each key becomes:
    image/encoded     JPEG builds: `Image` (uint8 [S, S, 3]); raw builds: `Tensor` uint8
                      [S, S, 3] stored as bytes; splits of both formats in one directory (or
                      raw ones of several sizes): the bytes, undecoded
    other bytes keys  `Text`; per face: `Sequence(Text)`
    int64, float      `Tensor` scalars; per face: `Sequence(Tensor)` ([N]); target/grid and
                      target/ignore [S, S, 5] and [S, S] ([S*S*5] and [S*S] flat when the
                      splits' grid sizes differ)
The boxes stay four per-face coordinate lists, as the records hold them: TFDS's `BBoxFeature`
reads one [N, 4] list under one key that the records do not have, and inside a `Sequence` TFDS
reads a missing key as no box at all (tests/reader/core/test_ecosystem.py shows it), so describing them so
would hand every image to TFDS with zero faces. TFDS's visualizers, which draw BBoxFeatures only,
therefore draw the images without their boxes; `reader.check --sheet` draws them.

dataset_info.json also carries WIDER FACE's card: its citation, its homepage and its licence
(WIDER_FACE below), which TFDS shows as the dataset's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from reader.core import layout, schema, targets
from reader.core.manifest import Manifest

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
LABEL_MAP = "label_map.pbtxt"
FILES = (DATASET_INFO, FEATURES, LABEL_MAP)  # what every build writes beside the shards
NAME = "facegrid"
FILE_FORMAT = "tfrecord"  # TFDS's name for the format; facegrid's shards end in SHARD_SUFFIX

# The source dataset's card: its authors' homepage and citation; the licence its dataset cards name.
WIDER_FACE = {
    "homepage": "http://shuoyang1213.me/WIDERFACE/",
    "license": "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
    "citation": (
        "@inproceedings{yang2016wider,\n"
        "  author = {Yang, Shuo and Luo, Ping and Loy, Chen Change and Tang, Xiaoou},\n"
        "  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
        "  title = {WIDER FACE: A Face Detection Benchmark},\n"
        "  year = {2016}\n"
        "}"
    ),
}
_FEATURES = "tensorflow_datasets.core.features."
_DTYPES = {"bytes": "string", "float": "float32", "int64": "int64"}


def metadata_files(manifests: Mapping[str, Manifest]) -> dict[str, bytes]:
    """{file name: its bytes} for the data directory holding `manifests` (split -> its manifest,
    every split built there): DATASET_INFO, FEATURES and LABEL_MAP. The same manifests always
    give the same bytes. Raises ValueError for no manifest, a manifest filed under another split,
    or one whose shards are not named as facegrid names them."""
    if not manifests:
        raise ValueError("expected the manifest of at least one split, found none")
    for split, built in manifests.items():
        if built.split != split:
            raise ValueError(f"manifest of split {built.split!r} given as split {split!r}")
    ordered = sorted(manifests.values(), key=_split_order)
    return {
        DATASET_INFO: _json(dataset_info(ordered)),
        FEATURES: _json(features(ordered)),
        LABEL_MAP: label_map_pbtxt().encode(),
    }


def dataset_info(manifests: list[Manifest]) -> dict:
    """The content of dataset_info.json (a TFDS DatasetInfo proto as JSON) for these splits."""
    splits = []
    for built in manifests:
        splits.append({
            "name": built.split,
            "shardLengths": [str(entry.records) for entry in built.shards],
            "numBytes": str(sum(entry.bytes for entry in built.shards)),
            "filepathTemplate": filepath_template(built),
        })  # fmt: skip
    formats = sorted({built.config.image_format for built in manifests})
    return {
        "name": NAME,
        "version": f"{schema.SCHEMA_VERSION}.0.0",
        "description": (
            "Face detection records written by facegrid (schema_version "
            f"{schema.SCHEMA_VERSION}): one tf.train.Example per image, the image resized to the "
            "stored size with its faces as normalized boxes (TensorFlow Object Detection API keys), "
            "WIDER FACE attributes and the detector's grid targets, built from WIDER FACE (Yang et al., "
            "CVPR 2016: citation, homepage and licence below). Labels: "
            + ", ".join(f"{i} = {name}" for i, name in sorted(schema.LABEL_MAP.items()))
            + f" (see {LABEL_MAP}). Image format: {', '.join(map(str, formats))}; raw images are "
            "facegrid's own: other tools, TF Model Garden among them, read JPEG builds only."
        ),
        "citation": WIDER_FACE["citation"],
        "location": {"urls": [WIDER_FACE["homepage"]]},
        "redistributionInfo": {"license": WIDER_FACE["license"]},
        "fileFormat": FILE_FORMAT,
        "sizeInBytes": str(sum(int(split["numBytes"]) for split in splits)),
        "splits": splits,
        "supervisedKeys": {"tuple": {"items": [{"featureKey": schema.ENCODED}, {"featureKey": schema.GRID}]}},
    }


def filepath_template(built: Manifest) -> str:
    """TFDS's file name template for the shards of `built`: {SPLIT} and {SHARD_X_OF_Y} (index
    and count, 5 digits or more, as `layout.shard_name` writes them) around literal text, the
    build id. Raises ValueError when a shard of the manifest is named otherwise."""
    tag = "" if built.build is None else f".{layout.check_build_id(built.build)}"
    template = f"{{SPLIT}}-{{SHARD_X_OF_Y}}{tag}{layout.SHARD_SUFFIX}"
    count = len(built.shards)
    for index, entry in enumerate(built.shards):
        named = layout.shard_name(built.split, index, count, built.build)
        if entry.file != named:
            raise ValueError(
                f"{layout.manifest_name(built.split)}: shards[{index}].file: expected {named!r} "
                f"(the name TFDS derives for it), found {entry.file!r}"
            )
    return template


def features(manifests: list[Manifest]) -> dict:
    """The content of features.json (a TFDS FeaturesDict as JSON): every key of the schema."""
    return {
        "type": _FEATURES + "features_dict.FeaturesDict",
        "content": {"features": {f.key: _feature(f, manifests) for f in schema.FEATURES}},
        "proto_cls": "tensorflow_datasets.FeaturesDict",
    }


def label_map_pbtxt() -> str:
    """schema.LABEL_MAP in the text format of the Object Detection API's StringIntLabelMap."""
    return "".join(
        f'item {{\n  id: {i}\n  name: "{name}"\n  display_name: "{name}"\n}}\n' for i, name in sorted(schema.LABEL_MAP.items())
    )


def _feature(feature: schema.Feature, manifests: list[Manifest]) -> dict:
    if feature.key == schema.ENCODED:
        return _image(manifests)
    if feature.length in ("grid", "cells"):
        sizes = {built.grid_size for built in manifests}
        channels = (targets.NUM_CHANNELS,) if feature.length == "grid" else ()
        shape = (sizes.pop(),) * 2 + channels if len(sizes) == 1 else (None,)
        return _tensor(shape, _DTYPES[feature.kind])
    one = _text() if feature.kind == "bytes" else _tensor((), _DTYPES[feature.kind])
    return _sequence(one) if feature.length == "faces" else one


def _image(manifests: list[Manifest]) -> dict:
    formats = {built.config.image_format for built in manifests}
    sizes = {built.input_size for built in manifests}
    size = sizes.pop() if len(sizes) == 1 else None
    if formats == {"jpeg"}:
        return {
            "pythonClassName": _FEATURES + "image_feature.Image",
            "image": {"shape": _shape((size, size, 3)), "dtype": "uint8", "encodingFormat": "jpeg"},
        }
    if formats == {"raw"} and size is not None:
        return _tensor((size, size, 3), "uint8", encoding="bytes")
    return _tensor((), "string")


def _tensor(shape: tuple, dtype: str, encoding: str = "none") -> dict:
    return {
        "pythonClassName": _FEATURES + "tensor_feature.Tensor",
        "tensor": {"shape": _shape(shape), "dtype": dtype, "encoding": encoding},
    }


def _text() -> dict:
    return {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}}


def _sequence(feature: dict) -> dict:
    return {"pythonClassName": _FEATURES + "sequence_feature.Sequence", "sequence": {"feature": feature, "length": "-1"}}


def _shape(dims: tuple) -> dict:
    """A TensorShape proto as JSON: int64 as strings, -1 for an unknown size."""
    return {"dimensions": [str(-1 if d is None else d) for d in dims]} if dims else {}


def _split_order(built: Manifest) -> tuple:
    known = built.split in layout.SPLITS
    return (layout.SPLITS.index(built.split) if known else len(layout.SPLITS), built.split)


def _json(content: dict) -> bytes:
    return (json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
