"""`ShardSequence`: a split's shards as a Keras 3 `PyDataset`, with random access to any record.

    sequence = reader.ShardSequence("shards", "train", batch_size=32, shuffle=True, seed=0, workers=2)
    model.fit(sequence, epochs=10, shuffle=False)   # the sequence shuffles; see below

Batches are numpy arrays of the layout `reader.make_dataset` yields: images float32
[B, size, size, 3] in [-1, 1], targets float32 [B, S, S, 5] (or [B, S, S, 6] with the ignore
mask as channel 5, `with_ignore=True`). Without shuffling, the order is the manifest's (shards in
turn, each in file order), the same as `make_dataset(..., training=False)`. JPEG is decoded with
libjpeg's accurate integer DCT (Pillow's), so the pixels equal make_dataset's only with its
`dct_method="INTEGER_ACCURATE"` (its default, TensorFlow's INTEGER_FAST, may differ slightly).

Random access: every record's byte span comes from an index of the shards' record headers
(`reader.data.shard_index`, which measures and hashes each shard as it indexes it; cached next
to the shards as `{split}.index.json`, keyed by the manifest's size and sha256 of each shard and
each shard file's size, mtime and inode). Records are read with `os.pread` (no shared file
position: safe across threads and forked workers), or one ranged read each on gs:// and s3://, and checked against their checksums,
then parsed by `reader.core.schema.parse_features` (only the keys a batch needs) and decoded by
`reader.core.images.decode_stored_image`.

Errors name the shard (and record): a shard the manifest lists but the directory lacks fails
the constructor (FileNotFoundError), as does a shard holding more or fewer records than its
manifest entry, or of another sha256 (ValueError; hashed as it is indexed), and a split with no
record (ValueError); a damaged record raises `reader.core.tfrecord.CorruptRecordError` with
the shard, record and byte offset; a record that does not parse or decode as the manifest's
config says (another schema, a malformed Example, another grid or image size) raises
`reader.core.schema.SchemaError`: "val-00001-of-00004.<build>.tfrecord: record 17: missing key
'target/grid'", as does one whose targets (or boxes, when flipping) are not finite numbers
("...: record 17: target/grid: expected finite numbers, found nan (value 4 of 245)"). The reason is `reader.core.schema.record_problem`'s (the checker's words),
worked out only for that record.

Shuffling: `shuffle=True` draws a permutation of all records for every epoch from
(seed, epoch), a true global shuffle; `on_epoch_end` moves to the next epoch. Keras also shuffles
the order of batches of a PyDataset unless `model.fit(..., shuffle=False)`; pass that for a
run that the seed alone decides.

Workers: `workers=N` reads batches in N threads (JPEG decoding releases the GIL), or in N
processes with `use_multiprocessing=True`; the object pickles without open files. Works under
the TensorFlow, JAX and PyTorch Keras backends: batches are plain numpy, and nothing here
imports TensorFlow (except `tf.io.gfile` for gs:// paths; s3:// goes through boto3).
"""

from __future__ import annotations

import math
import os
import threading

import keras
import numpy as np

from reader.core import boxes as box_formats
from reader.core import images, schema, targets, tfrecord
from reader.core import storage as files
from reader.core import manifest as manifests
from reader.data import augment as augmentation
from reader.data.shard_index import load_index

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
        self.manifest = manifests.load(data_dir, split)
        if self.manifest.num_records == 0:
            raise ValueError(manifests.no_records(data_dir, split))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else int(seed)
        self.augment = augment
        self.with_ignore = with_ignore
        self.drop_remainder = drop_remainder
        self.config = self.manifest.config
        self.input_size = self.config.input_size
        self.grid_size = self.config.grid_size
        self._paths = self.manifest.shard_paths()
        for entry, path in zip(self.manifest.shards, self._paths):
            # The index cache would let a missing shard (or a FIFO, a link out of the directory, a
            # shard larger than its entry) go unnoticed until its first batch.
            try:
                files.check_file(path, files.shard_bound(entry.bytes))
            except FileNotFoundError:
                raise FileNotFoundError(manifests.missing_shard(path, split)) from None
        self.index = load_index(self.manifest, write_cache=cache_index, read_cache=cache_index)
        if drop_remainder and self.num_records < batch_size:
            raise ValueError(f"{split} has {self.num_records} records, fewer than one batch of {batch_size}")
        self.epoch = 0
        self._order = self._permutation(0)
        self._files = _Files()

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
        shard, span = self.index.locate(record)
        path, name = self._paths[shard], self.manifest.shards[shard].file
        if files.is_local(path):
            fd = self._files.fd(path.removeprefix("file://"))
            chunk = os.pread(fd, span.end - span.offset, span.offset)
        else:
            f = self._files.remote(path)
            f.seek(span.offset)
            chunk = f.read(span.end - span.offset)
        return tfrecord.read_record(_Window(chunk, span.offset), name, span)

    def record(self, record: int) -> schema.Record:
        """Record number `record` (in manifest order), parsed."""
        data = self.read(record)
        try:
            return schema.Record.parse(data)
        except Exception as e:
            raise self._unreadable(record, data, e) from None

    def _unreadable(self, record: int, data: bytes, error: Exception) -> schema.SchemaError:
        """The error for a record that failed to parse or decode, naming its shard and index and
        what is wrong (`schema.record_problem`, worked out only now)."""
        shard, span = self.index.locate(record)
        problem = schema.record_problem(data, self.config) or f"{type(error).__name__}: {error}"
        return schema.SchemaError(f"{self.manifest.shards[shard].file}: record {span.index}: {problem}")

    def __getitem__(self, batch: int):
        records = self.batch_records(batch)
        n, size, s = len(records), self.input_size, self.grid_size
        batch_images = np.empty((n, size, size, 3), np.float32)
        depth = targets.NUM_CHANNELS
        batch_targets = np.zeros((n, s, s, depth + 1 if self.with_ignore else depth), np.float32)
        flips = self._flips(batch, n)
        for i, record in enumerate(records):
            data = self.read(int(record))
            try:
                features = schema.parse_features(data, self._keys, grid_size=s)
                pixels = _decode(features, size)
                grid = features[schema.GRID].reshape(s, s, depth)
                ignore = features[schema.IGNORE].reshape(s, s) if self.with_ignore else None
                if flips[i]:
                    pixels, grid, ignore = self._flip(pixels, features)
            except Exception as e:  # a record of another schema, size or grid, an image that does not decode
                raise self._unreadable(int(record), data, e) from None
            if problem := targets.finite_problem(features, self._finite_keys):  # NaN must not reach training
                shard, span = self.index.locate(int(record))
                raise schema.SchemaError(f"{self.manifest.shards[shard].file}: record {span.index}: {problem}")
            # Scaled one image at a time, while its pixels are still in cache.
            np.multiply(pixels, _SCALE, out=batch_images[i], dtype=np.float32)
            batch_images[i] -= 1.0
            batch_targets[i, ..., :depth] = grid
            if self.with_ignore:
                batch_targets[i, ..., depth] = ignore
        return batch_images, batch_targets

    def _flips(self, batch: int, n: int) -> np.ndarray:
        if not self.augment:
            return np.zeros(n, bool)
        return np.random.default_rng([self.seed, self.epoch, batch % len(self), 1]).random(n) < 0.5

    @property
    def _keys(self) -> frozenset[str]:
        keys = {schema.ENCODED, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.GRID}
        if self.with_ignore:
            keys.add(schema.IGNORE)
        if self.augment:
            keys |= {*schema.BOX_KEYS, schema.INVALID, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH}
        return frozenset(keys)

    @property
    def _finite_keys(self) -> tuple[str, ...]:
        return tuple(key for key in schema.FINITE_KEYS if key in self._keys)

    def _flip(self, image: np.ndarray, features: dict):
        boxes = np.stack([features[key] for key in schema.BOX_KEYS], axis=1).reshape(-1, 4)
        placement = box_formats.Placement.fit(
            int(features[schema.ORIGINAL_WIDTH][0]), int(features[schema.ORIGINAL_HEIGHT][0]), self.input_size, self.config.resize
        )
        flipped, _, grid = augmentation.flip_numpy(
            image, boxes, features[schema.INVALID], placement, self.grid_size, self.config.min_face_px
        )
        return flipped, grid.grid, grid.ignore


class _Files:
    """Open shard files of this process: local descriptors (shared by threads: pread has no
    position) and one remote file per thread. Reopens after a fork."""

    def __init__(self):
        self._pid = os.getpid()
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def __reduce__(self):
        return _Files, ()  # open files stay with their process

    def _check_pid(self):
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours to share
            self._pid, self._fds, self._local = os.getpid(), {}, threading.local()

    def fd(self, path: str) -> int:
        self._check_pid()
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = files.open_fd(path, None)  # held to its entry when the sequence was made
        return fd

    def remote(self, path: str):
        self._check_pid()
        opened = getattr(self._local, "files", None)
        if opened is None:
            opened = self._local.files = {}
        if path not in opened:
            opened[path] = files.open_binary(path, None, readahead=0)  # one ranged read per record on s3://
        return opened[path]

    def __del__(self, _getpid=os.getpid, _close=os.close):  # bound now: at exit, module globals may be None already
        if getattr(self, "_pid", None) == _getpid():
            for fd in self._fds.values():
                try:
                    _close(fd)
                except OSError:
                    pass


class _Window:
    """A file-like view of bytes read from `start` of a shard, so that `tfrecord.read_record`
    checks a record read with one pread and names its true offset in errors."""

    def __init__(self, data: bytes, start: int):
        self._data, self._start, self._pos = data, start, start

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos
        return pos

    def read(self, n: int) -> bytes:
        begin = self._pos - self._start
        self._pos += n
        return self._data[begin : begin + n]


# ---- decoding ----------------------------------------------------------------------------


def _decode(features: dict, size: int) -> np.ndarray:
    """A record's image as uint8 [size, size, 3], decoded as image/format says."""
    height, width = int(features[schema.HEIGHT][0]), int(features[schema.WIDTH][0])
    if (height, width) != (size, size):
        raise schema.SchemaError(f"expected a {size}x{size} image, found {height}x{width}")
    image_format = features[schema.FORMAT][0].decode("ascii", "replace")
    return images.decode_stored_image(features[schema.ENCODED][0], image_format, size, size, any_mode=True)
