"""reader.ShardSequence against real builds (tests/support/sources.py's HARD_CASES)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import reader
from reader.core import boxes as box_formats
from reader.core import layout, schema, targets, tfrecord
from tests.support import build_edits
from tests.support.paths import ROOT

INVALID = schema.ATTRIBUTES.index("invalid")


def whole_epoch(seq) -> tuple[np.ndarray, np.ndarray]:
    batches = [seq[i] for i in range(len(seq))]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def scaled(record) -> np.ndarray:
    return record.pixels().astype(np.float32) / np.float32(127.5) - np.float32(1)


def test_unshuffled_batches_hold_every_record_in_manifest_order_as_stored(built_val):
    n = len(built_val.records)
    seq = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=False, with_ignore=True)
    assert len(seq) == -(-n // 8) and seq.num_records == n
    images, grids = whole_epoch(seq)
    assert images.dtype == np.float32 and images.shape == (n, 224, 224, 3)
    assert grids.dtype == np.float32 and grids.shape == (n, 7, 7, 6)
    np.testing.assert_array_equal(grids[..., :5], np.stack([r.grid for r in built_val.records]))
    np.testing.assert_array_equal(grids[..., 5], np.stack([r.ignore for r in built_val.records]))
    np.testing.assert_allclose(images, np.stack([scaled(r) for r in built_val.records]), atol=1e-6)
    assert seq[len(seq) - 1][0].shape[0] == n % 8
    with pytest.raises(IndexError):
        seq[len(seq)]


def test_without_shuffle_given_the_order_is_the_manifests(built_val):
    # The default is evaluation's order; training asks for shuffle=True.
    seq = reader.ShardSequence(built_val.data_dir, "val", batch_size=8)
    assert seq.shuffle is False
    seq.on_epoch_end()
    np.testing.assert_array_equal(whole_epoch(seq)[1], np.stack([r.grid for r in built_val.records]))


def test_the_same_batches_as_make_dataset(built_val):
    seq = reader.ShardSequence(built_val.data_dir, "val", 16, shuffle=False)
    for (images, grids), (tf_images, tf_grids) in zip(
        (seq[i] for i in range(len(seq))),
        reader.make_dataset(built_val.data_dir, "val", 16, training=False, dct_method="INTEGER_ACCURATE"),
    ):
        np.testing.assert_allclose(images, tf_images.numpy(), atol=1e-6)
        np.testing.assert_array_equal(grids, tf_grids.numpy())


def test_raw_shards(built_val_raw):
    images, grids = whole_epoch(reader.ShardSequence(built_val_raw.data_dir, "val", 5, shuffle=False))
    np.testing.assert_allclose(images, np.stack([scaled(r) for r in built_val_raw.records]), atol=1e-6)
    np.testing.assert_array_equal(grids, np.stack([r.grid for r in built_val_raw.records]))


def test_shuffle_is_a_seeded_global_permutation_per_epoch(built_val):
    n = len(built_val.records)
    seq = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=True, seed=5, drop_remainder=True)
    assert len(seq) == n // 8
    orders = []
    for _ in range(3):
        full = np.concatenate([seq.batch_records(i) for i in range(len(seq))] + [seq._order[len(seq) * 8 :]])
        assert sorted(full) == list(range(n))  # a permutation of every record
        orders.append(full)
        seq.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # Spread across shards, not shard by shard: the first batch draws from more than one shard.
    assert len({int(seq.index.shard[r]) for r in orders[0][:8]}) > 1

    again = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=True, seed=5, drop_remainder=True)
    np.testing.assert_array_equal(again.batch_records(0), orders[0][:8])
    again.set_epoch(2)
    np.testing.assert_array_equal(again.batch_records(1), orders[2][8:16])
    other = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=True, seed=6)
    assert not np.array_equal(other.batch_records(0), orders[0][:8])

    # A batch holds the records its numbers name, with their stored targets.
    images, grids = seq[1]
    for image, grid, record in zip(images, grids, seq.batch_records(1)):
        np.testing.assert_array_equal(grid, built_val.records[record].grid)
        np.testing.assert_allclose(image, scaled(built_val.records[record]), atol=1e-6)


def test_flip_keeps_targets_true_to_the_image(built_val):
    config = built_val.manifest.config
    seq = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=True, seed=1, augment=True, with_ignore=True)
    flipped_seen = kept_seen = 0
    for batch in range(len(seq)):
        images, grids = seq[batch]
        for image, grid, number in zip(images, grids, seq.batch_records(batch)):
            record = built_val.records[number]
            stored = scaled(record)
            if np.allclose(image, stored, atol=1e-6):
                kept_seen += 1
                np.testing.assert_array_equal(grid[..., :5], record.grid)
                continue
            np.testing.assert_allclose(image, stored[:, ::-1], atol=1e-6)
            flipped_seen += 1
            placement = box_formats.Placement.fit(record.original_width, record.original_height, 224, config.resize)
            flipped = box_formats.flip_rel_xyxy(record.boxes)
            is_target = targets.target_mask(record.boxes, record.attributes[:, INVALID], config.min_face_px, 224)
            want = targets.encode(flipped, is_target, 7, placement.source_areas(record.boxes))
            np.testing.assert_array_equal(grid[..., :5], want.grid)
            np.testing.assert_array_equal(grid[..., 5], want.ignore)
            decoded, _ = targets.decode(grid[..., :5])
            np.testing.assert_allclose(np.sort(decoded, 0), np.sort(flipped[want.owners[want.owners >= 0]], 0), atol=1e-5)
    assert flipped_seen > 5 and kept_seen > 5
    # Drawn from (seed, epoch, batch): the same batch twice is the same.
    np.testing.assert_array_equal(seq[2][0], seq[2][0])


# ---- the index -----------------------------------------------------------------------------


def test_index_matches_the_headers_and_is_cached_next_to_the_shards(built_val, tmp_path):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    seq = reader.ShardSequence(data_dir, "val", 4, shuffle=False)
    cache = os.path.join(data_dir, layout.index_name("val"))
    assert os.path.exists(cache)
    spans = []
    for entry in built_val.manifest.shards:
        with open(os.path.join(data_dir, entry.file), "rb") as f:
            spans += tfrecord.index_records(f, entry.file)
    assert [int(o) for o in seq.index.offset] == [s.offset for s in spans]
    assert [int(n) for n in seq.index.length] == [s.length for s in spans]
    for number in (0, 17, len(spans) - 1):
        shard, index = built_val.locations[number]
        found_shard, span = seq.index.locate(number)
        assert (built_val.manifest.shards[found_shard].file, span.index) == (shard, index)
        assert seq.record(number).filename == built_val.records[number].filename

    # The cache is read back as it is...
    with open(cache) as f:
        cached = json.load(f)
    cached["shards"][0]["offsets"][1] += 1  # now wrong, yet matching the manifest's key
    with open(cache, "w") as f:
        json.dump(cached, f)
    stale = reader.ShardSequence(data_dir, "val", 4, shuffle=False)
    assert int(stale.index.offset[1]) == spans[1].offset + 1
    with pytest.raises(tfrecord.CorruptRecordError):
        stale.read(1)
    # ...until a shard's file changed since it was hashed (here its mtime): then it is indexed again.
    shard = os.path.join(data_dir, built_val.manifest.shards[0].file)
    os.utime(shard, ns=(os.stat(shard).st_atime_ns, os.stat(shard).st_mtime_ns + 1))
    fresh = reader.ShardSequence(data_dir, "val", 4, shuffle=False)
    assert int(fresh.index.offset[1]) == spans[1].offset
    # Without the cache, nothing is written.
    os.remove(cache)
    reader.ShardSequence(data_dir, "val", 4, shuffle=False, cache_index=False)
    assert not os.path.exists(cache)


def test_a_damaged_record_names_shard_record_and_offset(built_val, tmp_path):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    seq = reader.ShardSequence(data_dir, "val", 4, shuffle=False, cache_index=False)
    number = 20
    shard_number, span = seq.index.locate(number)
    shard = built_val.manifest.shards[shard_number].file
    with open(os.path.join(data_dir, shard), "r+b") as f:
        f.seek(span.data_offset + 100)
        byte = f.read(1)
        f.seek(span.data_offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(
        tfrecord.CorruptRecordError, match=rf"{shard}: record {span.index} at byte {span.offset}: data checksum mismatch"
    ):
        seq[number // 4]
    seq[0]  # the others still read


def test_bad_arguments(built_val):
    with pytest.raises(ValueError, match="batch_size"):
        reader.ShardSequence(built_val.data_dir, "val", 0, shuffle=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        reader.ShardSequence(built_val.data_dir, "val", 1000, shuffle=True, drop_remainder=True)


# ---- workers and Keras ---------------------------------------------------------------------


def test_pickles_without_open_files_and_reads_in_threads(built_val):
    seq = reader.ShardSequence(built_val.data_dir, "val", 4, shuffle=True, seed=2)
    first = seq[0]
    copy = pickle.loads(pickle.dumps(seq))
    np.testing.assert_array_equal(copy[0][1], first[1])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(seq.__getitem__, range(len(seq))))
    for batch, (_, grids) in enumerate(threaded):
        np.testing.assert_array_equal(grids, seq[batch][1])


def fit_two_epochs(data_dir: str, workers: int, use_multiprocessing: bool) -> str:
    """Fits a tiny model for two epochs on a shuffled, flipped ShardSequence; returns the backend."""
    import keras

    keras.utils.set_random_seed(0)
    seen = []

    class Recording(reader.ShardSequence):
        def on_epoch_end(self):
            seen.append(self.epoch)
            super().on_epoch_end()

    train = Recording(
        data_dir, "val", 8, shuffle=True, seed=0, augment=True, workers=workers, use_multiprocessing=use_multiprocessing
    )
    val = reader.ShardSequence(data_dir, "val", 8, shuffle=False)
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.layers.AveragePooling2D(32),
            keras.layers.Conv2D(5, 1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(train, validation_data=val, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all(), history.history
    # Keras calls on_epoch_end once more before the first epoch; each epoch gets its own order.
    assert train.epoch >= 2 and seen == list(range(train.epoch)), (train.epoch, seen)
    return keras.backend.backend()


def test_model_fit_under_tensorflow_with_worker_processes(built_val):
    assert fit_two_epochs(built_val.data_dir, workers=2, use_multiprocessing=True) == "tensorflow"


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_model_fit_under_other_backends_with_worker_threads(built_val, backend):
    script = f"from tests.reader.data.test_sequence import fit_two_epochs; print('backend', fit_two_epochs({built_val.data_dir!r}, 2, False))"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend {backend}" in result.stdout
