"""Fault injection for the commit: stores to run it on, a build caught just before its commit,
and a process that dies at a chosen storage operation of that commit.

    python -m tests.support.commit_faults STATE K [BEAM FLAGS...]
    python -m tests.support.commit_faults --serve STATE [BEAM FLAGS...]
    python -m tests.support.commit_faults --build K [FLAGS OF python -m pipeline...]
    python -m tests.support.commit_faults --vanish K BUCKET [FLAGS OF python -m pipeline...]
    python -m tests.support.commit_faults --two_at_once OUTPUT_DIR STAGGER

The first loads a pickled `Pending` build and runs its finalize step (the FinalizeFn, as a
runner runs it); the second runs a whole build as `python -m pipeline` does. Either process
ends with os._exit(CRASHED) right before the K-th operation that changes the store: a file
created (before its upload or write starts), a local temporary file renamed into place, one
file deleted. Nothing after that point runs, as in a real crash: no `finally`, no cleanup.
K = -1 runs to the end and prints the operations, one a line. `--vanish` runs a whole build
whose S3 bucket is emptied and deleted right before its K-th operation, and goes on. `--serve` reads one K a line
from stdin and answers each with the exit status of a process forked to run the step with that
K: imports paid once, every crash still a process of its own that dies where it is.
`--two_at_once` runs `two_builds_at_once` (below) and prints what went wrong, if anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.support.paths import ROOT

CRASHED = 86  # the exit status of a process that died at its planned operation


@dataclasses.dataclass(frozen=True)
class Pending:
    """A build whose shards are written and whose finalize step has not run: what FinalizeFn
    gets (the shards, each with its errors-file lines and the annotation file's totals; the
    handle as a side input)."""

    handle: object  # commit.BuildHandle
    shards: list
    config: object  # records.BuildConfig
    max_error_fraction: float = 0.5


def finalize(pending: Pending) -> dict:
    """Runs the build's finalize step in this process; returns the manifest it committed."""
    from pipeline import finalize as finalize_step

    fn = finalize_step.FinalizeFn(pending.config, pending.max_error_fraction)
    (manifest,) = fn.process((0, pending.shards), pending.handle)
    return manifest


@contextlib.contextmanager
def operations(on_operation) -> Iterator[None]:
    """Calls on_operation(kind, name) before every operation that changes the store."""
    from reader.core import storage

    original_create, original_delete, original_replace = storage.create, storage.delete, os.replace

    @contextlib.contextmanager
    def create(path, temp=None, **kwargs):
        on_operation("create", path.rsplit("/", 1)[-1])
        with original_create(path, temp, **kwargs) as f:
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


@contextlib.contextmanager
def removed_while_listed(victim: pathlib.Path) -> Iterator[None]:
    """Removes `victim` the first time a listing of its directory has read its name, before the
    lister looks at it further: what another build does at that instant when it renames its
    temporary file into place or tidies a file away."""
    original = os.scandir
    pending = [victim]

    class Listing:
        def __init__(self, path):
            self._entries = original(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._entries.close()

        def __iter__(self):
            for entry in self._entries:
                if (
                    pending
                    and os.path.samefile(os.path.dirname(entry.path) or ".", pending[0].parent)
                    and entry.name == pending[0].name
                ):
                    os.remove(pending.pop())
                yield entry

    os.scandir = Listing
    try:
        yield
    finally:
        os.scandir = original


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
        from pipeline import cli
        from reader.core.storage import s3

        k, bucket, build_flags = int(argv[1]), argv[2], argv[3:]

        def vanish(kind, name):
            nonlocal count
            if count == k:
                client = s3.client()
                for o in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=o["Key"])
                client.delete_bucket(Bucket=bucket)
            count += 1

        with operations(vanish):
            return cli.main(build_flags)

    if argv[0] == "--two_at_once":
        problem = two_builds_at_once(pathlib.Path(argv[1]), float(argv[2]))
        print(problem or "ok")
        return 0 if problem is None else 1

    if argv[0] == "--serve":
        return serve(argv[1], argv[2:])
    state, k, beam_flags = argv[0], int(argv[1]), argv[2:]
    _configure(beam_flags)
    pending = pickle.loads(pathlib.Path(state).read_bytes())
    with operations(maybe_crash):
        finalize(pending)
    if k < 0:
        print("\n".join(seen))
    return 0  # K was past the last operation


def _configure(beam_flags: list[str]) -> None:
    """Beam's file systems and the storage layer set from `beam_flags`, as a worker sets them."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import worker_setup

    worker_setup.apply(worker_setup.settings_of(PipelineOptions(beam_flags)))


def serve(state: str, beam_flags: list[str]) -> int:
    from pipeline import finalize  # noqa: F401  (imported before forking, once)

    _configure(beam_flags)
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
            [sys.executable, "-m", "tests.support.commit_faults", "--serve", str(state), *flags],
            cwd=cwd, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def crash(self, k: int) -> int:
        self._process.stdin.write(f"{k}\n")
        self._process.stdin.flush()
        return int(self._process.stdout.readline())

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)


# ---- two builds at once ----------------------------------------------------------------------


def build_flags(out, *extra: str, split: str = "val") -> list[str]:
    """`python -m pipeline`'s flags for a build of the fixture set into `out`."""
    from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

    return [
        f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={out}", f"--split={split}",
        "--max_error_fraction=0.5", *extra,
    ]  # fmt: skip


def whole_build_problem(out: pathlib.Path, split: str = "val", leftovers_allowed: bool = False) -> str | None:
    """What keeps `out` from holding one whole build of `split` (the checker passes it; with no
    leftovers, exactly its files and the TFDS files), or None."""
    from reader.check import split as check_split
    from reader.core import layout, tfds_metadata

    report = check_split.check_split(str(out), split, workers=1, leakage=False).report
    if not report.ok:
        return report.summary()
    manifest = json.loads((out / layout.manifest_name(split)).read_text())
    named = {s["file"] for s in manifest["shards"]} | {manifest["errors_file"], layout.manifest_name(split), *tfds_metadata.FILES}
    present = {p.name for p in out.iterdir()}
    if not leftovers_allowed and present != named:
        return f"files other than the build's: {sorted(present ^ named)}"
    return None


def two_builds_at_once(out: pathlib.Path, stagger: float, timeout: float = 120) -> str | None:
    """The concurrent-build scenario of tests/pipeline/test_faults.py, as processes: a build of 2 shards,
    then two builds of the same split into the same directory at once (3 shards; 5 shards at
    another JPEG quality), the second started `stagger` seconds after the first. Both must exit
    0, each naming the build it ran (in its summary, or as committed over), and the split must
    be the later commit, whole, with nothing else left. Returns what went wrong, or None."""

    def build(*extra):
        return [sys.executable, "-m", "pipeline", *build_flags(out, *extra)]

    done = subprocess.run(build("--num_shards=2"), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return f"the earlier build exited {done.returncode}: {done.stderr[-2000:]}"
    first = subprocess.Popen(build("--num_shards=3"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(stagger)
    second = subprocess.run(
        build("--num_shards=5", "--jpeg_quality=80"), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    first_out, first_err = first.communicate(timeout=timeout)
    failed = [f"{which} build exited {code}: {_last_lines(err)}" for which, code, err in
              (("the first", first.returncode, first_err), ("the second", second.returncode, second.stderr)) if code != 0]  # fmt: skip
    if failed:
        return "; ".join(failed)
    # Each names the build it ran: in its summary, or as overtaken when the other committed after it.
    reported = re.findall(r"\(build ([0-9a-f]+)\)$|: build ([0-9a-f]+) committed, then", first_out + second.stdout, re.M)
    reported = {a or b for a, b in reported}
    if len(reported) != 2:
        return f"the builds reported {sorted(reported)}: {first_out!r} {second.stdout!r}"
    if problem := whole_build_problem(out):
        return problem
    manifest = json.loads((out / "val.manifest.json").read_text())
    return None if manifest["build"] in reported else f"the split is build {manifest['build']}, neither of {sorted(reported)}"


def _last_lines(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "INFO" not in line]
    return " | ".join(lines[-3:])


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
