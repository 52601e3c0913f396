"""How a build becomes the split: all or nothing, under crashes, retries and concurrent builds.

The mechanism is the one table formats (Delta Lake, Iceberg) use: data files that are never
overwritten, and one small file, written in a single atomic step, that says which data files
are the table. Here:

- Every file a build writes carries its build id (reader.core.layout): shards, the errors file, its
  lease. Nothing of the earlier build is touched while a build runs, and a build never writes one
  of its own files twice with other bytes (a retried shard writer writes the same bytes again).
- The manifest is the commit point. Written whole in one step (a rename on local disk, one
  object upload on GCS and S3, where there is no rename but copy + delete), it names the files
  of its build: before it, readers that follow the manifest see the earlier build; after it,
  the new one; never a mix.
- After committing, the build removes what no longer belongs to a build: the earlier build's
  files and the leftovers of crashed builds, never the files of a build still running.

A build is running while its lease `.{split}.{build}.lease` says so (pipeline.leases: what it
holds, when it is alive, how often it is refreshed). The lease is written when the build starts,
before any other file of it, refreshed by the shard writers, and removed once the build has
committed or failed.

Every step of `BuildHandle.commit` may run again after a crash or a runner's retry: files are
rewritten with the same bytes, deletes of files already gone are no error, and a commit whose
own files have vanished (removed by another build that judged it dead) is refused, not made.

What it costs on GCS and S3 per build: no copy at all (shards are uploaded to their final names),
one upload for the lease plus one per heartbeat, one each for the errors file and the manifest,
two to three listings of the output directory, one batched delete of the earlier build's files.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import time
import uuid

from pipeline import leases
from reader.core import layout, schema, storage, tfds_metadata
from reader.core import manifest as manifests

_LOG = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """A build that must not finish: too many unusable images, counts that do not add up, or a
    commit that would not be whole. The earlier build is left as it was."""


def new_build_id() -> str:
    return uuid.uuid4().hex[: layout.BUILD_ID_LENGTH]


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """Where and how a split is written.

    build_id: the id this build's files carry; None draws one when the build starts (a classic
      Dataflow template, run many times from one graph, must not reuse one).
    host, pid: the process that runs the build, when it runs on one machine (the local runners;
      `host` as leases.host_id() gives it): its lease ends with that process. None on Dataflow.
    """

    output_dir: str
    split: str
    num_shards: int
    build_id: str | None = None
    host: str | None = None
    pid: int | None = None

    def __post_init__(self):
        if self.split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {self.split!r}")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.build_id is not None:
            layout.check_build_id(self.build_id)

    def path(self, name: str) -> str:
        return storage.join(self.output_dir, name)

    @property
    def manifest_path(self) -> str:
        return self.path(layout.manifest_name(self.split))


@dataclasses.dataclass(frozen=True)
class BuildHandle:
    """One running build: its id, where its files go, and its lease. Made by `begin`; handed
    to every step of the job (it pickles)."""

    output: OutputSpec
    build: str
    lease: leases.Lease

    @property
    def split(self) -> str:
        return self.output.split

    def path(self, name: str) -> str:
        return self.output.path(name)

    def temp_path(self, name: str) -> str:
        """Where a local file of this build is written before it is renamed, whole, to `name`."""
        return self.path(layout.temp_name(self.split, self.build, name, uuid.uuid4().hex[:8]))

    def shard_name(self, index: int) -> str:
        return layout.shard_name(self.split, index, self.output.num_shards, self.build)

    @property
    def errors_name(self) -> str:
        return layout.errors_name(self.split, self.build)

    @property
    def lease_path(self) -> str:
        return self.path(layout.lease_name(self.split, self.build))

    def write(self, name: str, data: bytes) -> None:
        storage.write_bytes(self.path(name), data, temp=self.temp_path(name))

    def create(self, name: str):
        """A file of this build to stream into: it appears at `name` whole, or not at all."""
        return storage.create(self.path(name), temp=self.temp_path(name))

    def heartbeat(self, force: bool = False) -> None:
        """Refreshes the lease (at most every leases.HEARTBEAT_S per process unless `force`). A
        failed refresh is only logged: the build goes on, and its commit checks its files are there."""
        if not leases.heartbeat_due(self.build, force):
            return
        try:
            self.write(layout.lease_name(self.split, self.build), self.lease.to_bytes())
        except storage.StorageError as e:
            _LOG.warning("could not refresh the lease of build %s: %s", self.build, e)

    # ---- the commit ------------------------------------------------------------------------

    def commit(self, manifest: dict, new_files: dict[str, bytes], written: dict[str, int]) -> list[str]:
        """Makes this build the split: writes `new_files` (name -> bytes: the errors file, empty
        shards), checks that they and the files written earlier (`written`: name -> size) are
        all in place, writes the manifest (the commit), removes the files that no longer belong
        to a build, and ends the lease. Returns the names removed. Raises BuildError (nothing
        committed) when a file of the build is missing, StorageError when the store fails."""
        self.heartbeat(force=True)
        for name, data in new_files.items():
            self.write(name, data)
        expected = {**written, **{name: len(data) for name, data in new_files.items()}}
        self._check_in_place(expected)
        manifest_name = layout.manifest_name(self.split)
        self.write(manifest_name, (json.dumps(manifest, indent=2) + "\n").encode())
        # Committed. What follows describes the directory to other tools and tidies up: a
        # failure there is a warning, not a failed build (the next build that commits redoes it).
        try:
            self._describe_directory()
        except Exception as e:  # whatever another split's files hold, this build has committed
            _LOG.warning("%s: build %s committed; could not rewrite the TensorFlow Datasets files: %s", self.split, self.build, e)
            self._remove_quietly(tfds_metadata.DATASET_INFO, tfds_metadata.FEATURES)  # files that lie are worse than none
        try:
            removed = remove_leftovers(self.output, own=self.build)
            storage.delete([self.lease_path])
            # A later build may have committed meanwhile, and seen this lease before it was
            # gone: then this build's files are nobody's, and it removes them itself.
            if current_build(self.output) not in (self.build, None):
                removed += remove_leftovers(self.output, own=self.build)
        except storage.StorageError as e:
            _LOG.warning("%s: build %s committed; could not remove files of other builds: %s", self.split, self.build, e)
            return []
        return removed

    def _describe_directory(self, tries: int = 3) -> None:
        """Rewrites dataset_info.json, features.json and label_map.pbtxt for every split built in
        the directory that TFDS can read (reader.core.tfds_metadata), so that
        tfds.builder_from_directory reads them in place. Another split committing meanwhile is
        caught by reading the manifests again. When no split can be described, the TFDS files
        are removed rather than left naming files that are gone."""
        for _ in range(tries):
            built = _describable(self.output.output_dir)
            if not built:
                self._remove_quietly(tfds_metadata.DATASET_INFO, tfds_metadata.FEATURES)
                return
            unwritten = {}
            for name, data in tfds_metadata.metadata_files(built).items():
                try:  # each file on its own: one that cannot be written (a directory of its name) costs only itself
                    self.write(name, data)
                except storage.StorageError as e:
                    unwritten[name] = e
            if {split: m.build for split, m in _describable(self.output.output_dir).items()} == {
                split: m.build for split, m in built.items()
            }:
                break
        else:
            _LOG.warning("%s: other splits kept committing; the TensorFlow Datasets files may lag behind them", self.split)
        for name, error in unwritten.items():
            _LOG.warning("%s: build %s committed; could not write %s: %s", self.split, self.build, name, error.problem)
            self._remove_quietly(name)  # an earlier one would describe builds that are gone

    def _remove_quietly(self, *names: str) -> None:
        """Removes TFDS files that would lie; what cannot be removed (a directory) stays."""
        for name in names:
            with contextlib.suppress(storage.StorageError):
                storage.delete([self.path(name)])

    def _check_in_place(self, expected: dict[str, int]) -> None:
        found = {e.name: e.size for e in storage.list_dir(self.output.output_dir)}
        wrong = []
        for name, size in sorted(expected.items()):
            if name not in found:
                wrong.append(f"{name} is missing")
            elif found[name] != size:
                wrong.append(f"{name} has {found[name]} bytes, {size} were written")
        if wrong:
            raise BuildError(
                f"{self.split}: not committed, files of build {self.build} are not as written ({'; '.join(wrong[:3])}"
                f"{'; ...' if len(wrong) > 3 else ''}): another build judged this one dead and removed them, or the "
                f"store lost them. The earlier build is untouched; run the build again."
            )

    def abandon(self, keep: tuple[str, ...] = ()) -> None:
        """Removes this build's files (but `keep`) and ends its lease: for a build that failed.
        Nothing of any other build is touched."""
        abandon(self.output.output_dir, self.split, self.build, keep=keep)


def begin(output: OutputSpec) -> BuildHandle:
    """Starts a build: draws its id (unless the spec has one) and writes its lease."""
    build = output.build_id or new_build_id()
    lease = leases.Lease(build, output.split, output.host, output.pid, time.time())
    handle = BuildHandle(output, build, lease)
    # Written before any other file of the build, so that a listing that shows one of its files
    # shows a lease that existed when that file was made (see remove_leftovers). In place, not
    # through a temporary file: that would be a file of the build before its lease, which a
    # build tidying up meanwhile would judge a crashed build's and remove. A lease read while it
    # is being written is no lease yet, and is judged by its age: alive.
    storage.write_bytes(handle.lease_path, lease.to_bytes(), in_place=True)
    leases.written(build)
    return handle


def abandon(output_dir: str, split: str, build: str, keep: tuple[str, ...] = ()) -> None:
    """Removes the files of `build` (but `keep`), its lease last: for a build that failed. A
    build the manifest names (it committed before it failed) keeps its files."""
    lease = layout.lease_name(split, build)
    output = OutputSpec(output_dir, split, 1)
    if current_build(output) == build:
        storage.delete([storage.join(output_dir, lease)])
        return
    mine = [e for e in storage.list_dir(output_dir) if layout.build_of(e.name, split) == build and e.name not in keep]
    storage.delete([e.path for e in mine if e.name != lease])
    storage.delete([storage.join(output_dir, lease)])


def _describable(output_dir: str) -> dict[str, manifests.Manifest]:
    """The manifest of every split built in `output_dir` that TFDS can read: its records hold
    every key features.json describes (the manifest says so: builds before those keys do not),
    it has records, and its shards are named as facegrid names them. Read through the build's
    storage (no TensorFlow on workers); any other split is left out, with a warning."""
    found = {}
    for split in layout.SPLITS:
        path = storage.join(output_dir, layout.manifest_name(split))
        try:
            data = storage.read_or_none(path, storage.MANIFEST)
            if data is None:
                continue
            built = manifests.from_raw(manifests.loads(data, path), output_dir, path, split=split)
            if built.split != split:
                raise ValueError(f"it says split {built.split!r}")
            if sorted(built.raw.get("record_keys") or ()) != sorted(schema.FEATURES_BY_KEY):
                raise ValueError("its records lack keys TFDS would look for (built before them: build it again)")
            if built.num_records == 0:
                raise ValueError("it holds no record")
            tfds_metadata.metadata_files({split: built})  # refuses what it cannot describe
        except Exception as e:  # unreadable, hand-edited, of another layout...
            _LOG.warning("%s: left out of the TensorFlow Datasets files: %s", split, e)
            continue
        found[split] = built
    return found


def current_build(output: OutputSpec) -> str | None:
    """The build id the manifest on disk names (LEGACY_BUILD for builds before build ids), or
    None when there is no readable manifest."""
    return _read_current(output)[0]


def _read_current(output: OutputSpec) -> tuple[str | None, set[str]]:
    """(the build the manifest names, the files it names)."""
    try:
        data = storage.read_or_none(output.manifest_path, storage.MANIFEST)
    except storage.RefusedFile:  # a FIFO, a link out of the directory, too large: names no build
        return None, set()
    try:
        # Read as it is (a damaged manifest still names the files it commits), parsed as the
        # readers parse it: a manifest nested too deeply for Python's json is no manifest.
        raw = manifests.loads(data, output.manifest_path) if data is not None else None
        if not isinstance(raw, dict):
            return None, set()
        named = {s["file"] for s in raw.get("shards", []) if isinstance(s, dict) and isinstance(s.get("file"), str)}
        errors_file = raw.get("errors_file")
        named.add(errors_file if isinstance(errors_file, str) and errors_file else layout.errors_name(output.split))
        build = raw.get("build")
    except (ValueError, TypeError, AttributeError):  # ManifestError, shards not a list
        return None, set()
    if build is not None and not isinstance(build, str):
        return None, set()  # names no build: as an unreadable manifest
    return build or layout.LEGACY_BUILD, named


def remove_leftovers(output: OutputSpec, own: str | None = None, now: float | None = None) -> list[str]:
    """Removes the files of `output.split` that belong to no build: neither to the build the
    manifest names (nor named by that manifest) nor to a build still running. `own`: the build
    calling, which removes its own files too when a later build has committed over it.
    Returns the names removed.

    The order makes it safe against builds that start or commit meanwhile: list the directory,
    then read the leases of the builds listed, then read the manifest. A build writes its lease
    before any other file, and commits before it removes its lease; so a file in the listing
    belongs to a build whose lease is read as present, or that had committed (then the manifest
    read after names it), or that is over.
    """
    split = output.split
    listing = storage.list_dir(output.output_dir)
    by_build: dict[str, list[storage.Entry]] = collections.defaultdict(list)
    for entry in listing:
        build = layout.build_of(entry.name, split)
        if build is not None:
            by_build[build].append(entry)
    listed = {e.name: e for e in listing}
    now = time.time() if now is None else now
    alive = set()
    for build in by_build:
        if build in (own, layout.LEGACY_BUILD):
            continue
        # The listing holds regular files only; a lease of another kind is looked at itself (a
        # link's own time, not its target's).
        lease_entry = listed.get(layout.lease_name(split, build)) or storage.stat(
            output.path(layout.lease_name(split, build)), follow_links=False
        )
        if lease_entry is None:
            continue
        try:
            lease = leases.Lease.from_bytes(storage.read_or_none(lease_entry.path, storage.LEASE))
        except storage.RefusedFile as e:  # a FIFO or directory of that name, a link out, too large: never read
            _LOG.warning("%s; that lease is judged by its age alone", e)
            lease = None
        except storage.StorageError:  # unreadable
            lease = None
        if leases.lease_alive(lease, lease_entry.updated, now):
            alive.add(build)
    current, named = _read_current(output)
    keep = alive | {current}
    doomed = [e for build, entries in by_build.items() if build not in keep for e in entries]
    # The committed build's own files that its manifest does not name: what a crashed attempt
    # of it left (a temporary file), never a file a reader follows.
    doomed += [e for e in by_build.get(current, ()) if e.name not in named and not layout.is_lease(e.name)]
    if doomed:
        _LOG.debug("removing %d files of builds that are over: %s", len(doomed), ", ".join(e.name for e in doomed))
        # Leases last: until the files are gone, a crash here leaves them attributable.
        storage.delete([e.path for e in doomed if not layout.is_lease(e.name)])
        storage.delete([e.path for e in doomed if layout.is_lease(e.name)])
    return sorted(e.name for e in doomed)
