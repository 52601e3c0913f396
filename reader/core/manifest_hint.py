"""What to say when a data directory holds no manifest of the split asked for: the splits it
does hold, the folders below it that hold some (a parent directory given), or that the bucket
itself does not exist."""

from __future__ import annotations

import os

from reader.core import layout, storage

_SUBFOLDERS = 64  # looked into, at most, for manifests one level down (local directories)


def _splits(names: list[str]) -> list[str]:
    return [split for split in layout.SPLITS if layout.manifest_name(split) in names]


def _listing(directory: str) -> tuple[list[str] | None, str | None]:
    """(file names, None), or (None, what is wrong with the directory)."""
    try:
        return storage.list_names(directory), None
    except OSError as e:  # the storage layer's, on every scheme
        if storage.scheme(directory) == "s3" and "NoSuchBucket" in str(e):
            return None, f"no bucket {directory.removeprefix('s3://').split('/')[0]} on S3"
        if isinstance(e, FileNotFoundError):
            return None, f"no directory {directory}" if storage.is_local(
                directory
            ) else f"nothing at {directory} (no such bucket or folder)"
        # S3 unreachable, no credentials, permissions: say so rather than guess
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0].removeprefix(f"{directory}: ")


def missing(data_dir: str, split: str) -> str:
    """The text after "FILE: " for a data directory without `split`'s manifest."""
    build = f"build the split first (python -m pipeline ... --split={split})"
    names, problem = _listing(data_dir)
    if problem is not None:
        return f"no manifest: {problem}"
    here = _splits(names)
    if here:
        return f"no manifest; {data_dir} holds the splits {', '.join(here)}: give one of them, or {build}"
    below = {}
    if storage.is_local(data_dir):
        for name in names[:_SUBFOLDERS]:
            folder = os.path.join(data_dir.removeprefix("file://"), name)
            if os.path.isdir(folder) and os.access(folder, os.R_OK) and (found := _splits(sorted(os.listdir(folder)))):
                below[folder] = found
    if below:
        where = "; ".join(f"{folder} holds {', '.join(splits)}" for folder, splits in below.items())
        return f"no manifest here, but {where}: give that folder as the data directory, or {build}"
    return f"no manifest; {build}"
