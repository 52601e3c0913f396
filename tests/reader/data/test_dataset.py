"""reader.make_dataset, reader.data.augment and reader.data.targets_tf against real builds
(tests/support/sources.py's HARD_CASES)."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import reader
from reader.core import boxes as box_formats
from reader.core import schema, targets, tfrecord
from reader.data import augment, targets_tf
from reader.data.dataset import SkippedRecords
from tests.support import build_edits
from tests.support.build_edits import count_records

INVALID = schema.ATTRIBUTES.index("invalid")


def collect(dataset) -> list:
    """Every element of one pass, as numpy (ragged tensors as lists of arrays)."""
    out = []
    for element in dataset:
        out.append(tf.nest.map_structure(lambda t: t.to_list() if isinstance(t, tf.RaggedTensor) else t.numpy(), element))
    return out


def concat(batches, position):
    return np.concatenate([b[position] for b in batches])


def stored_targets(record, with_ignore=False):
    return np.concatenate([record.grid, record.ignore[..., None]], -1) if with_ignore else record.grid


def expected_flip(record, config):
    """What the flipped record must hold, computed with reader.core.targets and reader.core.boxes only."""
    placement = box_formats.Placement.fit(record.original_width, record.original_height, config.input_size, config.resize)
    flipped = box_formats.flip_rel_xyxy(record.boxes)
    invalid = record.attributes[:, INVALID]
    is_target = targets.target_mask(record.boxes, invalid, config.min_face_px, config.input_size)
    return flipped, targets.encode(flipped, is_target, config.grid_size, placement.source_areas(record.boxes))


# ---- evaluation: every record once, as written -----------------------------------------------


def test_eval_reads_every_record_once_in_manifest_order_with_the_stored_values(built_val):
    dataset = reader.make_dataset(
        built_val.data_dir, "val", 8, training=False, with_ignore=True, with_boxes=True, dct_method="INTEGER_ACCURATE"
    )
    n = len(built_val.records)
    assert dataset.cardinality().numpy() == -(-n // 8)
    batches = collect(dataset)
    assert len(batches) == -(-n // 8) and len(batches[-1][0]) == n % 8
    filenames = [name.decode() for b in batches for name in b[2]["filename"]]
    assert filenames == [r.filename for r in built_val.records]

    images, grids = concat(batches, 0), concat(batches, 1)
    assert images.dtype == np.float32 and images.shape == (n, 224, 224, 3)
    assert grids.dtype == np.float32 and grids.shape == (n, 7, 7, 6)
    np.testing.assert_array_equal(grids, np.stack([stored_targets(r, True) for r in built_val.records]))
    boxes = [np.asarray(box, np.float32).reshape(-1, 4) for b in batches for box in b[2]["boxes"]]
    invalid = [np.asarray(v) for b in batches for v in b[2]["invalid"]]
    sizes = concat([(b[2]["original_size"],) for b in batches], 0)
    for record, box, flags, size in zip(built_val.records, boxes, invalid, sizes):
        np.testing.assert_array_equal(box, record.boxes)
        np.testing.assert_array_equal(flags, record.attributes[:, INVALID])
        assert tuple(size) == (record.original_height, record.original_width)
    # Pixels: dct_method="INTEGER_ACCURATE" (above; the default is TensorFlow's INTEGER_FAST) is the DCT
    # Pillow uses: the same values.
    pixels = np.stack([r.pixels() for r in built_val.records]).astype(np.float32)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_allclose(images, pixels / 127.5 - 1.0, atol=1e-6)


def test_plain_elements_and_tensorflow_default_jpeg_decode_stay_within_jpeg_tolerance(built_val):
    dataset = reader.make_dataset(built_val.data_dir, "val", 16, training=False)  # TensorFlow's default DCT
    assert [tuple(s.shape) for s in dataset.element_spec] == [(None, 224, 224, 3), (None, 7, 7, 5)]
    batches = collect(dataset)
    pixels = np.stack([r.pixels() for r in built_val.records]).astype(np.float32)
    difference = np.abs((concat(batches, 0) + 1.0) * 127.5 - pixels)
    assert difference.mean() < 2.0 and difference.max() <= 40, (difference.mean(), difference.max())
    np.testing.assert_array_equal(concat(batches, 1), np.stack([r.grid for r in built_val.records]))


def test_raw_shards_give_the_stored_pixels_exactly(built_val_raw):
    batches = collect(reader.make_dataset(built_val_raw.data_dir, "val", 5, training=False))
    pixels = np.stack([r.pixels() for r in built_val_raw.records]).astype(np.float32)
    np.testing.assert_allclose(concat(batches, 0), pixels / 127.5 - 1.0, atol=1e-6)


# ---- training: shuffled, seeded, whole batches ---------------------------------------------


def epoch_filenames(dataset) -> list[str]:
    return [name.decode() for element in dataset for name in element[2]["filename"].numpy()]


def test_training_shuffles_per_epoch_from_the_seed_and_drops_the_partial_batch(built_val):
    n = len(built_val.records)
    all_names = {r.filename for r in built_val.records}
    dataset = reader.make_dataset(built_val.data_dir, "val", 8, training=True, seed=7, with_boxes=True, shuffle_buffer=64)
    assert dataset.cardinality().numpy() == n // 8
    first, second = epoch_filenames(dataset), epoch_filenames(dataset)
    for names in (first, second):
        assert len(names) == n // 8 * 8 and len(set(names)) == len(names) and set(names) <= all_names
    assert first != second  # a new order each epoch
    again = reader.make_dataset(built_val.data_dir, "val", 8, training=True, seed=7, with_boxes=True, shuffle_buffer=64)
    assert [epoch_filenames(again), epoch_filenames(again)] == [first, second]
    other = reader.make_dataset(built_val.data_dir, "val", 8, training=True, seed=8, with_boxes=True, shuffle_buffer=64)
    assert epoch_filenames(other) != first
    assert first != sorted(first, key=[r.filename for r in built_val.records].index)


def test_flip_keeps_targets_true_to_the_image(built_val):
    by_name = built_val.by_filename()
    config = built_val.manifest.config
    dataset = reader.make_dataset(
        built_val.data_dir,
        "val",
        4,
        training=True,
        seed=3,
        augment=True,
        with_ignore=True,
        with_boxes=True,
        dct_method="INTEGER_ACCURATE",
    )
    flipped_seen = kept_seen = 0
    for _ in range(2):
        for images, grids, meta in collect(dataset):
            for image, grid, boxes, name in zip(images, grids, meta["boxes"], meta["filename"]):
                record = by_name[name.decode()]
                stored = record.pixels().astype(np.float32) / 127.5 - 1.0
                boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
                if np.allclose(image, stored, atol=1e-6):
                    kept_seen += 1
                    np.testing.assert_array_equal(boxes, record.boxes)
                    np.testing.assert_array_equal(grid, stored_targets(record, True))
                    continue
                np.testing.assert_allclose(image, stored[:, ::-1], atol=1e-6)  # mirrored pixels
                flipped_seen += 1
                want_boxes, want = expected_flip(record, config)
                np.testing.assert_array_equal(boxes, want_boxes)
                np.testing.assert_array_equal(grid[..., :5], want.grid)
                np.testing.assert_array_equal(grid[..., 5], want.ignore)
                # Decoding the flipped grid gives back the flipped boxes of the faces owning cells.
                decoded, _ = targets.decode(grid[..., :5])
                owners = want.owners[want.owners >= 0]
                np.testing.assert_allclose(np.sort(decoded, axis=0), np.sort(want_boxes[owners], axis=0), atol=1e-5)
    assert flipped_seen > 5 and kept_seen > 5


# Dyadic coordinates, exact in float32, on a 4 x 4 grid, both faces in row 1: face A's centre x = 0.25 lies on the
# boundary of columns 0 and 1 (column 1); B's is 0.1875 (column 0), and B is larger. Flipped,
# A's centre is 0.75, column 3 (not the mirrored column 2), where B (0.8125) lands too: they now
# collide, and B wins. Mirroring the columns would keep two faces.
BOUNDARY_BOXES = np.array([[0.125, 0.125, 0.375, 0.375], [0.0625, 0.1875, 0.3125, 0.5625]], np.float32)


def check_boundary_flip(flipped_boxes, grid, ignore):
    np.testing.assert_array_equal(flipped_boxes, [[0.625, 0.125, 0.875, 0.375], [0.6875, 0.1875, 0.9375, 0.5625]])
    assert grid[..., 4].sum() == 1 and grid[1, 3, 4] == 1  # B alone, at row 1, column 3
    decoded, _ = targets.decode(grid)
    np.testing.assert_allclose(decoded, flipped_boxes[1:], atol=1e-6)
    assert not ignore.any()


def test_flip_encodes_the_grid_again_from_the_flipped_boxes():
    placement = box_formats.Placement.fit(400, 400, 224, "stretch")
    original = targets.encode(BOUNDARY_BOXES, np.ones(2, bool), 4, placement.source_areas(BOUNDARY_BOXES))
    assert original.grid[..., 4].sum() == 2  # two faces, two cells before the flip
    image = np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3)
    flipped_image, flipped, grid = augment.flip_numpy(image, BOUNDARY_BOXES, np.zeros(2), placement, 4, 0.0)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    check_boundary_flip(flipped, grid.grid, grid.ignore)
    assert grid.dropped == 1
    image_tf, flipped_tf, grid_tf, ignore_tf = augment.flip_tf(
        tf.constant(image),
        BOUNDARY_BOXES,
        tf.zeros([2], tf.int64),
        400,
        400,
        grid_size=4,
        input_size=224,
        resize="stretch",
        min_face_px=0.0,
    )
    np.testing.assert_array_equal(image_tf.numpy(), image[:, ::-1])
    check_boundary_flip(flipped_tf.numpy(), grid_tf.numpy(), ignore_tf.numpy())


# ---- the TensorFlow port of the target rule (reader.data.targets_tf) ----------------------


def random_faces(rng, n):
    """Boxes with shared cells, exact area ties, centres on cell boundaries, invalid flags."""
    centres = rng.integers(0, 15, size=(n, 2)) / 14  # many exactly on boundaries
    sizes = rng.choice([0.02, 0.05, 0.1, 0.3], size=(n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
    boxes = np.clip(boxes, 0, 1).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + np.float32(1 / 256))
    return boxes, (rng.random(n) < 0.2).astype(np.int64)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_tensorflow_flip_equals_reader_targets_eagerly_and_inside_tf_data(resize):
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(60):
        boxes, invalid = random_faces(rng, int(rng.integers(0, 12)))
        cases.append((boxes, invalid, int(rng.integers(50, 2000)), int(rng.integers(50, 2000)), float(rng.choice([0.0, 8.0]))))

    def tf_flip(boxes, invalid, height, width, min_face_px):
        _, flipped, grid, ignore = augment.flip_tf(
            tf.zeros([2, 2, 3], tf.uint8),
            boxes,
            invalid,
            height,
            width,
            grid_size=7,
            input_size=224,
            resize=resize,
            min_face_px=min_face_px,
        )
        return flipped, grid, ignore

    for boxes, invalid, height, width, min_face_px in cases:
        placement = box_formats.Placement.fit(width, height, 224, resize)
        _, want_boxes, want = augment.flip_numpy(np.zeros((2, 2, 3)), boxes, invalid, placement, 7, min_face_px)
        flipped, grid, ignore = tf_flip(boxes, invalid, height, width, min_face_px)
        np.testing.assert_array_equal(flipped.numpy(), want_boxes)
        np.testing.assert_array_equal(grid.numpy(), want.grid)
        np.testing.assert_array_equal(ignore.numpy(), want.ignore)

    # The same inside a tf.data map (a graph, not eager), ragged inputs padded per case.
    min_face_px = 8.0
    dataset = tf.data.Dataset.from_generator(
        lambda: ((b, v, h, w) for b, v, h, w, _ in cases),
        output_signature=(
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
        ),
    ).map(lambda b, v, h, w: tf_flip(b, v, h, w, min_face_px)[1:])
    for (boxes, invalid, height, width, _), (grid, ignore) in zip(cases, dataset):
        placement = box_formats.Placement.fit(width, height, 224, resize)
        _, _, want = augment.flip_numpy(np.zeros((2, 2, 3)), boxes, invalid, placement, 7, min_face_px)
        np.testing.assert_array_equal(grid.numpy(), want.grid)
        np.testing.assert_array_equal(ignore.numpy(), want.ignore)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_batched_tensorflow_flip_equals_reader_targets_row_by_row(resize):
    rng = np.random.default_rng(1)
    cases = [random_faces(rng, int(n)) for n in rng.integers(0, 9, size=12)]
    heights, widths = rng.integers(50, 2000, size=12), rng.integers(50, 2000, size=12)
    flip = rng.random(12) < 0.5
    boxes = tf.RaggedTensor.from_row_lengths(np.concatenate([b for b, _ in cases]).reshape(-1, 4), [len(b) for b, _ in cases])
    invalid = tf.RaggedTensor.from_row_lengths(np.concatenate([v for _, v in cases]).astype(np.int64), [len(b) for b, _ in cases])
    flipped, grid, ignore = augment.flip_targets_batch_tf(
        boxes,
        invalid,
        tf.constant(heights),
        tf.constant(widths),
        tf.constant(flip),
        grid_size=7,
        input_size=224,
        resize=resize,
        min_face_px=4.0,
    )
    for i, (case_boxes, case_invalid) in enumerate(cases):
        placement = box_formats.Placement.fit(int(widths[i]), int(heights[i]), 224, resize)
        is_target = targets.target_mask(case_boxes, case_invalid, 4.0, 224)
        want_boxes = box_formats.flip_rel_xyxy(case_boxes) if flip[i] else case_boxes
        want = targets.encode(want_boxes, is_target, 7, placement.source_areas(case_boxes))
        np.testing.assert_array_equal(flipped[i].numpy().reshape(-1, 4), want_boxes)
        np.testing.assert_array_equal(grid[i].numpy(), want.grid)
        np.testing.assert_array_equal(ignore[i].numpy(), want.ignore)


def test_tensorflow_encode_reproduces_every_stored_grid(built_val):
    config = built_val.manifest.config
    for record in built_val.records:
        placement = box_formats.Placement.fit(record.original_width, record.original_height, 224, config.resize)
        invalid = record.attributes[:, INVALID]
        is_target = targets_tf.target_mask_tf(record.boxes, invalid, config.min_face_px, 224)
        h, w = targets_tf.placement_tf(record.original_height, record.original_width, 224, config.resize)
        areas = targets_tf.source_areas_tf(record.boxes, record.original_height, record.original_width, h, w, 224)
        np.testing.assert_array_equal(areas.numpy(), placement.source_areas(record.boxes))
        grid, ignore = targets_tf.encode_tf(record.boxes, is_target, areas, 7)
        np.testing.assert_array_equal(grid.numpy(), record.grid)
        np.testing.assert_array_equal(ignore.numpy(), record.ignore)


# ---- damaged shards ------------------------------------------------------------------------


def damage(data_dir: str, shard: str, record: int, where: str) -> tfrecord.RecordSpan:
    """Flips one byte of a record's data ("data") or length ("header"); returns its span."""
    path = os.path.join(data_dir, shard)
    with open(path, "rb") as f:
        span = tfrecord.index_records(f, shard)[record]
    with open(path, "r+b") as f:
        position = span.offset + 3 if where == "header" else span.data_offset + span.length // 2
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x5A]))
    return span


@pytest.mark.parametrize("training", [False, True])
def test_a_damaged_record_raises_an_error_naming_shard_record_and_offset(built_val, tmp_path, training, monkeypatch):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    shard = built_val.manifest.shards[1].file
    span = damage(data_dir, shard, 4, "data")
    expected = f"{shard}: record 4 at byte {span.offset}: data checksum mismatch"
    # A local shard is hashed when the dataset is made: its sha256 differs, and a scan names the damage...
    with pytest.raises(ValueError, match=re.escape(expected)):
        reader.make_dataset(data_dir, "val", 4, training=training, seed=0)
    # ...and where shards are not hashed first (remote ones), reading finds it.
    monkeypatch.setattr(reader.data.damage, "_check_sizes", lambda manifest: None)
    dataset = reader.make_dataset(data_dir, "val", 4, training=training, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        collect(dataset)
    message = str(raised.value)
    assert expected in message, message


def test_a_shard_cut_short_is_named(built_val, tmp_path):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    shard = built_val.manifest.shards[2].file
    path = os.path.join(data_dir, shard)
    with open(path, "rb") as f:
        spans = tfrecord.index_records(f, shard)
    os.truncate(path, spans[-1].offset + 20)  # cut inside the last record
    # Local shards are measured against the manifest before reading...
    with pytest.raises(ValueError, match=rf"{shard}: {spans[-1].offset + 20} bytes, the manifest says"):
        reader.make_dataset(data_dir, "val", 4, training=False)
    # ...and found while reading where sizes are not checked first (remote paths): here a
    # manifest that agrees with the cut file.
    with open(path, "rb") as f:
        cut = hashlib.sha256(f.read()).hexdigest()
    build_edits.rewrite_manifest(data_dir, lambda m: m["shards"][2].update(bytes=spans[-1].offset + 20, sha256=cut))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=rf"{shard}: record {len(spans) - 1} at byte {spans[-1].offset}: truncated data"
    ):
        collect(reader.make_dataset(data_dir, "val", 4, training=False))


def test_a_shard_with_fewer_records_than_the_manifest_is_named(built_val, tmp_path, monkeypatch):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    entry = built_val.manifest.shards[0]
    build_edits.rewrite_manifest(data_dir, lambda m: (m["shards"][0].update(records=entry.records + 1), count_records(m, +1)))
    message = rf"{entry.file}: holds {entry.records} records, the manifest promises {entry.records + 1}"
    # Local shards are counted from their headers when the dataset is made: the error comes at once...
    with pytest.raises(ValueError, match=message):
        reader.make_dataset(data_dir, "val", 4, training=True, seed=0)
    # ...and where they are not counted (remote shards), while reading.
    monkeypatch.setattr(reader.data.damage, "count_local", lambda manifest, strict: False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        collect(reader.make_dataset(data_dir, "val", 4, training=True, seed=0))


def test_skip_corrupt_leaves_damaged_records_out_and_counts_them(built_val, tmp_path):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    shards = built_val.manifest.shards
    damage(data_dir, shards[0].file, 2, "data")  # the records after it are still read
    span = damage(data_dir, shards[2].file, shards[2].records - 3, "header")  # the rest of this shard is lost
    skipped = SkippedRecords()
    dataset = reader.make_dataset(data_dir, "val", 4, training=False, with_boxes=True, skip_corrupt=True, skipped=skipped)
    assert dataset.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    names = [n.decode() for b in collect(dataset) for n in b[2]["filename"]]
    lost = {
        built_val.records[i].filename
        for i, (file, index) in enumerate(built_val.locations)
        if (file == shards[0].file and index == 2) or (file == shards[2].file and index >= shards[2].records - 3)
    }
    assert len(lost) == 4
    assert names == [r.filename for r in built_val.records if r.filename not in lost]
    assert skipped.count == 4
    assert any(
        f"{shards[2].file}: record {shards[2].records - 3} at byte {span.offset}: length checksum mismatch" in p
        for p in skipped.problems
    )
    # A second epoch counts again.
    collect(dataset)
    assert skipped.count == 8


def test_bad_arguments_say_what_is_wrong(built_val, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        reader.make_dataset(built_val.data_dir, "val", 0, training=False)
    with pytest.raises(ValueError, match="augment"):
        reader.make_dataset(built_val.data_dir, "val", 4, training=False, augment=True)
    with pytest.raises(ValueError, match="fewer than one batch"):
        reader.make_dataset(built_val.data_dir, "val", 1000, training=True)
    with pytest.raises(reader.core.manifest.ManifestError, match="no manifest"):
        reader.make_dataset(str(tmp_path), "val", 4, training=False)


def test_model_fit_takes_the_dataset_with_its_length(built_val):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.layers.AveragePooling2D(32),
            keras.layers.Conv2D(5, 1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    train = reader.make_dataset(built_val.data_dir, "val", 8, training=True, seed=0, augment=True)
    val = reader.make_dataset(built_val.data_dir, "val", 8, training=False)
    history = model.fit(train, validation_data=val, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
