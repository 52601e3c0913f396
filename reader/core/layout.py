"""File names of a build: what one split writes into its output directory.

    {split}.manifest.json                        the commit point: names every file of the build
    {split}-00000-of-0000N.{build}.tfrecord ...  the shards of build `{build}`
    {split}.{build}.errors.jsonl                 its unusable images, one JSON object each
    .{split}.{build}.lease                       present while build `{build}` runs
    .{split}.{build}.probe                       written and removed at once by a build's launcher
    .{split}....tmp                              a local file being written (renamed when whole)
    {split}.index.json                           record offsets, cached by the Keras reader (not the build)

`{build}` is 12 hex digits drawn at random when a build starts. A build never writes a file of
another build, and never writes one of its own twice with other bytes, so the earlier build's
files stay as they are until a new manifest, written in one atomic step, names the new ones.
Files that the manifest does not name belong to a build still running or to one that crashed;
the next build that commits removes the latter (see `pipeline.commit`).

Builds before this layout wrote `{split}-00000-of-0000N.tfrecord` and `{split}.errors.jsonl`
with no build id; their manifests name those files, and every reader follows the manifest.

A record's shard and its place inside the shard come from `record_key`, a stable hash of its
filename.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord"
BUILD_ID_LENGTH = 12
_BUILD = rf"[0-9a-f]{{{BUILD_ID_LENGTH}}}"
LEGACY_ERRORS = "{split}.errors.jsonl"


def check_build_id(build: str) -> str:
    if not re.fullmatch(_BUILD, build):
        raise ValueError(f"a build id is {BUILD_ID_LENGTH} lowercase hex digits, got {build!r}")
    return build


def shard_name(split: str, index: int, num_shards: int, build: str | None = None) -> str:
    """The shard's file name; `build` None gives the name builds before build ids wrote."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}")
    tag = "" if build is None else f".{check_build_id(build)}"
    return f"{split}-{index:05d}-of-{num_shards:05d}{tag}{SHARD_SUFFIX}"


_SHARD = re.compile(
    rf"(?P<split>.+?)-(?P<index>\d{{5,}})-of-(?P<count>\d{{5,}})(?:\.(?P<build>{_BUILD}))?{re.escape(SHARD_SUFFIX)}"
)


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, num_shards) of a shard file name (with or without a build id), or None."""
    match = _SHARD.fullmatch(name)
    return None if match is None else (match["split"], int(match["index"]), int(match["count"]))


def manifest_name(split: str) -> str:
    return f"{split}.manifest.json"


def errors_name(split: str, build: str | None = None) -> str:
    """The errors file of build `build`; None gives the name builds before build ids wrote."""
    return LEGACY_ERRORS.format(split=split) if build is None else f"{split}.{check_build_id(build)}.errors.jsonl"


def lease_name(split: str, build: str) -> str:
    """Held while the build runs: its host, process and heartbeat (see pipeline.commit)."""
    return f".{split}.{check_build_id(build)}.lease"


def probe_name(split: str, build: str) -> str:
    """What a build's launcher writes and removes to learn that the output directory takes files."""
    return f".{split}.{check_build_id(build)}.probe"


def temp_name(split: str, build: str, name: str, attempt: str) -> str:
    """Where a local file of the build is written before it is renamed to `name` whole."""
    return f".{split}.{check_build_id(build)}.{attempt}.{name}.tmp"


def index_name(split: str) -> str:
    """The Keras reader's cache of record offsets, written beside the shards on first use."""
    return f"{split}.index.json"


LEGACY_BUILD = ""  # what build_of says of the files of builds before build ids
_OWNED = (
    re.compile(rf"\.(?P<split>[^.]+)\.(?P<build>{_BUILD})\.(?:lease|probe|[^/]+\.tmp)"),
    re.compile(rf"(?P<split>[^.]+)\.(?P<build>{_BUILD})\.errors\.jsonl"),
    re.compile(rf"(?P<split>.+?)-\d{{5,}}-of-\d{{5,}}\.(?P<build>{_BUILD}){re.escape(SHARD_SUFFIX)}"),
    # Files of builds before build ids: their shards, errors file and temporary files.
    re.compile(rf"(?P<split>.+?)-\d{{5,}}-of-\d{{5,}}{re.escape(SHARD_SUFFIX)}"),
    re.compile(r"(?P<split>[^.]+)\.errors\.jsonl"),
    re.compile(r"\.(?P<split>[^.-]+)-tmp-.*"),
)


def build_of(name: str, split: str) -> str | None:
    """The build a file of `split` belongs to: its id, LEGACY_BUILD for the files of builds
    before build ids, None for anything else (the manifest, the index cache, other splits,
    files of other programs)."""
    for pattern in _OWNED:
        match = pattern.fullmatch(name)
        if match is not None and match["split"] == split:
            return match.groupdict().get("build") or LEGACY_BUILD
    return None


def is_lease(name: str) -> bool:
    return name.startswith(".") and name.endswith(".lease")


def record_key(filename: str) -> bytes:
    """The stable hash that places a record: its shard, and its rank inside the shard."""
    return hashlib.sha256(filename.encode("utf-8")).digest()


def shard_of(filename: str, num_shards: int) -> int:
    """The shard a record belongs in, of `num_shards`."""
    return int.from_bytes(record_key(filename)[:8], "big") % num_shards
