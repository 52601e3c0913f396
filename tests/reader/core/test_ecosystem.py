"""Other tools read the shards as they are: TF Model Garden's TfExampleDecoder, and TensorFlow
Datasets through the metadata of reader.core.tfds_metadata.

Both are the real packages (tf-models-official, tensorflow-datasets), imported inside the tests
only: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from reader.core import manifest, schema, tfds_metadata
from reader.core.config import BuildConfig
from tests.support.builds import build, read_split
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def jpeg_build(tmp_path_factory) -> pathlib.Path:
    """train (3 shards) and val (8 shards, two of them empty) of the fixture set, as JPEG."""
    out = tmp_path_factory.mktemp("ecosystem_jpeg")
    build(out, "--num_shards=3", split="train")
    build(out, split="val")
    return out


def _manifests(data_dir: pathlib.Path, *splits: str) -> dict[str, manifest.Manifest]:
    return {split: manifest.load(str(data_dir), split) for split in splits}


def _records(data_dir: pathlib.Path, split: str) -> list[schema.Record]:
    built = json.loads((data_dir / f"{split}.manifest.json").read_text())
    return [record for shard in read_split(data_dir, built).values() for record in shard]


def _write_metadata(data_dir: pathlib.Path, *splits: str) -> dict[str, bytes]:
    files = tfds_metadata.metadata_files(_manifests(data_dir, *splits))
    for name, data in files.items():
        (data_dir / name).write_bytes(data)
    return files


# ---- TF Model Garden -----------------------------------------------------------------------


def _model_garden_decoder():
    """TF Model Garden's decoder module, imported as a user writes it (the Makefile installs
    tf-models-official with the two requirements this import needs, gin-config and OpenCV)."""
    from official.vision.dataloaders import tf_example_decoder

    return tf_example_decoder


def test_model_garden_decoder_reads_every_jpeg_record(jpeg_build):
    import tensorflow as tf

    decoder = _model_garden_decoder().TfExampleDecoder()  # default arguments: image/source_id is required
    for split in ("train", "val"):
        records = _records(jpeg_build, split)
        paths = [str(p) for p in manifest.load(str(jpeg_build), split).shard_paths()]
        # As Model Garden's input readers do: decode inside tf.data (a graph), record by record.
        decoded = list(tf.data.TFRecordDataset(paths).map(decoder.decode).as_numpy_iterator())
        assert len(decoded) == len(records) == 10
        for record, found in zip(records, decoded):
            assert found["source_id"] == record.source_id.encode()
            assert found["image"].shape == (224, 224, 3) and (found["height"], found["width"]) == (224, 224)
            np.testing.assert_array_equal(found["groundtruth_boxes"], record.boxes[:, [1, 0, 3, 2]])
            np.testing.assert_array_equal(found["groundtruth_classes"], [schema.FACE_LABEL] * len(record.boxes))
            np.testing.assert_array_equal(found["groundtruth_is_crowd"], record.is_crowd.astype(bool))
            np.testing.assert_array_equal(found["groundtruth_area"], record.areas)
        # What its COCO evaluation does with source_id (coco_utils.COCOGroundtruthGenerator,
        # dataloaders.utils.process_source_id): an int64 per image, distinct in the split.
        ids = tf.strings.to_number([found["source_id"] for found in decoded], out_type=tf.int64).numpy()
        assert sorted(int(i) for i in ids) == sorted(int(r.source_id) for r in records)
        assert len(set(ids.tolist())) == len(ids)
        assert sum(found["groundtruth_is_crowd"].sum() for found in decoded) >= 1  # an invalid face

    # Without image/object/area the decoder computes it from the boxes: the same float32 values.
    record = next(r for r in _records(jpeg_build, "val") if len(r.boxes) > 1)
    example = tf.train.Example.FromString(record.serialize())
    del example.features.feature[schema.AREA]
    fallback = decoder.decode(tf.constant(example.SerializeToString()))["groundtruth_area"].numpy()
    np.testing.assert_array_equal(fallback, record.areas)


def test_model_garden_does_not_read_raw_records(tmp_path):
    """Raw shards are facegrid's own: image/encoded is no image file, and decoding fails."""
    import tensorflow as tf

    build(tmp_path, "--image_format=raw", "--num_shards=1", split="val")
    data = next(iter(tf.data.TFRecordDataset(manifest.load(str(tmp_path), "val").shard_paths())))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        _model_garden_decoder().TfExampleDecoder().decode(data)


# ---- TensorFlow Datasets --------------------------------------------------------------------


def test_tfds_loads_every_split_in_place(jpeg_build):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    _write_metadata(jpeg_build, "train", "val")
    builder = tfds.builder_from_directory(str(jpeg_build))
    assert set(builder.info.splits) == {"train", "val"}
    for split in ("train", "val"):
        built = manifest.load(str(jpeg_build), split)
        info = builder.info.splits[split]
        assert info.shard_lengths == [entry.records for entry in built.shards] and info.num_examples == 10
        assert [path.name for path in info.filepaths] == [entry.file for entry in built.shards]
        by_name = {record.filename: record for record in _records(jpeg_build, split)}
        examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
        assert len(examples) == 10
        for example in examples:
            record = by_name.pop(example[schema.FILENAME].decode())
            assert example[schema.ENCODED].shape == (224, 224, 3) and example[schema.ENCODED].dtype == np.uint8
            boxes = np.stack([example[key] for key in schema.BOX_KEYS], axis=1).reshape(-1, 4)
            np.testing.assert_array_equal(boxes, record.boxes)
            np.testing.assert_array_equal(example[schema.GRID], record.grid)
            np.testing.assert_array_equal(example[schema.IGNORE], record.ignore)
            assert example[schema.SOURCE_ID].decode() == record.source_id
            assert list(example[schema.CLASS_TEXT]) == [b"face"] * len(record.boxes)
            np.testing.assert_array_equal(example[schema.ENCODED], tf.io.decode_jpeg(record.image, channels=3))
        assert not by_name
    image, grid = next(iter(builder.as_dataset(split="val", as_supervised=True)))
    assert image.shape == (224, 224, 3) and grid.shape == (7, 7, 5)


def test_every_build_keeps_the_tfds_files_true_for_every_split(tmp_path):
    """The build writes the TFDS files at its commit, for every split in the directory; a
    rebuild of one split (another shard count, so other file names) keeps them true."""
    import tensorflow_datasets as tfds

    build(tmp_path, "--num_shards=3", split="train")
    build(tmp_path, "--num_shards=2", split="val")
    first = tfds.builder_from_directory(str(tmp_path)).info.splits
    assert set(first) == {"train", "val"} and first["val"].num_shards == 2
    build(tmp_path, "--num_shards=5", split="val")  # replaces val; train's files stay named
    again = tfds.builder_from_directory(str(tmp_path))
    for split, shards in (("train", 3), ("val", 5)):
        built = manifest.load(str(tmp_path), split)
        info = again.info.splits[split]
        assert [path.name for path in info.filepaths] == [entry.file for entry in built.shards] and len(info.filepaths) == shards
        assert len(list(again.as_dataset(split=split).as_numpy_iterator())) == built.num_records == 10
    assert (tmp_path / "label_map.pbtxt").read_text() == tfds_metadata.label_map_pbtxt()


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["config"].pop("grid_size"),  # hand-edited
        lambda m: m.__setitem__("build", 7),
        lambda m: m.__setitem__("split", "val"),  # filed under another split
        lambda m: m.pop("record_keys"),  # a build from before the keys TFDS looks for
        lambda m: [s.__setitem__("file", "elsewhere.tfrecord") for s in m["shards"]],
    ],
)
def test_another_splits_odd_manifest_leaves_it_out_and_never_fails_a_build(tmp_path, edit):
    import tensorflow_datasets as tfds

    build(tmp_path, "--num_shards=3", split="train")
    train = tmp_path / "train.manifest.json"
    raw = json.loads(train.read_text())
    edit(raw)
    train.write_text(json.dumps(raw))
    build(tmp_path, "--num_shards=2", split="val")
    rebuilt = build(tmp_path, "--num_shards=4", split="val")  # committed, exit 0, and tidied
    assert sorted(p.name for p in tmp_path.glob("val-*")) == sorted(s["file"] for s in rebuilt["shards"])
    assert not list(tmp_path.glob(".val.*"))  # no lease left behind
    assert set(tfds.builder_from_directory(str(tmp_path)).info.splits) == {"val"}


def test_a_split_with_no_record_is_left_out_of_the_tfds_files(tmp_path):
    import tensorflow_datasets as tfds

    annotations = tmp_path / "gt.txt"
    annotations.write_text("99--Broken/99_missing.jpg\n1\n1 2 3 4 0 0 0 0 0 0 \n")
    build(tmp_path / "out", "--num_shards=2", "--max_error_fraction=1", split="train", annotations=annotations)
    assert not (tmp_path / "out" / "dataset_info.json").exists()  # nothing TFDS could load
    build(tmp_path / "out", "--num_shards=2", split="val")
    assert set(tfds.builder_from_directory(str(tmp_path / "out")).info.splits) == {"val"}


def test_tfds_features_are_what_tfds_writes(jpeg_build):
    """features.json is the JSON TFDS itself writes for these features; dataset_info.json parses
    as TFDS's DatasetInfo proto with no unknown field."""
    import tensorflow_datasets as tfds
    from google.protobuf import json_format
    from tensorflow_datasets.core.proto import dataset_info_generated_pb2

    f = tfds.features
    spec = {}
    for feature in schema.FEATURES:
        dtype = {"bytes": None, "float": np.float32, "int64": np.int64}[feature.kind]
        one = f.Text() if dtype is None else f.Tensor(shape=(), dtype=dtype)
        spec[feature.key] = {"1": one, "faces": f.Sequence(one), "grid": f.Tensor(shape=(7, 7, 5), dtype=np.float32),
                             "cells": f.Tensor(shape=(7, 7), dtype=np.float32)}[feature.length]  # fmt: skip
    spec[schema.ENCODED] = f.Image(shape=(224, 224, 3), encoding_format="jpeg")
    files = tfds_metadata.metadata_files(_manifests(jpeg_build, "train", "val"))
    assert json.loads(files[tfds_metadata.FEATURES]) == f.FeaturesDict(spec).to_json()
    info = json_format.Parse(files[tfds_metadata.DATASET_INFO], dataset_info_generated_pb2.DatasetInfo())
    assert [split.name for split in info.splits] == ["train", "val"]
    assert files == tfds_metadata.metadata_files(_manifests(jpeg_build, "val", "train"))  # deterministic


def test_tfds_reads_raw_builds_and_mixed_directories(tmp_path):
    import tensorflow_datasets as tfds

    raw, mixed = tmp_path / "raw", tmp_path / "mixed"
    build(raw, "--image_format=raw", "--num_shards=2", split="val")
    build(mixed, "--image_format=raw", "--num_shards=2", split="train")
    build(mixed, "--num_shards=2", split="val")
    _write_metadata(raw, "val")
    example = next(iter(tfds.builder_from_directory(str(raw)).as_dataset(split="val").as_numpy_iterator()))
    record = {r.filename: r for r in _records(raw, "val")}[example[schema.FILENAME].decode()]
    np.testing.assert_array_equal(example[schema.ENCODED], record.pixels())  # raw: the very bytes

    _write_metadata(mixed, "train", "val")  # one features.json for both formats: the bytes, undecoded
    builder = tfds.builder_from_directory(str(mixed))
    for split, image_format in (("train", b"raw"), ("val", b"jpeg")):
        example = next(iter(builder.as_dataset(split=split).as_numpy_iterator()))
        assert example[schema.FORMAT] == image_format and isinstance(example[schema.ENCODED], bytes)
        assert builder.info.splits[split].num_examples == 10


def test_metadata_refuses_what_it_cannot_describe(jpeg_build):
    manifests = _manifests(jpeg_build, "train", "val")
    with pytest.raises(ValueError, match="at least one split"):
        tfds_metadata.metadata_files({})
    with pytest.raises(ValueError, match="manifest of split 'val' given as split 'train'"):
        tfds_metadata.metadata_files({"train": manifests["val"]})
    val = manifests["val"]
    renamed = dataclasses.replace(val, shards=(manifest.ShardEntry("val-0.tfrecord", 1, 1, "0" * 64), *val.shards[1:]))
    with pytest.raises(ValueError, match=r"shards\[0\].file: expected 'val-00000-of-00008\.[0-9a-f]{12}\.tfrecord'"):
        tfds_metadata.metadata_files({"val": renamed})


def test_builds_before_build_ids_get_their_own_template(jpeg_build):
    legacy = manifest.Manifest(str(jpeg_build), "val", BuildConfig(), {},
                               (manifest.ShardEntry("val-00000-of-00001.tfrecord", 3, 100, "0" * 64),), {})  # fmt: skip
    info = json.loads(tfds_metadata.metadata_files({"val": legacy})[tfds_metadata.DATASET_INFO])
    assert info["splits"] == [
        {"name": "val", "shardLengths": ["3"], "numBytes": "100", "filepathTemplate": "{SPLIT}-{SHARD_X_OF_Y}.tfrecord"}
    ]


def test_label_map():
    assert tfds_metadata.label_map_pbtxt() == 'item {\n  id: 1\n  name: "face"\n  display_name: "face"\n}\n'


def test_metadata_never_imports_tensorflow():
    code = (
        "import sys, reader.core.tfds_metadata\n"
        "assert not {'tensorflow', 'tensorflow_datasets'} & set(sys.modules), sorted(m for m in sys.modules if 'tensor' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_card_is_wider_faces(jpeg_build):
    """TFDS shows WIDER FACE's citation, homepage and licence, not a catalog page of its own invention."""
    import tensorflow_datasets as tfds

    _write_metadata(jpeg_build, "train", "val")
    info = tfds.builder_from_directory(str(jpeg_build)).info
    assert info.citation == tfds_metadata.WIDER_FACE["citation"] and "WIDER FACE: A Face Detection Benchmark" in info.citation
    assert info.homepage == "http://shuoyang1213.me/WIDERFACE/"
    assert info.redistribution_info.license == tfds_metadata.WIDER_FACE["license"]
    assert "tensorflow.org/datasets/catalog" not in str(info)


def test_boxes_as_tfds_bboxfeature_would_lose_them(jpeg_build, tmp_path):
    """Why features.json keeps the four coordinate lists: described as Sequence(BBoxFeature)
    under one key (what TFDS's visualizers draw), the records, which hold no such key, read as
    images with no face at all."""
    import shutil

    import tensorflow_datasets as tfds

    _write_metadata(jpeg_build, "val")
    for path in jpeg_build.glob("*.json"):
        shutil.copy(path, tmp_path)
    for entry in manifest.load(str(jpeg_build), "val").shards:
        shutil.copy(jpeg_build / entry.file, tmp_path)
    features = tfds.builder_from_directory(str(tmp_path)).info.features
    spec = {key: features[key] for key in features if key not in schema.BOX_KEYS}
    spec["image/object/bbox"] = tfds.features.Sequence(tfds.features.BBoxFeature())
    (tmp_path / tfds_metadata.FEATURES).write_text(json.dumps(tfds.features.FeaturesDict(spec).to_json()))
    examples = list(tfds.builder_from_directory(str(tmp_path)).as_dataset(split="val").as_numpy_iterator())
    faces = sum(len(r.boxes) for r in _records(jpeg_build, "val"))
    assert faces > 0 and sum(len(e["image/object/bbox"]) for e in examples) == 0
