"""Incremental builds: the images an earlier build prepared, reused by their source's content.

Every record holds its stored image (image/encoded) beside the sha256 of the source file it was
made from (image/key/sha256). A build reading a source whose sha256 an earlier build stored, with
the settings that decide the stored image unchanged (`IMAGE_SETTINGS` of the config, and the same
Pillow and libjpeg: `preparation()`), takes that image instead of decoding and resizing the source
again. Only the stored pixels are taken: every other field of the record (the source's size
included, boxes, targets, attributes, the keys derived from them) is made anew from the current
annotation and the source's header, as a clean build makes it. So a folder moved or copied
elsewhere still reuses, a file replaced under its name does not, and every record is the bytes
a clean build writes, whatever else of the earlier record was changed.

Nothing of the earlier build is trusted unchecked:
    its manifest      readable, of this schema, of the same image settings and preparation
    each shard        its size and sha256 those of the manifest's entry, every record's checksum
                      right (else none of its records is reused)
    each record       read back at its place: checksum, the source sha256, format and size; its
                      image/original/{width,height} those the source's header gives (read
                      without decoding: `images.source_size`), within Pillow's pixel limit
Whatever fails is prepared again, and the build says so (`ReuseIndex.notes`, the manifest's
`reuse` block; its `preparation` says which libraries prepared its images). The earlier build
is streamed shard by shard; the index the shard writers get holds about 120 bytes a record in
memory (where it lies, the source's size it says), never the images.

What is still trusted: that the stored pixels are what preparing that source gives, under the
shard's sha256 in the earlier manifest. Checking them would mean decoding and resizing the
source again: the very work reuse saves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import struct
import threading
from collections.abc import Iterable

import apache_beam as beam
import PIL
from PIL import features as pil_features

from pipeline import images
from pipeline.reuse_index import Location, Locations
from reader.core import layout, schema, storage, tfrecord
from reader.core import manifest as manifests
from reader.core.boxes import Placement
from reader.core.config import BuildConfig

_SHA256_HEX = re.compile(rb"[0-9a-f]{64}")
IMAGE_SETTINGS = ("input_size", "resize", "image_format", "jpeg_quality")  # the rest only change targets
_INDEXED_KEYS = frozenset(
    (schema.SHA256, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH, schema.ENCODED)
)


def preparation() -> dict[str, str]:
    """What besides the settings decides a prepared image's bytes: facegrid's own preparation code
    and the image libraries. The manifest records it; reuse needs it equal (another resize
    filter, or another libjpeg, makes other bytes)."""
    return {
        "facegrid": images.PREPARATION_VERSION,
        "pillow": PIL.__version__,
        **{lib: str(pil_features.version(feature)) for lib, feature in _LIBRARIES},
    }


_LIBRARIES = (("libjpeg", "jpg"), ("libjpeg_turbo", "libjpeg_turbo"))


@dataclasses.dataclass(frozen=True)
class ReuseIndex:
    """What the shard writers may reuse: source sha256 -> Location, from build `build`; `notes`
    say what of it was not trusted, for the summary and the manifest."""

    build: str | None = None
    locations: Locations = dataclasses.field(default_factory=Locations)
    notes: tuple[str, ...] = ()

    def without_locations(self) -> ReuseIndex:
        """What the commit needs of it (the build and the notes), without the index itself."""
        return dataclasses.replace(self, locations=Locations())

    def record(self, reused: int, prepared: int, failed: Iterable[str] = ()) -> dict:
        """The manifest's `reuse` block."""
        return {"from": self.build, "reused": reused, "prepared": prepared, "notes": [*self.notes, *failed]}


class NotReusable(Exception):
    """An earlier record that cannot be taken; the message says why."""


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    build: str
    path: str
    entry: manifests.ShardEntry


class EarlierShardsFn(beam.DoFn):
    """The earlier build's directory -> a _ShardTask per shard to index, or a note (str) saying
    why nothing of it is reused. No earlier build: nothing."""

    def __init__(self, split: str, config: BuildConfig, explicit: bool = False):
        super().__init__()
        self._split, self._config, self._explicit = split, config, explicit

    def process(self, directory: str):
        path = storage.join(directory, layout.manifest_name(self._split))
        try:
            data = storage.read_or_none(path, storage.MANIFEST)
            if data is None:
                if self._explicit:  # asked for by --reuse_from: a typo must not go unsaid
                    yield f"no earlier build to reuse: {path} does not exist"
                return
            earlier = manifests.from_raw(manifests.loads(data, path), directory, path, split=self._split)
        except manifests.ManifestError as e:  # names the manifest itself
            yield f"earlier build not reused: {e}"
            return
        except storage.StorageError as e:  # names the path: a FIFO, a link out, too large, unreadable
            yield f"earlier build not reused: {e}"
            return
        except ValueError as e:  # JSON errors
            yield f"earlier build not reused: {path}: {e}"
            return
        if problem := _incompatible(earlier, self._config):
            yield f"earlier build {earlier.build} not reused: {problem}"
            return
        for entry in earlier.shards:
            if entry.records:
                yield _ShardTask(earlier.build, storage.join(directory, entry.file), entry)


def _incompatible(earlier: manifests.Manifest, config: BuildConfig) -> str | None:
    if earlier.build is None:
        return "it was built before build ids"
    differ = [key for key in IMAGE_SETTINGS if getattr(earlier.config, key) != getattr(config, key)]
    if differ:
        return "its images were stored with other settings: " + ", ".join(
            f"{key} {getattr(earlier.config, key)!r} (now {getattr(config, key)!r})" for key in differ
        )
    stored_with = earlier.raw.get("preparation")
    if stored_with != preparation():
        return f"its images were prepared by {stored_with or 'an unrecorded library version'}, this build's by {preparation()}"
    return None


class _HashingReader:
    """A file read front to back, hashing what passes (the shard's sha256 without a second read)."""

    def __init__(self, f):
        self._f, self.digest, self.size = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


class IndexShardFn(beam.DoFn):
    """_ShardTask or note -> ReuseIndex of that shard: every record's Location by its source
    sha256, or a note saying why the shard is not trusted."""

    def __init__(self, config: BuildConfig):
        super().__init__()
        self._config = config

    def process(self, task):
        if isinstance(task, str):
            yield ReuseIndex(notes=(task,))
            return
        name = task.path.rsplit("/", 1)[-1]
        found: list[tuple[str, Location]] = []
        count = 0
        try:
            with storage.open_binary(task.path, storage.shard_bound(task.entry.bytes)) as f:
                reader = _HashingReader(f)
                for span, data, problem in tfrecord.walk_records(reader):
                    if problem is not None:
                        raise NotReusable(f"record {span.index}: {problem}")
                    found.append(_locate(data, task.path, span, self._config))
                    count = span.index + 1
        except NotReusable as e:
            yield ReuseIndex(task.build, notes=(f"earlier shard {name} not reused: {e}",))
            return
        except Exception as e:  # gone, unreadable, not records of this schema: prepare its images again
            yield ReuseIndex(task.build, notes=(f"earlier shard {name} not reused: {storage.describe(e)}",))
            return
        entry = task.entry
        if (reader.size, reader.digest.hexdigest(), count) != (entry.bytes, entry.sha256, entry.records):
            yield ReuseIndex(
                task.build,
                notes=(
                    f"earlier shard {name} not reused: it is not the shard its manifest lists "
                    f"({reader.size} bytes, {count} records; the manifest: {entry.bytes}, {entry.records})",
                ),
            )
            return
        yield ReuseIndex(task.build, Locations.of(found))


def _locate(data: bytes, shard: str, span: tfrecord.RecordSpan, config: BuildConfig) -> tuple[str, Location]:
    """One earlier record's source sha256 and Location. Raises NotReusable (the whole shard is
    then not trusted) for a record that is not of this schema and these image settings."""
    try:
        f = schema.parse_features(data, _INDEXED_KEYS)
    except schema.SchemaError as e:
        raise NotReusable(f"record {span.index}: {e}") from None
    size = config.input_size
    if (f[schema.FORMAT][0].decode("ascii", "replace"), int(f[schema.HEIGHT][0]), int(f[schema.WIDTH][0])) != (
        config.image_format,
        size,
        size,
    ):
        raise NotReusable(f"record {span.index} is not a {size}x{size} {config.image_format} image")
    image = f[schema.ENCODED][0]
    start = data.find(image[:64])  # a short needle is found fast; the whole image checked there
    if not data.startswith(image, start):
        start = data.find(image)
    if config.image_format == "raw" and len(image) != size * size * 3:
        raise NotReusable(f"record {span.index}: {len(image)} raw bytes, not {size * size * 3}")
    where = Location(
        shard, span.offset, span.length, start, len(image), int(f[schema.ORIGINAL_WIDTH][0]), int(f[schema.ORIGINAL_HEIGHT][0])
    )
    sha256 = f[schema.SHA256][0]
    if not _SHA256_HEX.fullmatch(sha256):  # the key the index looks up, and holds in 64 bytes
        raise NotReusable(f"record {span.index}: its source sha256 is not 64 hex digits")
    return sha256.decode("ascii"), where


class CombineIndexes(beam.CombineFn):
    """ReuseIndex parts -> one ReuseIndex (notes sorted, so the manifest says them in one order
    whatever order the shards were indexed in). The accumulator, [build, location parts, notes],
    holds the parts as they come; they are merged once, at the end."""

    def create_accumulator(self):
        return [None, [], []]

    def add_input(self, acc, part: ReuseIndex):
        acc[0] = acc[0] or part.build
        if len(part.locations):
            acc[1].append(part.locations)
        acc[2].extend(part.notes)
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        merged = next(accs)
        for acc in accs:
            merged[0] = merged[0] or acc[0]
            merged[1].extend(acc[1])
            merged[2].extend(acc[2])
        return merged

    def extract_output(self, acc) -> ReuseIndex:
        return ReuseIndex(acc[0], Locations.merged(acc[1]), tuple(sorted(acc[2])))


class EarlierRecords:
    """Reads earlier records back where the index found them, from any thread. A local shard is
    opened once and stays open until `close` (one pread a record instead of an open, a seek, a
    read and a close: each of those lets another image thread take the GIL), up to MAX_OPEN
    shards; any other read, and every read after `close`, is one storage.read_range."""

    MAX_OPEN = 64  # descriptors a shard writer keeps, whatever the earlier build's shard count

    def __init__(self):
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._reading, self._closed = 0, False

    def read(self, path: str, offset: int, length: int) -> bytes | None:
        fd = self._acquire(path) if storage.is_local(path) else None
        if fd is None:
            return storage.read_range(path, offset, length)
        try:
            return os.pread(fd, length, offset)
        finally:
            self._release()

    def _acquire(self, path: str) -> int | None:
        """The open descriptor of `path`, counted as in use; None to read it through storage
        (closed, too many open, or not openable: storage.read_range then says why)."""
        with self._lock:
            if self._closed:
                return None
            fd = self._fds.get(path)
            if fd is None:
                if len(self._fds) >= self.MAX_OPEN:
                    return None
                try:  # indexed (and held to its entry's size) before: located spans only are read
                    fd = self._fds[path] = storage.open_fd(storage.local_path(path), None)
                except OSError:
                    return None
            self._reading += 1
            return fd

    def _release(self) -> None:
        with self._lock:
            self._reading -= 1
            if self._closed and not self._reading:
                self._close_all()

    def close(self) -> None:
        """No descriptor is kept past this: closed now, or by the last read still under way."""
        with self._lock:
            self._closed = True
            if not self._reading:
                self._close_all()

    def _close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> EarlierRecords:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def take(where: Location, sha256: str, source: bytes, config: BuildConfig, earlier: EarlierRecords) -> images.PreparedImage:
    """The image the earlier record of source `sha256` stores, read back at `where` (through
    `earlier`) and checked, and where the source lies on the canvas (from the source's header,
    `source`: the source's bytes). The caller makes the record's other fields anew from the
    current annotation. Raises NotReusable saying why the image cannot be taken."""
    framing = tfrecord.HEADER_BYTES + tfrecord.FOOTER_BYTES
    try:
        framed = earlier.read(where.shard, where.offset, where.length + framing)
    except Exception as e:
        raise NotReusable(f"{where.shard}: cannot read the record at byte {where.offset}: {storage.describe(e)}") from None
    if framed is None:
        raise NotReusable(f"{where.shard}: cannot read the record at byte {where.offset}: the shard is gone")
    if len(framed) != where.length + framing or struct.unpack("<Q", framed[:8])[0] != where.length:
        raise NotReusable(f"{where.shard}: the record at byte {where.offset} is not where the index found it")
    data = framed[tfrecord.HEADER_BYTES : tfrecord.HEADER_BYTES + where.length]
    if tfrecord.masked_crc32c(data) != struct.unpack("<I", framed[-4:])[0]:
        raise NotReusable(f"{where.shard}: record at byte {where.offset}: data checksum mismatch")
    if sha256.encode("ascii") not in data:  # a shard rewritten since it was indexed: never another image
        raise NotReusable(f"{where.shard}: the record at byte {where.offset} does not hold source {sha256}")
    try:
        width, height = images.source_size(source)
    except images.UnusableImage as e:  # preparing it again says so in the errors file
        raise NotReusable(f"the source's header cannot be read ({e})") from None
    if (width, height) != (where.source_width, where.source_height):
        raise NotReusable(
            f"{where.shard}: the record at byte {where.offset} says its source is "
            f"{where.source_width}x{where.source_height} px, the source's header {width}x{height}"
        )
    if not images.within_pixel_limit(width, height):  # a clean build refuses it: so does this one
        raise NotReusable(f"the source's {width}x{height} px are over Pillow's limit")
    image = data[where.image_start : where.image_start + where.image_length]
    return images.PreparedImage(image, Placement.fit(width, height, config.input_size, config.resize))
