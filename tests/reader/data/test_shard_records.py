"""reader.ShardRecords against real builds (tests/support/sources.py's HARD_CASES and
CHECKER_CASES), and as PyTorch, Grain and Keras (its torch backend) take it: the real libraries,
no adapter."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import reader
from reader.core import schema, tfrecord
from reader.data.records import collate
from tests.reader.data.test_sequence import INVALID, scaled
from tests.support import build_edits, cloud_fixtures
from tests.support.paths import ROOT

torch = pytest.importorskip("torch")  # the backends extra; make test installs it


def stacked(records, numbers) -> tuple[np.ndarray, np.ndarray]:
    items = [records[int(i)] for i in numbers]
    return np.stack([i[0] for i in items]), np.stack([i[1] for i in items])


def test_items_are_the_records_as_stored(built_val):
    n = len(built_val.records)
    records = reader.ShardRecords(built_val.data_dir, "val")
    raw = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8", with_ignore=True)
    assert len(records) == len(raw) == n
    for number in (0, 1, 17, n - 1, -1):
        stored = built_val.records[number]
        image, grid = records[number]
        assert image.dtype == np.float32 and image.shape == (224, 224, 3) and grid.shape == (7, 7, 5)
        np.testing.assert_allclose(image, scaled(stored), atol=1e-6)
        np.testing.assert_array_equal(grid, stored.grid)
        pixels, target = raw[number]
        assert pixels.dtype == np.uint8 and pixels.flags.writeable and pixels.flags.c_contiguous
        np.testing.assert_array_equal(pixels, stored.pixels())
        np.testing.assert_array_equal(target, np.concatenate([stored.grid, stored.ignore[..., None]], -1))
    for wrong in (n, -n - 1):
        with pytest.raises(IndexError):
            records[wrong]
    with pytest.raises(ValueError, match="image_dtype: expected one of"):
        reader.ShardRecords(built_val.data_dir, "val", image_dtype="float16")


def test_boxes_come_as_make_dataset_gives_them_and_collate_batches_them(built_val):
    records = reader.ShardRecords(built_val.data_dir, "val", with_boxes=True)
    items = [records[i] for i in range(6)]
    for (_, _, meta), stored in zip(items, built_val.records):
        np.testing.assert_array_equal(meta["boxes"], stored.boxes)
        np.testing.assert_array_equal(meta["invalid"], stored.attributes[:, INVALID])
        assert meta["filename"] == stored.filename
        np.testing.assert_array_equal(meta["original_size"], [stored.original_height, stored.original_width])
    images, grids, meta = collate(items)
    assert images.shape == (6, 224, 224, 3) and grids.shape == (6, 7, 7, 5) and meta["original_size"].shape == (6, 2)
    assert [len(b) for b in meta["boxes"]] == [len(r.boxes) for r in built_val.records[:6]]
    assert len({len(b) for b in meta["boxes"]}) > 1  # faces differ in number: why collate is needed
    # The same layout as make_dataset's with_boxes, record for record.
    _, _, tf_meta = next(iter(reader.make_dataset(built_val.data_dir, "val", 6, training=False, with_boxes=True)))
    for i in range(6):
        np.testing.assert_array_equal(meta["boxes"][i], tf_meta["boxes"][i].numpy())
        np.testing.assert_array_equal(meta["invalid"][i], tf_meta["invalid"][i].numpy())
        assert meta["filename"][i] == tf_meta["filename"][i].numpy().decode()
    np.testing.assert_array_equal(meta["original_size"], tf_meta["original_size"].numpy())


def test_shard_sequence_batches_exactly_these_items(built_val):
    seq = reader.ShardSequence(built_val.data_dir, "val", 8, shuffle=True, seed=3, with_ignore=True)
    records = reader.ShardRecords(built_val.data_dir, "val", with_ignore=True)
    for batch in (0, len(seq) - 1):
        images, grids = seq[batch]
        want_images, want_grids = stacked(records, seq.batch_records(batch))
        np.testing.assert_array_equal(images, want_images)  # bit for bit
        np.testing.assert_array_equal(grids, want_grids)


def test_flip_follows_the_builds_rule_per_record_and_epoch(built_val):
    config = built_val.manifest.config
    records = reader.ShardRecords(built_val.data_dir, "val", augment=True, seed=4, with_ignore=True, with_boxes=True)
    n = len(records)
    flips = np.array([records.flipped(i) for i in range(n)])
    np.testing.assert_array_equal(flips, np.random.default_rng([4, 0, 2]).random(n) < 0.5)
    assert 0.25 * n < flips.sum() < 0.75 * n
    for number in range(n):
        image, grid, meta = records[number]
        stored = built_val.records[number]
        if not flips[number]:
            np.testing.assert_allclose(image, scaled(stored), atol=1e-6)
            np.testing.assert_array_equal(grid[..., :5], stored.grid)
            continue
        np.testing.assert_allclose(image, scaled(stored)[:, ::-1], atol=1e-6)
        flipped, want = build_edits.flipped_targets(stored, config)
        np.testing.assert_array_equal(grid[..., :5], want.grid)
        np.testing.assert_array_equal(grid[..., 5], want.ignore)
        np.testing.assert_array_equal(meta["boxes"], flipped)  # the boxes flip with the image
    # ShardSequence flips a record the same way (its draws differ: per batch).
    seq = reader.ShardSequence(built_val.data_dir, "val", 8, augment=True, seed=4, with_ignore=True)
    as_uint8 = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8", augment=True, seed=4, with_ignore=True)
    number = int(np.flatnonzero(flips)[0])
    pixels, target, _ = seq.records.item(number, True)
    np.testing.assert_array_equal(pixels, as_uint8[number][0])
    np.testing.assert_array_equal(target, as_uint8[number][1])
    # Another epoch, other flips; the same epoch again, the same.
    records.set_epoch(1)
    again = np.array([records.flipped(i) for i in range(n)])
    assert not np.array_equal(again, flips)
    records.set_epoch(0)
    np.testing.assert_array_equal([records.flipped(i) for i in range(n)], flips)


def test_a_damaged_record_names_shard_record_and_offset(built_val, tmp_path):
    data_dir = str(build_edits.copy_build(built_val.data_dir, tmp_path / "copy"))
    records = reader.ShardRecords(data_dir, "val", cache_index=False)  # indexed and hashed while whole
    number = 20
    shard, span = build_edits.damage_record(data_dir, number)
    message = rf"{shard}: record {span.index} at byte {span.offset}: data checksum mismatch"
    with pytest.raises(tfrecord.CorruptRecordError, match=message):
        records[number]
    records[number - 1]  # the others still read
    # From a DataLoader's worker, the message reaches the training process as it is.
    loader = torch.utils.data.DataLoader(records, batch_size=4, num_workers=1)
    with pytest.raises(Exception, match=message):
        list(loader)


def test_a_record_of_another_schema_is_named(good_build, tmp_path):
    broken = build_edits.copy_build(good_build, tmp_path)
    file = build_edits.shard_files(broken)[0]
    build_edits.edit_record(broken, file, 1, lambda features: features.pop(schema.GRID))
    records = reader.ShardRecords(str(broken), "val", cache_index=False)
    records[0]
    with pytest.raises(schema.SchemaError, match=rf"{file}: record 1: missing key '{schema.GRID}'"):
        records[1]


# ---- PyTorch ---------------------------------------------------------------------------------


def test_dataloader_workers_and_distributed_sampler_give_the_items_of_direct_indexing(built_val):
    records = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8")
    records[0]  # opens a shard in this process: the forked workers must open their own
    copy = pickle.loads(pickle.dumps(records))  # spawned workers get a pickled one
    np.testing.assert_array_equal(copy[5][0], records[5][0])
    loader = torch.utils.data.DataLoader(records, batch_size=8, num_workers=2)
    assert multiprocessing.get_start_method() == "fork"
    got = list(loader)
    assert isinstance(got[0][0], torch.Tensor) and got[0][0].dtype == torch.uint8
    want_images, want_grids = stacked(records, range(len(records)))
    np.testing.assert_array_equal(torch.cat([b[0] for b in got]).numpy(), want_images)
    np.testing.assert_array_equal(torch.cat([b[1] for b in got]).numpy(), want_grids)

    seen = []
    for rank in (0, 1):
        sampler = torch.utils.data.DistributedSampler(records, num_replicas=2, rank=rank, shuffle=True, seed=1)
        numbers = list(sampler)
        seen += numbers
        batches = list(torch.utils.data.DataLoader(records, batch_size=5, sampler=sampler, num_workers=2))
        np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), stacked(records, numbers)[1])
    assert sorted(seen) == list(range(len(records)))  # 46 records: 23 each, none twice


def test_set_epoch_reaches_workers_forked_for_the_epoch_not_persistent_ones(built_val):
    records = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8", augment=True, seed=2)
    for persistent, same in ((False, False), (True, True)):
        loader = torch.utils.data.DataLoader(records, batch_size=len(records), num_workers=1, persistent_workers=persistent)
        epochs = []
        for epoch in (0, 1):
            records.set_epoch(epoch)
            [(images, _)] = list(loader)
            epochs.append(images.numpy())
        assert np.array_equal(*epochs) is same
    # Persistent workers keep the epoch they were forked in: epoch 0's flips, every epoch.
    fresh = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8", augment=True, seed=2)
    np.testing.assert_array_equal(epochs[1], stacked(fresh, range(len(fresh)))[0])


def test_a_small_torch_model_learns_from_a_dataloader(built_val):
    torch.manual_seed(0)
    records = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8", augment=True, seed=0)
    loader = torch.utils.data.DataLoader(records, batch_size=8, shuffle=True, num_workers=2, drop_last=True)
    model = torch.nn.Sequential(torch.nn.AvgPool2d(32), torch.nn.Conv2d(3, 5, 1), torch.nn.Sigmoid())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def loss_of(images, grids):
        images = images.permute(0, 3, 1, 2).float() / 127.5 - 1  # scaled on the device
        return torch.nn.functional.mse_loss(model(images), grids.permute(0, 3, 1, 2))

    def mean_loss() -> float:
        with torch.no_grad():
            return float(np.mean([loss_of(*batch).item() for batch in torch.utils.data.DataLoader(records, batch_size=16)]))

    before = mean_loss()
    for epoch in range(3):
        records.set_epoch(epoch)  # each epoch's workers are forked after this: they flip as it says
        for images, grids in loader:
            optimizer.zero_grad()
            loss_of(images, grids).backward()
            optimizer.step()
    assert mean_loss() < 0.7 * before


# Run under KERAS_BACKEND=torch in a process of its own, importing nothing of the tests (Beam).
FIT_DETECTOR = """
import sys
import keras
import numpy as np
import torch
import reader
from train.loss import GridLoss
from train.model import ModelConfig, build_model

torch.manual_seed(0)  # keras.utils.set_random_seed would import TensorFlow to seed it too
records = reader.ShardRecords(sys.argv[1], "val", with_ignore=True)  # float32 images, the ignore channel for GridLoss
loader = torch.utils.data.DataLoader(records, batch_size=4, shuffle=True, num_workers=2)
model = build_model(ModelConfig(alpha=0.35, head_filters=16))
model.compile(optimizer="adam", loss=GridLoss())
history = model.fit(loader, epochs=1, steps_per_epoch=2, verbose=0)
assert np.isfinite(history.history["loss"]).all(), history.history
print("backend", keras.backend.backend(), "tensorflow" in sys.modules)
"""


def test_the_detector_fits_under_keras_torch_backend_from_a_dataloader(built_val):
    """train/model.py's MobileNetV2 detector, two steps, fed by a DataLoader over ShardRecords."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", FIT_DETECTOR, built_val.data_dir], capture_output=True, text=True, env=env,
                            timeout=300, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "backend torch False", result.stdout  # nor TensorFlow


# ---- Grain -----------------------------------------------------------------------------------


def test_grain_order_is_the_seeds_and_a_checkpoint_resumes_mid_epoch(built_val):
    grain = pytest.importorskip("grain")
    records = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8")

    def batches(seed):
        return grain.MapDataset.source(records).shuffle(seed=seed).batch(4)

    first, again, other = batches(7), batches(7), batches(8)
    grids = [first[i][1] for i in range(len(first))]
    for i in range(len(first)):
        np.testing.assert_array_equal(again[i][1], grids[i])
    assert not all(np.array_equal(other[i][1], grids[i]) for i in range(len(other)))
    assert sorted(np.concatenate([g.reshape(len(g), -1) for g in grids]).sum(1)) == sorted(
        r.grid.sum() for r in built_val.records
    )

    iterator = iter(first.to_iter_dataset())
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    rest = [next(iterator) for _ in range(4)]
    resumed = iter(batches(7).to_iter_dataset())
    resumed.set_state(state)
    for want in rest:
        got = next(resumed)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(rest[0][1], grids[3])


# ---- no TensorFlow -----------------------------------------------------------------------------

NO_TENSORFLOW = """
import sys
import numpy as np
import torch
import grain
import reader

for data_dir in sys.argv[1:]:
    records = reader.ShardRecords(data_dir, "val", image_dtype="uint8", augment=True, with_boxes=True)
    items = [records[i] for i in range(len(records))]
    batches = list(torch.utils.data.DataLoader(records, batch_size=4, num_workers=2, collate_fn=reader.data.records.collate))
    assert sum(len(b[0]) for b in batches) == len(records)
    assert len(grain.MapDataset.source(records).batch(4, batch_fn=reader.data.records.collate)[0][0]) == 4
    print("read", data_dir, len(items))
taken = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tensorboard"))
assert not taken, taken
"""


def _read_without_tensorflow(data_dirs: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *data_dirs], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[1] for line in done.stdout.splitlines()] == data_dirs, done.stdout


def test_nothing_imports_tensorflow_on_local_disk_and_s3(good_build):
    """Reading items, a DataLoader's workers and Grain's batching, from a local build and from
    the same build on moto's S3 server."""
    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket="records")
        s3.upload_tree("records", "shards", good_build)
        _read_without_tensorflow([str(good_build), "s3://records/shards"], _s3_env(s3))


def test_nothing_imports_tensorflow_on_gcs(good_build, tmp_path):
    """gs:// through the storage layer's google-cloud-storage client, on the GCS emulator."""
    with cloud_fixtures.gcs_emulator("records") as gcs:
        gcs.upload_tree("records", "shards", good_build)
        _read_without_tensorflow(["gs://records/shards"], _gcs_env(gcs, tmp_path))


def _s3_env(s3) -> dict:
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": cloud_fixtures.S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": cloud_fixtures.S3_SECRET, "AWS_DEFAULT_REGION": cloud_fixtures.S3_REGION}  # fmt: skip


def _gcs_env(gcs, tmp_path) -> dict:
    credentials = cloud_fixtures.write_fake_google_credentials(tmp_path / "adc.json")
    return {"STORAGE_EMULATOR_HOST": gcs.endpoint, "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": "facegrid-test"}  # fmt: skip


# ---- the decoder ---------------------------------------------------------------------------------


def test_opencv_decodes_exactly_pillows_pixels_and_leaves_it_the_rest(built_val, monkeypatch):
    import io

    from PIL import Image

    from reader.core import images

    pytest.importorskip("cv2")
    for stored in built_val.records:
        fast = images._decode_jpeg_opencv(stored.image, 224, 224)
        assert fast is not None and fast.flags.writeable
        np.testing.assert_array_equal(fast, images._decode_jpeg(stored.image, 224, 224, any_mode=False, keep=True))
    jpeg = built_val.records[0].image
    # A stream cut short (libjpeg under OpenCV would fill it with grey) and bytes that are no
    # JPEG are left to Pillow, which refuses them; so are other sizes and other components.
    for other in (jpeg[: len(jpeg) // 2], b"\xff\xd8 not ours\xff\xd9"):
        assert images._decode_jpeg_opencv(other, 224, 224) is None
        with pytest.raises(ValueError, match="JPEG does not decode"):
            images.decode_stored_image(other, "jpeg", 224, 224, any_mode=True)
    assert images._decode_jpeg_opencv(jpeg, 112, 224) is None
    grey = io.BytesIO()
    Image.new("L", (224, 224), 77).save(grey, "JPEG")
    assert images._decode_jpeg_opencv(grey.getvalue(), 224, 224) is None
    np.testing.assert_array_equal(
        images.decode_stored_image(grey.getvalue(), "jpeg", 224, 224, any_mode=True), np.full((224, 224, 3), 77)
    )
    # Without OpenCV, the same items.
    records = reader.ShardRecords(built_val.data_dir, "val", image_dtype="uint8")
    with_opencv = records[3][0]
    monkeypatch.setitem(images._OPENCV, "cv2", None)
    np.testing.assert_array_equal(records[3][0], with_opencv)
