"""ShardRecords benchmark: the TensorFlow-free reader through a PyTorch DataLoader against the
2-core decode limit of the same stored JPEGs.

In one run on the val build, taking turns (benchmarks/read.py's `_race`: every candidate timed in
turn, `repeats` rounds after a warm-up round, each one's fastest pass kept):
- `reader.ShardRecords(image_dtype="uint8")` through `torch.utils.data.DataLoader(batch_size=64,
  shuffle=True, num_workers=2, persistent_workers=True)`: images/s over an epoch, the batches
  reaching the training process as torch tensors; and with the DataLoader's default,
  workers forked anew every epoch (a fixed cost an epoch: worker start-up and teardown).
- the decode limit: the same stored JPEG bytes, held in memory, decoded by 2 worker processes
  (one per core, started once) with each libjpeg-turbo decoder Python has here, Pillow's
  (`Image.open` + `np.asarray`) and OpenCV's (`cv2.imdecode`), to uint8 arrays; the faster one
  is the limit.
- the same DataLoader over `InMemoryJpegs` (the JPEGs held in memory, decoded by the faster
  decoder in the dataset): what the DataLoader itself costs, beside the decode; ShardRecords'
  own cost (reading, checking, parsing records) is what separates the two.
Records/s counts records (images). Each pass also counts the CPU seconds it cost (this process
and its workers): on a shared machine the wall clock depends on the others' load, the CPU cost
much less, so the ratio of records per CPU second says what an idle machine would show.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import resource
import sys
import time

import numpy as np

from benchmarks.data import BenchData
from benchmarks.read import SPLIT, _race, _stored_jpegs

BATCH_SIZE = 64
WORKERS = 2

_IMAGES: list[bytes] = []  # the stored JPEGs, in the decode workers (inherited by fork)


@dataclasses.dataclass(frozen=True)
class Pass:
    """One timed pass: records read, wall-clock seconds, and CPU seconds of this process and of
    the worker processes that ended during it (what the pass cost the machine: a shared
    machine slows the wall clock, much less the CPU time)."""

    records: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Records per CPU second: on an idle 2-core machine, twice this bounds the rate."""
        return self.records / self.cpu_seconds


def _cpu() -> float:
    """CPU seconds of this process, of its children that ended, and of those still running."""
    import psutil

    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    running = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # ended meanwhile: counted in RUSAGE_CHILDREN once reaped
            continue
        running += times.user + times.system
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime + running


def _timed(work) -> Pass:
    start, cpu = time.perf_counter(), _cpu()
    records = work()
    return Pass(records, time.perf_counter() - start, _cpu() - cpu)


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image)


def _decode_opencv(data: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


DECODERS = {"pillow": _decode_pillow, "opencv": _decode_opencv}


def _decode_share(task: tuple[str, int]) -> int:
    name, start = task
    decode = DECODERS[name]
    for data in _IMAGES[start::WORKERS]:
        decode(data)
    return len(_IMAGES[start::WORKERS])


def _decode_limit(pool, name: str):
    """One pass: every image decoded once by the pool's `WORKERS` processes (started once, as
    the DataLoader's persistent workers are), each taking every WORKERS-th image."""

    def work() -> int:
        return sum(pool.map(_decode_share, [(name, i) for i in range(WORKERS)], chunksize=1))

    return lambda: _timed(work)


class InMemoryJpegs:
    """A map-style dataset of the stored JPEGs held in memory, decoded by the faster decoder
    (item i: (uint8 image, zero targets)): the most any dataset of these images gets through the
    same DataLoader, which costs by itself (collating every batch into new shared memory in the
    worker, handing it to the training process) besides the decode."""

    def __init__(self, images: list[bytes], decoder: str):
        self.images, self.decoder = images, decoder
        self._targets = np.zeros((7, 7, 5), np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return DECODERS[self.decoder](self.images[i]), self._targets


def _loader_pass(loader):
    def work() -> int:
        records = 0
        for images, _ in loader:
            records += int(images.shape[0])
        return records

    return lambda: _timed(work)


def available_decoders() -> list[str]:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return ["pillow"]
    return ["pillow", "opencv"]


def run(data: BenchData, repeats: int = 3) -> dict:
    """Measures ShardRecords through a DataLoader against the decode limit; prints and returns
    the figures (records/s, and the ratio to the faster decoder's limit)."""
    import torch

    import reader

    global _IMAGES
    _IMAGES = _stored_jpegs(data.shards_jpeg)
    records = len(_IMAGES)
    decoders = available_decoders()
    for name in decoders:  # the same pixels, or the limit is not a limit of this reader's work
        assert all(np.array_equal(DECODERS[name](d), _decode_pillow(d)) for d in _IMAGES[:50]), name
    dataset = reader.ShardRecords(data.shards_jpeg, SPLIT, image_dtype="uint8")

    def loader(source=dataset, **options):
        return torch.utils.data.DataLoader(
            source,
            batch_size=BATCH_SIZE,
            shuffle=True,
            num_workers=WORKERS,
            generator=torch.Generator().manual_seed(0),
            **options,
        )

    fastest = decoders[-1]  # OpenCV where it is installed (ShardRecords decodes with it then), else Pillow

    load_before = os.getloadavg()[0]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        passes = {f"decode_limit_{name}": _decode_limit(pool, name) for name in decoders}
        passes["shard_records_dataloader"] = _loader_pass(loader(persistent_workers=True))
        passes["in_memory_jpegs_dataloader"] = _loader_pass(loader(InMemoryJpegs(_IMAGES, fastest), persistent_workers=True))
        # DataLoader's default: workers forked anew each epoch, a fixed cost per epoch (~0.2 CPU s a worker here).
        passes["shard_records_dataloader_fresh_workers"] = _loader_pass(loader())
        found = _race(passes, repeats)
    _IMAGES = []
    figures: dict = {"records": records, "batch_size": BATCH_SIZE, "workers": WORKERS, "repeats": repeats,
                     "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip
    for name, best in found.items():  # each one's fastest pass, and what that pass cost
        figures[name] = round(best.rate, 1)
        figures[f"{name}_per_cpu_s"] = round(best.cpu_rate, 1)
    limit = max(decoders, key=lambda name: figures[f"decode_limit_{name}"])
    figures["decode_limit_decoder"] = limit
    figures["ratio_to_limit"] = round(figures["shard_records_dataloader"] / figures[f"decode_limit_{limit}"], 3)
    cheapest = max(decoders, key=lambda name: figures[f"decode_limit_{name}_per_cpu_s"])
    figures["cpu_ratio_to_limit"] = round(
        figures["shard_records_dataloader_per_cpu_s"] / figures[f"decode_limit_{cheapest}_per_cpu_s"], 3
    )
    print(f"\nShardRecords benchmark: {records} records ({SPLIT}), batch {BATCH_SIZE}, {WORKERS} workers, "
          f"best of {repeats} interleaved rounds, load average (1 min) {figures['load_average_1min']} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'what':32s} {'records/s':>10s} {'records/CPU s':>14s}")
    for name in found:
        print(f"{name:32s} {figures[name]:10.0f} {figures[name + '_per_cpu_s']:14.0f}")
    figures["ratio_to_in_memory_dataloader"] = round(
        figures["shard_records_dataloader"] / figures["in_memory_jpegs_dataloader"], 3
    )
    figures["cpu_ratio_to_in_memory_dataloader"] = round(
        figures["shard_records_dataloader_per_cpu_s"] / figures["in_memory_jpegs_dataloader_per_cpu_s"], 3
    )
    print(f"ShardRecords (uint8) via DataLoader / decode limit ({limit}): {figures['ratio_to_limit']:.2f} (goal >= 0.8); "
          f"per CPU second (the cost, which load hardly changes): {figures['cpu_ratio_to_limit']:.2f}")  # fmt: skip
    print(f"ShardRecords via DataLoader / in-memory JPEGs via the same DataLoader: {figures['ratio_to_in_memory_dataloader']:.2f}; "
          f"per CPU second: {figures['cpu_ratio_to_in_memory_dataloader']:.2f}")  # fmt: skip
    sys.stdout.flush()
    return figures


if __name__ == "__main__":  # python -m benchmarks.records ANNOTATIONS IMAGES_DIR SHARDS_JPEG SHARDS_RAW
    print(run(BenchData(*sys.argv[1:5])))
