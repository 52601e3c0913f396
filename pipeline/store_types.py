"""What the stores hand back and raise: a listed file, and a failure said in one line.

Entry is one file of a listing; StorageError a fault of the build's storage (never of one image);
RefusedFile a file that reader.core.files' rule will not read. Apart from pipeline/storage.py so
that the object-store clients (pipeline/stores.py) share them without a circular import.
"""

from __future__ import annotations

import dataclasses

from apache_beam.io.filesystem import BeamIOError

from reader.core import files


class StorageError(RuntimeError):
    """The store refused an operation: `path: what happened`. A fault of the build's storage,
    never of one image."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __reduce__(self):  # Beam pickles a worker's exception back to the launcher
        return type(self), (self.path, self.problem)


class RefusedFile(StorageError):
    """A file that reader.core.files' rule refuses to read (not a regular file, a link leading out
    of its directory, larger than its kind may be): there, and not one to read. Never a fault of
    the store."""

    @classmethod
    def of(cls, refused: files.RefusedFile) -> RefusedFile:
        return cls(refused.path, refused.problem)


def describe(error: BaseException) -> str:
    """A one-line account of a storage exception (OSError's strerror, S3's error code, ...)."""
    if isinstance(error, (StorageError, files.RefusedFile)):
        return error.problem
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, BeamIOError) and error.exception_details:
        return "; ".join(describe(e) for e in error.exception_details.values())
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code', '')}: {response['Error'].get('Message', '')}".strip(": ")
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip(": ")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of a directory listing. `updated`: seconds since the epoch, by the store's clock."""

    name: str
    path: str
    size: int
    updated: float
