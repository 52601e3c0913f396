"""Whether a build is still running: its lease, what the lease file says, and how often it beats.

A build's lease `.{split}.{build}.lease` (reader.core.layout) is written when the build starts
(pipeline.commit.begin), refreshed by its shard writers at most every HEARTBEAT_S per process,
and removed once the build has committed or failed. This module owns the lease's bytes, the
judgement alive or over, and the pacing of the refreshes; writing and removing the file is the
commit protocol's (pipeline.commit).

A lease is alive until LEASE_TIMEOUT_S pass without a heartbeat (a Dataflow job whose launcher
has exited, a crashed worker); one held by a process of this host is over as soon as that
process is gone (so rerunning a crashed local build clears its leftovers at once). A heartbeat
dated more than LEASE_TIMEOUT_S ahead of now is not believed (no store's clock is an hour off;
a file touched with a future date would otherwise hold its build alive until then): that lease
is over. A lease that cannot be read as one (not a regular file, a link out of the directory,
too large, not a lease's JSON) is judged by its age alone; it is never read past
reader.core.storage.LEASE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import time

LEASE_TIMEOUT_S = 3600.0
HEARTBEAT_S = 60.0


def host_id() -> str:
    """Names the process-id space of this process: the host name, the boot, and the PID
    namespace (two containers of one pod may share a host name, never a PID namespace). A lease
    whose `host` is this one names a process that `os.kill(pid, 0)` can ask about."""
    parts = [socket.gethostname()]
    for probe in (
        lambda: pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        lambda: os.readlink("/proc/self/ns/pid"),
    ):
        try:
            parts.append(probe())
        except OSError:
            parts.append("?")
    return "/".join(parts)


_MAX_PID = 1 << 22  # Linux's highest pid_max


@dataclasses.dataclass(frozen=True)
class Lease:
    """What a lease file says: which build, run by which process, since when."""

    build: str
    split: str
    host: str | None
    pid: int | None
    started: float

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Lease | None:
        """The lease `data` holds, or None when it is not one of ours (judged by its age alone)."""
        try:
            raw = json.loads(data)
            host, pid = raw.get("host"), raw.get("pid")
            if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < _MAX_PID:
                host = pid = None  # names no process we could ask about
            return cls(str(raw["build"]), str(raw["split"]), host, pid, float(raw["started"]))
        except Exception:  # any bytes at all: not JSON, too deep (RecursionError), not an object...
            return None

    def alive(self, updated: float, now: float) -> bool:
        """`updated`: when the lease was last written (its heartbeat), by the store's clock."""
        if self.host is not None and self.host == host_id() and self.pid is not None and not _process_exists(self.pid):
            return False  # a local build whose process is gone: over at once
        # Elsewhere (or a process id used again since): alive while it beats.
        return _beating(updated, now)


def _beating(updated: float, now: float) -> bool:
    """Whether a heartbeat at `updated` still holds at `now`: less than LEASE_TIMEOUT_S ago, and
    not more than that ahead (a date that far in the future is no heartbeat)."""
    return -LEASE_TIMEOUT_S <= now - updated < LEASE_TIMEOUT_S


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def lease_alive(lease: Lease | None, updated: float, now: float) -> bool:
    """Whether a lease file last written at `updated` (store clock) still holds at `now`;
    `lease`: its parsed bytes, None when they were not a lease (then its age alone decides)."""
    return lease.alive(updated, now) if lease is not None else _beating(updated, now)


# Per process and build: when its lease was last written from here. Every shard writer of a
# process beats; one write per HEARTBEAT_S is all a lease needs.
_last_heartbeat: dict[str, float] = {}


def heartbeat_due(build: str, force: bool = False) -> bool:
    """Whether this process should write the lease of `build` now (always when `force`);
    True also counts it as written."""
    now = time.monotonic()
    if not force and now - _last_heartbeat.get(build, -HEARTBEAT_S) < HEARTBEAT_S:
        return False
    _last_heartbeat[build] = now
    return True


def written(build: str) -> None:
    """Records that this process has just written the lease of `build`."""
    _last_heartbeat[build] = time.monotonic()
