"""`ShardSequence`: a split's shards as a Keras 3 `PyDataset`, with random access to any record.

    sequence = reader.ShardSequence("shards", "train", batch_size=32, shuffle=True, seed=0, workers=2)
    model.fit(sequence, epochs=10, shuffle=False)   # the sequence shuffles; see below

Batches are numpy arrays of the layout `reader.make_dataset` yields: images float32
[B, size, size, 3] in [-1, 1], targets float32 [B, S, S, 5] (or [B, S, S, 6] with the ignore
mask as channel 5, `with_ignore=True`). Without shuffling, the order is the manifest's (shards in
turn, each in file order), the same as `make_dataset(..., training=False)`. JPEG is decoded with
libjpeg's accurate integer DCT (Pillow's), so the pixels equal make_dataset's only with its
`dct_method="INTEGER_ACCURATE"` (its default, TensorFlow's INTEGER_FAST, may differ slightly).

Random access, and what a missing shard or a damaged record raises: `reader.data.records`
(`ShardRecords`, which this batches).

Shuffling: `shuffle=True` draws a permutation of all records for every epoch from
(seed, epoch), a true global shuffle; `on_epoch_end` moves to the next epoch. Keras also shuffles
the order of batches of a PyDataset unless `model.fit(..., shuffle=False)`; pass that for a
run that the seed alone decides.

Workers: `workers=N` reads batches in N threads (JPEG decoding releases the GIL), or in N
processes with `use_multiprocessing=True`; the object pickles without open files. Works under
the TensorFlow, JAX and PyTorch Keras backends: batches are plain numpy, and nothing here
imports TensorFlow (gs:// and s3:// go through reader.core.storage).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from reader.core import schema, targets
from reader.data.records import ShardRecords

_SCALE = np.float32(1 / 127.5)


class ShardSequence(keras.utils.PyDataset):
    """Batches of one split with random access to any record (see the module docstring).

    data_dir: local path, gs:// or s3:// (reader.core.manifest; records read with ranged GETs);
      split: train, val or test.
    shuffle: a new global permutation per epoch from `seed` (None: a seed drawn at random once,
      so that every worker process follows the same order). Default False: the manifest's
      order, what evaluation and prediction need; pass True for training.
    augment: random horizontal flip (probability 1/2), targets encoded again from the flipped
      boxes (`reader.data.augment.flip_numpy`); drawn from (seed, epoch, batch).
    with_ignore: append the ignore mask to the targets as channel 5.
    drop_remainder: leave out the last partial batch.
    cache_index: read and write `{split}.index.json` next to the shards (local directories).
    workers, use_multiprocessing, max_queue_size: Keras' PyDataset options.
    """

    def __init__(
        self,
        data_dir: str,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        *,
        augment: bool = False,
        with_ignore: bool = False,
        drop_remainder: bool = False,
        cache_index: bool = True,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else int(seed)
        self.augment = augment
        self.with_ignore = with_ignore
        self.drop_remainder = drop_remainder
        self.records = ShardRecords(
            data_dir,
            split,
            image_dtype="uint8",
            with_ignore=with_ignore,
            augment=augment,
            seed=self.seed,
            cache_index=cache_index,
        )
        self.manifest, self.index, self.config = self.records.manifest, self.records.index, self.records.config
        self.input_size, self.grid_size = self.config.input_size, self.config.grid_size
        if drop_remainder and self.num_records < batch_size:
            raise ValueError(f"{split} has {self.num_records} records, fewer than one batch of {batch_size}")
        self.epoch = 0
        self._order = self._permutation(0)

    # ---- size and order ------------------------------------------------------------------

    @property
    def num_records(self) -> int:
        return len(self.index)

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.num_records // self.batch_size
        return math.ceil(self.num_records / self.batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_records)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_records)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Jumps to the order of `epoch` (for resuming a run)."""
        self.epoch = epoch
        self._order = self._permutation(epoch)

    def batch_records(self, batch: int) -> np.ndarray:
        """The record numbers (in manifest order) that batch `batch` of this epoch holds."""
        if not -len(self) <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        batch %= len(self)
        return self._order[batch * self.batch_size : (batch + 1) * self.batch_size]

    # ---- reading -------------------------------------------------------------------------

    def read(self, record: int) -> bytes:
        """The serialized record number `record` (in manifest order), checksums checked."""
        return self.records.read(record)

    def record(self, record: int) -> schema.Record:
        """Record number `record` (in manifest order), parsed."""
        return self.records.record(record)

    def __getitem__(self, batch: int):
        records = self.batch_records(batch)
        n, size, s = len(records), self.input_size, self.grid_size
        batch_images = np.empty((n, size, size, 3), np.float32)
        depth = targets.NUM_CHANNELS + 1 if self.with_ignore else targets.NUM_CHANNELS
        batch_targets = np.empty((n, s, s, depth), np.float32)
        flips = self._flips(batch, n)
        for i, record in enumerate(records):
            pixels, batch_targets[i], _ = self.records.item(int(record), bool(flips[i]))
            # Scaled one image at a time, while its pixels are still in cache.
            np.multiply(pixels, _SCALE, out=batch_images[i], dtype=np.float32)
            batch_images[i] -= 1.0
        return batch_images, batch_targets

    def _flips(self, batch: int, n: int) -> np.ndarray:
        if not self.augment:
            return np.zeros(n, bool)
        return np.random.default_rng([self.seed, self.epoch, batch % len(self), 1]).random(n) < 0.5
