"""`ShardRecords`: a split's records with random access, as NumPy arrays, without TensorFlow.

    records = reader.ShardRecords("shards", "train", image_dtype="uint8", augment=True, seed=0)
    loader = torch.utils.data.DataLoader(records, batch_size=64, shuffle=True, num_workers=2)
    dataset = grain.MapDataset.source(records).shuffle(seed=0).batch(64)

Item i is record i in the manifest's order (shards in turn, each in file order): (image,
targets), or (image, targets, meta) with `with_boxes=True` (`collate` batches those). JPEG is
decoded by `reader.core.images` (libjpeg's accurate integer DCT: the pixels of `Record.pixels`
and of make_dataset's `dct_method="INTEGER_ACCURATE"`). `ShardSequence` batches this for Keras.

Random access: every record's byte span comes from an index of the shards' record headers
(`reader.data.shard_index`, which measures and hashes each shard as it indexes it; cached next
to the shards as `{split}.index.json`, keyed by the manifest's size and sha256 of each shard and
each shard file's size, mtime and inode). Records are read with `os.pread` on descriptors each
process opens anew (no shared file position: safe across threads and forked workers), or with
one ranged read each on gs:// and s3://, checked against their checksums, then parsed by
`reader.core.schema.parse_features` (only the keys an item needs). The object pickles without
open files: a DataLoader's or grain's worker processes, forked or spawned, read on their own.

Errors name the shard (and record): a shard the manifest lists but the directory lacks fails
the constructor (FileNotFoundError), as does a shard holding more or fewer records than its
manifest entry, or of another sha256 (ValueError; hashed as it is indexed), and a split with no
record (ValueError); a damaged record raises `reader.core.tfrecord.CorruptRecordError` with
the shard, record and byte offset; a record that does not parse or decode as the manifest's
config says (another schema, a malformed Example, another grid or image size) raises
`reader.core.schema.SchemaError`: "val-00001-of-00004.<build>.tfrecord: record 17: missing key
'target/grid'", as does one whose targets (or boxes, when flipping or with_boxes) are not finite
numbers ("...: record 17: target/grid: expected finite numbers, found nan (value 4 of 245)").
The reason is `reader.core.schema.record_problem`'s (the checker's words), worked out only for
that record.

Flips (augment=True) are drawn per record from (seed, epoch) (`ShardRecords.flipped`):
`set_epoch(epoch)` before each epoch's pass (a DataLoader without persistent workers, a new
grain iterator) gives that epoch's. Nothing here imports TensorFlow: gs:// and s3:// are read
through `reader.core.storage`.
"""

from __future__ import annotations

import operator
import os
import threading

import numpy as np

from reader.core import boxes as box_formats
from reader.core import images, schema, storage, targets, tfrecord
from reader.core import manifest as manifests
from reader.data import augment as augmentation
from reader.data.shard_index import load_index

IMAGE_DTYPES = ("float32", "uint8")
_SCALE = np.float32(1 / 127.5)


class ShardRecords:
    """The records of one split, item i -> NumPy arrays (see the module docstring).

    data_dir: local path, gs:// or s3://; split: train, val or test.
    image_dtype: "float32", the image scaled to [-1, 1] (x / 127.5 - 1, as make_dataset gives
      it), or "uint8", the stored pixels (for a loader that scales on the device).
    with_ignore: targets [S, S, 6], the ignore mask as channel 5 (what train.loss takes);
      otherwise [S, S, 5].
    with_boxes: a third element, `{"boxes": float32 [N, 4] rel_xyxy (flipped with the image),
      "invalid": int64 [N], "filename": str, "original_size": int64 [2] (height, width)}`;
      batch such items with `collate` (the faces differ in number).
    augment: horizontal flip, probability 1/2, drawn per record from (seed, epoch); the targets
      are encoded again from the flipped boxes by the build's rule (`reader.data.augment`).
    cache_index: read and write `{split}.index.json` next to local shards.
    """

    def __init__(
        self,
        data_dir: str,
        split: str,
        *,
        image_dtype: str = "float32",
        with_ignore: bool = False,
        with_boxes: bool = False,
        augment: bool = False,
        seed: int = 0,
        cache_index: bool = True,
    ):
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype: expected one of {IMAGE_DTYPES}, found {image_dtype!r}")
        self.manifest = manifests.load(data_dir, split)
        if self.manifest.num_records == 0:
            raise ValueError(manifests.no_records(data_dir, split))
        self.image_dtype, self.with_ignore, self.with_boxes, self.augment = image_dtype, with_ignore, with_boxes, augment
        self.seed = int(seed)
        self.config = self.manifest.config
        self.input_size, self.grid_size = self.config.input_size, self.config.grid_size
        self._paths = self.manifest.shard_paths()
        for entry, path in zip(self.manifest.shards, self._paths):
            # The index cache would let a missing shard (or a FIFO, a link out of the directory, a
            # shard larger than its entry) go unnoticed until its first read.
            try:
                storage.open_binary(path, storage.shard_bound(entry.bytes), readahead=0).close()
            except FileNotFoundError:
                raise FileNotFoundError(manifests.missing_shard(path, split)) from None
        self.index = load_index(self.manifest, write_cache=cache_index, read_cache=cache_index)
        self._keys = _keys(with_ignore, with_boxes, augment)
        self._finite_keys = tuple(key for key in schema.FINITE_KEYS if key in self._keys)
        self.epoch = 0
        self._flips: tuple[int, np.ndarray] | None = None  # (epoch, flip per record), drawn when first needed
        self._files = _Files(self.manifest)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Flips of epoch `epoch` from now on (augment=True)."""
        self.epoch = int(epoch)

    def flipped(self, record: int) -> bool:
        """Whether record `record` is flipped this epoch: record r of epoch e is when
        `np.random.default_rng([seed, e, 2]).random(len(self))[r] < 0.5`."""
        if not self.augment:
            return False
        if self._flips is None or self._flips[0] != self.epoch:
            self._flips = (self.epoch, np.random.default_rng([self.seed, self.epoch, 2]).random(len(self)) < 0.5)
        return bool(self._flips[1][record])

    def __getitem__(self, i):
        n = len(self)
        record = operator.index(i)
        if not -n <= record < n:
            raise IndexError(f"record {record} out of range for {n} records")
        record %= n
        pixels, target, meta = self.item(record, self.flipped(record))
        if self.image_dtype == "uint8":
            # Writable and contiguous (a decoded JPEG already is; raw bytes and a flip are views):
            # torch.as_tensor takes it as it is.
            image = pixels if pixels.flags.writeable and pixels.flags.c_contiguous else np.array(pixels)
        else:
            image = np.multiply(pixels, _SCALE, dtype=np.float32)
            image -= np.float32(1)
        return (image, target) if meta is None else (image, target, meta)

    # ---- reading -------------------------------------------------------------------------

    def read(self, record: int) -> bytes:
        """The serialized record number `record` (in manifest order), checksums checked."""
        shard, span = self.index.locate(record)
        chunk = self._files.read(shard, span.offset, span.end - span.offset)
        return tfrecord.read_record(_Window(chunk, span.offset), self.manifest.shards[shard].file, span)

    def record(self, record: int) -> schema.Record:
        """Record number `record` (in manifest order), parsed whole."""
        data = self.read(record)
        try:
            return schema.Record.parse(data)
        except Exception as e:
            raise self._unreadable(record, data, e) from None

    def item(self, record: int, flip: bool) -> tuple[np.ndarray, np.ndarray, dict | None]:
        """Record `record`, flipped when `flip`: (the pixels, uint8 [size, size, 3], possibly a
        read-only or mirrored view; the targets, float32 [S, S, 5] or [S, S, 6]; the meta of
        with_boxes, or None). Raises as the module docstring says."""
        data = self.read(record)
        s, depth = self.grid_size, targets.NUM_CHANNELS
        try:
            features = schema.parse_features(data, self._keys, grid_size=s)
            pixels = _decode(features, self.input_size)
            grid = features[schema.GRID].reshape(s, s, depth)
            ignore = features[schema.IGNORE].reshape(s, s) if self.with_ignore else None
            boxes = _boxes(features) if self.with_boxes or flip else None
            if flip:
                pixels, boxes, grid, ignore = self._flip(pixels, boxes, features)
        except Exception as e:  # a record of another schema, size or grid, an image that does not decode
            raise self._unreadable(record, data, e) from None
        if problem := targets.finite_problem(features, self._finite_keys):  # NaN must not reach training
            raise schema.SchemaError(f"{self._where(record)}: {problem}")
        target = np.concatenate([grid, ignore[..., None]], axis=-1) if self.with_ignore else grid
        if not self.with_boxes:
            return pixels, target, None
        meta = {
            "boxes": boxes,
            "invalid": np.asarray(features[schema.INVALID], np.int64),
            "filename": features[schema.FILENAME][0].decode("utf-8", "replace"),
            "original_size": np.array([features[schema.ORIGINAL_HEIGHT][0], features[schema.ORIGINAL_WIDTH][0]], np.int64),
        }
        return pixels, target, meta

    def _where(self, record: int) -> str:
        shard, span = self.index.locate(record)
        return f"{self.manifest.shards[shard].file}: record {span.index}"

    def _unreadable(self, record: int, data: bytes, error: Exception) -> schema.SchemaError:
        """The error for a record that failed to parse or decode, naming its shard and index and
        what is wrong (`schema.record_problem`, worked out only now)."""
        problem = schema.record_problem(data, self.config) or f"{type(error).__name__}: {error}"
        return schema.SchemaError(f"{self._where(record)}: {problem}")

    def _flip(self, image: np.ndarray, boxes: np.ndarray, features: dict):
        placement = box_formats.Placement.fit(
            int(features[schema.ORIGINAL_WIDTH][0]), int(features[schema.ORIGINAL_HEIGHT][0]), self.input_size, self.config.resize
        )
        flipped, flipped_boxes, grid = augmentation.flip_numpy(
            image, boxes, features[schema.INVALID], placement, self.grid_size, self.config.min_face_px
        )
        return flipped, flipped_boxes, grid.grid, grid.ignore


def collate(items):
    """A batch of items: images and targets stacked ([B, ...]); with_boxes' meta as a dict of
    lists (boxes and invalid flags differ in length from record to record) and original_size
    stacked [B, 2]. NumPy throughout: DataLoader(..., collate_fn=collate), or grain's
    .batch(B, batch_fn=collate)."""
    columns = list(zip(*items))
    batch = [np.stack(columns[0]), np.stack(columns[1])]
    if len(columns) == 2:
        return tuple(batch)
    metas = columns[2]
    meta = {key: [m[key] for m in metas] for key in metas[0]}
    meta["original_size"] = np.stack(meta["original_size"])
    return (*batch, meta)


def _keys(with_ignore: bool, with_boxes: bool, augment: bool) -> frozenset[str]:
    keys = {schema.ENCODED, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.GRID}
    if with_ignore:
        keys.add(schema.IGNORE)
    if augment or with_boxes:
        keys |= {*schema.BOX_KEYS, schema.INVALID, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH}
    if with_boxes:
        keys.add(schema.FILENAME)
    return frozenset(keys)


def _boxes(features: dict) -> np.ndarray:
    return np.stack([features[key] for key in schema.BOX_KEYS], axis=1).reshape(-1, 4)


def _decode(features: dict, size: int) -> np.ndarray:
    """A record's image as uint8 [size, size, 3], decoded as image/format says."""
    height, width = int(features[schema.HEIGHT][0]), int(features[schema.WIDTH][0])
    if (height, width) != (size, size):
        raise schema.SchemaError(f"expected a {size}x{size} image, found {height}x{width}")
    image_format = features[schema.FORMAT][0].decode("ascii", "replace")
    return images.decode_stored_image(features[schema.ENCODED][0], image_format, size, size, any_mode=True)


class _Files:
    """Open shard files of this process: local descriptors (shared by threads: pread has no
    position) and one remote file per thread. Reopens after a fork; pickles as nothing open."""

    def __init__(self, manifest: manifests.Manifest):
        self._paths = manifest.shard_paths()
        self._bounds = [storage.shard_bound(entry.bytes) for entry in manifest.shards]
        self._reset()

    def __getstate__(self):
        return {"_paths": self._paths, "_bounds": self._bounds}

    def __setstate__(self, state):
        self._paths, self._bounds = state["_paths"], state["_bounds"]
        self._reset()

    def _reset(self) -> None:
        self._pid, self._local_files, self._lock, self._threads = os.getpid(), {}, threading.Lock(), threading.local()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # a forked worker: the parent's files are not ours to share
            self._reset()

    def read(self, shard: int, offset: int, length: int) -> bytes:
        self._check_pid()
        path = self._paths[shard]
        if storage.is_local(path):
            return os.pread(self._local(shard).fileno(), length, offset)
        opened = getattr(self._threads, "files", None)
        if opened is None:
            opened = self._threads.files = {}
        f = opened.get(shard)
        if f is None:
            f = opened[shard] = storage.open_binary(path, self._bounds[shard], readahead=0)  # one ranged read a record
        f.seek(offset)
        return f.read(length)

    def _local(self, shard: int):
        f = self._local_files.get(shard)
        if f is None:
            with self._lock:
                f = self._local_files.get(shard)
                if f is None:
                    f = self._local_files[shard] = storage.open_binary(self._paths[shard], self._bounds[shard])
        return f


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
