"""Fault injection for the commit: stores to run it on, a build caught just before its commit,
and a process that dies at a chosen storage operation of that commit.

    python -m tests.commit_faults STATE K [BEAM FLAGS...]
    python -m tests.commit_faults --serve STATE [BEAM FLAGS...]
    python -m tests.commit_faults --build K [FLAGS OF python -m pipeline...]
    python -m tests.commit_faults --vanish K BUCKET [FLAGS OF python -m pipeline...]

The first loads a pickled `Pending` build and runs its finalize step (the FinalizeFn, as a
runner runs it); the second runs a whole build as `python -m pipeline` does. Either process
ends with os._exit(CRASHED) right before the K-th operation that changes the store: a file
created (before its upload or write starts), a local temporary file renamed into place, one
file deleted. Nothing after that point runs, as in a real crash: no `finally`, no cleanup.
K = -1 runs to the end and prints the operations, one a line. `--vanish` runs a whole build
whose S3 bucket is emptied and deleted right before its K-th operation, and goes on. `--serve` reads one K a line
from stdin and answers each with the exit status of a process forked to run the step with that
K: imports paid once, every crash still a process of its own that dies where it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib
import pickle
import sys
from collections.abc import Iterator

CRASHED = 86  # the exit status of a process that died at its planned operation


@dataclasses.dataclass(frozen=True)
class Pending:
    """A build whose shards are written and whose finalize step has not run: what FinalizeFn
    gets (the shards, each with its errors-file lines; the handle and totals as side inputs)."""

    handle: object  # commit.BuildHandle
    shards: list
    annotated: dict
    config: object  # records.BuildConfig
    max_error_fraction: float = 0.5


def finalize(pending: Pending) -> dict:
    """Runs the build's finalize step in this process; returns the manifest it committed."""
    from pipeline import finalize as finalize_step

    fn = finalize_step.FinalizeFn(pending.config, pending.max_error_fraction)
    (manifest,) = fn.process((0, pending.shards), pending.handle, pending.annotated)
    return manifest


@contextlib.contextmanager
def operations(on_operation) -> Iterator[None]:
    """Calls on_operation(kind, name) before every operation that changes the store."""
    from pipeline import storage

    original_create, original_delete, original_replace = storage.create, storage.delete, os.replace

    @contextlib.contextmanager
    def create(path, temp=None):
        on_operation("create", path.rsplit("/", 1)[-1])
        with original_create(path, temp) as f:
            yield f

    def delete(paths):
        for path in paths:  # one at a time, so that a crash can fall between two of them
            on_operation("delete", path.rsplit("/", 1)[-1])
            original_delete([path])

    def replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tmp"):
            on_operation("rename", os.path.basename(str(dst)))
        return original_replace(src, dst, *args, **kwargs)

    storage.create, storage.delete, os.replace = create, delete, replace
    try:
        yield
    finally:
        storage.create, storage.delete, os.replace = original_create, original_delete, original_replace


def list_operations(pending: Pending) -> list[str]:
    """The operations of the finalize step, run here to its end: 'kind name' each."""
    seen: list[str] = []
    with operations(lambda kind, name: seen.append(f"{kind} {name}")):
        finalize(pending)
    return seen


def main(argv: list[str]) -> int:
    count, seen = 0, []

    def maybe_crash(kind, name):
        nonlocal count
        seen.append(f"{kind} {name}")
        if count == k:
            sys.stdout.flush()
            os._exit(CRASHED)
        count += 1

    if argv[0] == "--build":
        from pipeline import cli

        k = int(argv[1])
        with operations(maybe_crash):
            status = cli.main(argv[2:])
        if k < 0:
            print("\n".join(seen))
        return status

    if argv[0] == "--vanish":
        from pipeline import cli, storage

        k, bucket, build_flags = int(argv[1]), argv[2], argv[3:]

        def vanish(kind, name):
            nonlocal count
            if count == k:
                client = storage.s3_client()
                for o in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=o["Key"])
                client.delete_bucket(Bucket=bucket)
            count += 1

        with operations(vanish):
            return cli.main(build_flags)

    if argv[0] == "--serve":
        return serve(argv[1], argv[2:])
    state, k, beam_flags = argv[0], int(argv[1]), argv[2:]
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(beam_flags))
    pending = pickle.loads(pathlib.Path(state).read_bytes())
    with operations(maybe_crash):
        finalize(pending)
    if k < 0:
        print("\n".join(seen))
    return 0  # K was past the last operation


def serve(state: str, beam_flags: list[str]) -> int:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import finalize  # noqa: F401  (imported before forking, once)

    FileSystems.set_options(PipelineOptions(beam_flags))
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                main([state, line.strip(), *beam_flags])
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
    return 0


class Crasher:
    """A `--serve` process: `crash(k)` runs the finalize step of `state` in a process of its own
    that dies before operation k; returns that process's exit status."""

    def __init__(self, state: pathlib.Path, flags: list[str], env: dict[str, str], cwd: pathlib.Path):
        import subprocess

        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.commit_faults", "--serve", str(state), *flags],
            cwd=cwd, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def crash(self, k: int) -> int:
        self._process.stdin.write(f"{k}\n")
        self._process.stdin.flush()
        return int(self._process.stdout.readline())

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)


# ---- stores --------------------------------------------------------------------------------


@dataclasses.dataclass
class Store:
    """A directory of one store where builds go: local disk, or a bucket on a server on loopback.

    root: the output directory's path as the build takes it; flags, env: what a process needs to
    reach the store (Beam flags; environment variables).
    """

    root: str
    flags: list[str]
    env: dict[str, str]
    _list: object
    _put: object
    _remove: object

    def files(self) -> dict[str, bytes]:
        """{name: bytes} of every file in the directory."""
        return self._list()

    def restore(self, wanted: dict[str, bytes]) -> None:
        """Makes the directory hold exactly `wanted`."""
        for name in set(self.files()) - set(wanted):
            self._remove(name)
        for name, data in wanted.items():
            self._put(name, data)


def local_store(directory: pathlib.Path) -> Store:
    directory.mkdir(parents=True, exist_ok=True)

    def put(name, data):
        (directory / name).write_bytes(data)

    def listing():
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}

    return Store(str(directory), [], {}, listing, put, lambda name: (directory / name).unlink())


def s3_store(s3, bucket: str, prefix: str) -> Store:
    def listing():
        return s3.files(bucket, prefix)

    def put(name, data):
        s3.client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)

    def remove(name):
        s3.client.delete_object(Bucket=bucket, Key=f"{prefix}/{name}")

    return Store(f"s3://{bucket}/{prefix}", s3.beam_flags(), {}, listing, put, remove)


def gcs_store(gcs, bucket: str, prefix: str, env: dict[str, str]) -> Store:
    def listing():
        return gcs.files(bucket, prefix)

    def put(name, data):
        gcs.client.bucket(bucket).blob(f"{prefix}/{name}").upload_from_file(io.BytesIO(data), size=len(data))

    def remove(name):
        gcs.client.bucket(bucket).blob(f"{prefix}/{name}").delete()

    return Store(f"gs://{bucket}/{prefix}", ["--project=facegrid-test"], env, listing, put, remove)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
