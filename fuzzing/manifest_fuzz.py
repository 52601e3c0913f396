"""Manifest fuzzing: every value of a real small build's manifest mutated, each case run through
the checker, both readers and (a sample) a rebuild with reuse.

    python -m fuzzing.manifest_fuzz [--cases=20000] [--seed=0] [--rebuilds=12] [--cli=20]
                                        [--work_dir=build/fuzz_manifests]

The build: the checked-in fixture set (tests/fixtures/wider, 16 images, 10 usable) in 3 shards.
A case is the build's manifest with one to three seeded mutations (`mutate`): a value replaced
by a hostile one (wrong types, bools, NaN, Infinity, 1e400, huge and negative integers, paths
with directories, long strings, deep nesting), a key dropped or added, the shard list repeated
(up to 500 times), dropped, reordered or its records moved between entries, a wrong sha256 or
size, counts moved in step, the JSON text cut, flipped, given a byte-order mark or a key twice.

Invariant per case (`run_case`): reading the manifest (reader.core.manifest.load) either accepts
it or raises ManifestError in one line naming the manifest (and, for a value, the field); the
checker (in-process) returns a report, which fails whenever the readers' reading refuses the
manifest; the readers (ShardSequence and make_dataset) either yield exactly the records the
checker read, in its order, from shards it found intact, or refuse with one line of a
documented error class (ValueError and its subclasses ManifestError, CorruptRecordError,
SchemaError; FileNotFoundError; reader.core.storage.RefusedFile; TensorFlow's InvalidArgumentError while make_dataset reads).
Anything else (another exception, a traceback, two lines) is a finding. The readers' outcome is
a function of the manifest's config and shard list alone (nothing else of it reaches them), so
it is computed once per distinct pair (`--reader_keys` caps the distinct pairs given to the
slow make_dataset, about 0.6 s each). A sample goes through `python -m reader.check` (one problem
line, no traceback) and a sample through `python -m pipeline` over the damaged build (exit 0, the
checker passing after, reuse.notes saying why the earlier build was not reused when it was not).

Prints a Markdown report and writes WORK_DIR/fuzz_manifests.json. tests/reader/core/test_manifest_fuzz.py
runs a few thousand of the same cases in process.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

from absl import flags

from reader.core import storage

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "wider"
SPLIT = "val"
BUILD_FLAGS = ("--num_shards=3", "--max_error_fraction=0.5")
_BIG = "\x00BIG\x00"  # a string dumped as the literal 1e400 (no Python float gives that text)
# storage.RefusedFile: a shard the manifest says is smaller than it is, refused unread (the files rule).
_LEGAL = (ValueError, FileNotFoundError, storage.RefusedFile)
# The checks of what the readers also hold records to: a reader yielding records means these pass.
# ManifestError, CorruptRecordError, SchemaError are ValueErrors.
_READ_CHECKS = {"framing", "record_counts", "shard_files", "shard_set", "schema", "images"}


# --- Mutations ------------------------------------------------------------------------------


def _hostile(rng: random.Random):
    """A value a manifest should never hold where it is put (or, now and then, one it may)."""
    depth = rng.choice((3, 40, 900, 5000))
    choices = (
        None, True, False, 0, -1, 1, 7, 2**31, 2**53, 2**63, 10**30, -(2**63), 0.5, -0.0, 3.0, 1e300,
        float("nan"), float("inf"), float("-inf"), _BIG,
        "", "x", "val", "train", "../escape.tfrecord", "dir/file.tfrecord", "/etc/passwd", ".", "..", "a\\b",
        "0" * 64, "A" * 64, "g" * 64, "0" * 63, "x" * 10_000, "\u00e9\u4e2d\U0001f600",
        [], {}, [1, 2, 3], {"a": 1}, {"file": "x"}, ["val-00000-of-00003.tfrecord"],
    )  # fmt: skip
    pick = rng.randrange(len(choices) + 2)
    if pick == len(choices):
        return _nested(depth, rng.random() < 0.5)
    if pick == len(choices) + 1:
        return {"k": [{"n": float("nan")}, {"m": [_BIG, None]}], "d": _nested(5, True)}
    return copy.deepcopy(choices[pick])


def _nested(depth: int, lists: bool):
    value: object = 1
    for _ in range(depth):
        value = [value] if lists else {"a": value}
    return value


def _paths(value, prefix=()):
    """Every path (tuple of keys and indexes) into a decoded manifest, containers included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _parent(raw, path):
    for step in path[:-1]:
        raw = raw[step]
    return raw


def _replace(raw: dict, rng: random.Random) -> str:
    path = rng.choice([p for p in _paths(raw) if p])
    _parent(raw, path)[path[-1]] = _hostile(rng)
    return "replace " + ".".join(map(str, path))


def _drop_key(raw: dict, rng: random.Random) -> str:
    paths = [p for p in _paths(raw) if p and isinstance(p[-1], str)]
    path = rng.choice(paths)
    del _parent(raw, path)[path[-1]]
    return "drop " + ".".join(map(str, path))


def _add_key(raw: dict, rng: random.Random) -> str:
    dicts = [p for p in _paths(raw) if isinstance(_get(raw, p), dict)]
    path = rng.choice(dicts)
    _get(raw, path)[rng.choice(("extra", "shards", "counts", "zz", ""))] = _hostile(rng)
    return "add key under " + (".".join(map(str, path)) or "top")


def _get(raw, path):
    for step in path:
        raw = raw[step]
    return raw


def _shard_list(raw: dict, rng: random.Random) -> str:
    shards = raw.get("shards")
    if not isinstance(shards, list) or not shards:
        return "shards: none to change"
    kind = rng.choice(("repeat", "drop", "reorder", "move_records", "sha256", "bytes", "records_in_step", "rename", "empty",
                       "directory", "errors_file"))  # fmt: skip
    i = rng.randrange(len(shards))
    entry = shards[i] if isinstance(shards[i], dict) else {}
    if kind == "repeat":
        shards[i + 1 : i + 1] = [copy.deepcopy(shards[i]) for _ in range(rng.choice((1, 2, 500)))]
    elif kind == "drop":
        del shards[i]
    elif kind == "reorder":
        rng.shuffle(shards)
    elif kind == "move_records" and len(shards) > 1 and isinstance(entry.get("records"), int):
        j = (i + 1) % len(shards)
        if isinstance(shards[j], dict) and isinstance(shards[j].get("records"), int):
            shards[i]["records"], shards[j]["records"] = shards[j]["records"], shards[i]["records"]
    elif kind == "sha256":
        entry["sha256"] = f"{rng.getrandbits(256):064x}"
    elif kind == "bytes" and isinstance(entry.get("bytes"), int):
        entry["bytes"] += rng.choice((-1, 1, 16, -16))
    elif kind == "records_in_step" and isinstance(entry.get("records"), int):
        change = rng.choice((-1, 1))
        entry["records"] += change
        counts = raw.get("counts")
        if (
            isinstance(counts, dict)
            and isinstance(counts.get("records"), int)
            and isinstance(counts.get("images_annotated"), int)
        ):
            counts["records"] += change
            counts["images_annotated"] += change
            if isinstance(raw.get("reuse"), dict) and isinstance(raw["reuse"].get("prepared"), int):
                raw["reuse"]["prepared"] += change
    elif kind == "rename":
        entry["file"] = str(entry.get("file")).replace("-of-", "-OF-")
    elif kind == "empty":
        raw["shards"] = []
    elif kind == "directory":
        entry["file"] = rng.choice(("sub/", "../", "./", "/tmp/")) + str(entry.get("file"))
    elif kind == "errors_file":
        entry["file"] = raw.get("errors_file") or "val.errors.jsonl"
    return f"shards: {kind} at {i}"


def _counts_in_step(raw: dict, rng: random.Random) -> str:
    counts = raw.get("counts")
    if not isinstance(counts, dict):
        return "counts: none"
    total, parts = rng.choice((("images_annotated", ("records", "errors")), ("faces_annotated", ("faces_stored", "degenerate")),
                               ("faces_stored", ("targets", "dropped", "ignored"))))  # fmt: skip
    part = rng.choice(parts)
    if isinstance(counts.get(total), int) and isinstance(counts.get(part), int):
        change = rng.choice((1, -1, 10**20))
        counts[total] += change
        counts[part] += change
    return f"counts: {part} and {total} moved in step"


_MUTATIONS = (_replace, _replace, _replace, _drop_key, _add_key, _shard_list, _shard_list, _counts_in_step)


def _dump(raw) -> str:
    try:
        text = json.dumps(raw)  # no indent: the C encoder, twenty times faster
    except RecursionError:  # nested deeper than json.dumps goes: written by hand
        text = json.dumps({"schema_version": 1, "config": "[" * 100_000})
    return text.replace(json.dumps(_BIG), "1e400")


def _text_mutation(text: str, rng: random.Random) -> tuple[str, bytes]:
    data = text.encode()
    kind = rng.choice(("truncate", "flip", "bom", "latin1", "twice", "deep", "top"))
    if kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "flip":
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "latin1":
        data = data.replace(b'"val"', b'"v\xe9l"', 1)
    elif kind == "twice":
        data = data.rstrip().rstrip(b"}") + b', "shards": ' + rng.choice((b"[]", b"1e400", b"[{}]", b"null")) + b"}"
    elif kind == "deep":
        depth = rng.choice((500, 2000, 100_000))
        data = data.replace(b'"config": {', b'"config": ' + b"[" * depth + b"]" * depth + b', "x": {', 1)
    elif kind == "top":
        data = rng.choice((b"[]", b"null", b"1e400", b"NaN", b'"manifest"', b"", b"{}"))
    return f"text: {kind}", data


def mutate(raw: dict, rng: random.Random) -> tuple[str, bytes]:
    """One case: (what was done, the manifest's bytes)."""
    if rng.random() < 0.1:
        return _text_mutation(json.dumps(raw, indent=1), rng)  # indented: a cut or flip lands anywhere
    raw = copy.deepcopy(raw)
    done = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not isinstance(raw, dict):
            break
        try:
            done.append(rng.choice(_MUTATIONS)(raw, rng))
        except (KeyError, IndexError, TypeError, RecursionError):  # a path an earlier mutation removed or buried
            done.append("skipped")
    return "; ".join(done), _dump(raw).encode()


# --- Running a case -------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What one case did. `findings`: broken invariants (empty when the case behaved)."""

    label: str
    load: str = ""  # "accepted" or the one-line ManifestError
    checker_ok: bool | None = None
    readers: str = ""  # "yielded N", "refused: ...", or "" when not run
    findings: list[str] = dataclasses.field(default_factory=list)


class Harness:
    """A build directory to rewrite the manifest of, and the readers' outcomes by (config, shards)."""

    def __init__(self, data_dir: str, split: str = SPLIT, reader_keys: int | None = None):
        from reader.core import layout

        self.data_dir, self.split = data_dir, split
        self.path = os.path.join(data_dir, layout.manifest_name(split))
        with open(self.path, "rb") as f:
            self.original = f.read()
        self.raw = json.loads(self.original)
        self._reader_cache: dict = {}
        self._reader_keys = reader_keys  # distinct (config, shards) given to make_dataset; None: all
        self.counts = collections.Counter()

    def restore(self) -> None:
        with open(self.path, "wb") as f:
            f.write(self.original)

    def run_case(self, label: str, data: bytes, *, check: bool = True, readers: bool = True) -> Outcome:
        """One case: the manifest's bytes written, then read strictly and salvaged, checked (when
        `check`; always for a new reader pair) and read by both readers (when `readers` and the
        reading accepts it)."""
        from reader.core import manifest

        with open(self.path, "wb") as f:
            f.write(data)
        out = Outcome(label)
        built = None
        try:
            built = manifest.load(self.data_dir, self.split)
            out.load = "accepted"
        except manifest.ManifestError as e:
            out.load = str(e)
            if "\n" in out.load or not out.load.startswith(self.path + ": "):
                out.findings.append(f"load: not one line naming the manifest: {out.load[:200]!r}")
        except Exception as e:  # noqa: BLE001 - any other class is the finding
            out.findings.append(f"load: {type(e).__name__}: {str(e)[:200]}")
        try:
            manifest.load(self.data_dir, self.split, salvage=True)
        except manifest.ManifestError as e:
            if "\n" in str(e):
                out.findings.append(f"salvage: two lines: {str(e)[:200]!r}")
        except Exception as e:  # noqa: BLE001
            out.findings.append(f"salvage: {type(e).__name__}: {str(e)[:200]}")
        records = None
        if check:
            records = self._check(out)
        if readers and built is not None:
            self._readers(out, built, records)
        self.counts["accepted" if built is not None else "refused"] += 1
        return out

    def _check(self, out: Outcome):
        from reader.check.split import check_split

        try:
            result = check_split(self.data_dir, self.split, workers=1, leakage=False)
        except Exception as e:  # noqa: BLE001
            out.findings.append(f"checker: {type(e).__name__}: {str(e)[:200]}")
            return None
        out.checker_ok = result.report.ok
        if out.load != "accepted" and result.report.ok:
            out.findings.append(f"checker passes a manifest the readers refuse: {out.load[:200]}")
        return result

    def _readers(self, out: Outcome, built, result) -> None:
        """The readers on an accepted manifest, once per distinct (config, shards): their records
        against those the checker read (it runs for the pair, if it did not run for this case)."""
        key = (built.config, built.shards)
        first = key not in self._reader_cache
        if first:
            result = result if result is not None else self._check(Outcome(out.label))
            expected = None
            if result is not None:
                failed = {c.name for c in result.report.checks if c.status == "fail"}
                expected = ([(r.file, r.index) for r in result.records], failed & _READ_CHECKS,
                            [r.facts.filename for r in result.records if r.facts])  # fmt: skip
            self._reader_cache[key] = (self._sequence(), self._dataset(), expected)
        (seq_records, seq_error), (ds_names, ds_error), expected = self._reader_cache[key]
        refused = seq_error or ds_error
        out.readers = f"refused: {str(refused)[:120]}" if refused else f"yielded {len(seq_records or ())}"
        if not first:
            return  # said once, for the first case of the pair
        for name, error in (("ShardSequence", seq_error), ("make_dataset", ds_error)):
            if error is not None and (not isinstance(error, str) or "\n" in error.strip()):
                out.findings.append(f"{name}: {error!r:.300}")
        if expected is None:
            return
        checked, failed, names = expected
        if seq_records is not None and (seq_records != checked or failed):
            out.findings.append(
                f"ShardSequence yielded {len(seq_records)} records; the checker read {len(checked)} and failed {sorted(failed)}"
            )
        if ds_names is not None and (ds_names != names or failed):
            out.findings.append(
                f"make_dataset yielded {len(ds_names)} records; the checker read {len(names)} and failed {sorted(failed)}"
            )

    def _sequence(self):
        import reader
        from reader.core import schema

        try:
            seq = reader.ShardSequence(self.data_dir, self.split, 4, cache_index=False)
            for batch in range(len(seq)):
                seq[batch]
            located = [seq.index.locate(i) for i in range(seq.num_records)]
            return [(seq.manifest.shards[s].file, span.index) for s, span in located], None
        except (*_LEGAL, schema.SchemaError) as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001
            return None, e  # not a string: a finding

    def _dataset(self):
        if self._reader_keys is not None and len(self._reader_cache) >= self._reader_keys:
            return None, None  # over the cap: make_dataset not run for this pair
        import tensorflow as tf

        import reader

        try:
            dataset = reader.make_dataset(self.data_dir, self.split, 4, training=False, with_boxes=True)
            return [n.decode() for batch in dataset for n in batch[2]["filename"].numpy()], None
        except (*_LEGAL, tf.errors.InvalidArgumentError) as e:
            message = getattr(e, "message", None) or str(e)
            return None, message.strip().splitlines()[0] if isinstance(e, tf.errors.InvalidArgumentError) else message
        except Exception as e:  # noqa: BLE001
            return None, e


def run_cli(data_dir: str, split: str = SPLIT) -> tuple[int, str]:
    """`python -m reader.check` on the directory: (exit status, stdout + stderr)."""
    done = subprocess.run([sys.executable, "-m", "reader.check", f"--data_dir={data_dir}", f"--split={split}", "--workers=1",
                           "--progress=never"], capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def cli_findings(code: int, printed: str, load: str) -> list[str]:
    """The CLI's output for a case whose manifest reading said `load`: exit 1, no traceback,
    and (refused) the problem on one line."""
    found = []
    if code != 1 or "Traceback" in printed:
        found.append(f"reader.check exited {code}{' with a traceback' if 'Traceback' in printed else ''}")
    if load != "accepted":
        field = load.split(": ")[1] if load.count(": ") >= 2 else ""
        if field and not any(field in line for line in printed.splitlines()):
            found.append(f"reader.check names no {field!r}")
    return found


def rebuild(data_dir: str, annotations: str, images: str, split: str = SPLIT) -> list[str]:
    """`python -m pipeline` over the (damaged) build in place, with reuse: exit 0, then the
    checker passes. Returns the findings."""
    from reader.check.split import check_split

    done = subprocess.run([sys.executable, "-m", "pipeline", f"--annotations={annotations}", f"--images_dir={images}",
                           f"--output_dir={data_dir}", f"--split={split}", *BUILD_FLAGS], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # fmt: skip
    if done.returncode != 0:
        return [f"rebuild exited {done.returncode}: {(done.stdout + done.stderr).strip().splitlines()[-1:]}"]
    report = check_split(data_dir, split, workers=1, leakage=False).report
    return (
        [] if report.ok else [f"checker fails after the rebuild: {sorted(c.name for c in report.checks if c.status == 'fail')}"]
    )


# --- The run --------------------------------------------------------------------------------

FLAGS = flags.FLAGS
flags.DEFINE_integer("cases", 20000, "Cases through the checker and the readers.")
flags.DEFINE_integer("seed", 0, "Seed of the cases.")
flags.DEFINE_integer("cli", 20, "Cases (the first refused ones) also through python -m reader.check.")
flags.DEFINE_integer("rebuilds", 12, "Cases also rebuilt in place with python -m pipeline (seconds each).")
flags.DEFINE_integer("reader_keys", 200, "Distinct (config, shards) pairs given to make_dataset.")
flags.DEFINE_string("work_dir", "build/fuzz_manifests", "Where the build and the report go.")


def make_build(work_dir: pathlib.Path) -> str:
    """The fixture set built into work_dir/shards with `python -m pipeline`."""
    out = work_dir / "shards"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pipeline", f"--annotations={FIXTURE / 'wider_face_fixture_bbx_gt.txt'}",
                    f"--images_dir={FIXTURE / 'images'}", f"--output_dir={out}", f"--split={SPLIT}", *BUILD_FLAGS],
                   check=True, capture_output=True, cwd=ROOT)  # fmt: skip
    return str(out)


def main(argv) -> int:
    del argv
    work = pathlib.Path(FLAGS.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = make_build(work)
    harness = Harness(data_dir, reader_keys=FLAGS.reader_keys)
    rng = random.Random(FLAGS.seed)
    start, findings, kinds, cli_done, rebuilt = time.perf_counter(), [], collections.Counter(), 0, 0
    for number in range(FLAGS.cases):
        label, data = mutate(harness.raw, rng)
        kinds[label.split(":")[0].split(" ")[0]] += 1
        out = harness.run_case(label, data)
        if cli_done < FLAGS.cli and out.load != "accepted":
            cli_done += 1
            out.findings += cli_findings(*run_cli(data_dir), out.load)
        if rebuilt < FLAGS.rebuilds and number % max(1, FLAGS.cases // max(1, FLAGS.rebuilds)) == 0:
            rebuilt += 1
            copy_dir = work / "rebuild"
            shutil.rmtree(copy_dir, ignore_errors=True)
            shutil.copytree(data_dir, copy_dir)
            out.findings += rebuild(str(copy_dir), str(FIXTURE / "wider_face_fixture_bbx_gt.txt"), str(FIXTURE / "images"))
        findings += [f"case {number} ({out.label}): {f}" for f in out.findings]
    harness.restore()
    seconds = time.perf_counter() - start
    summary = {
        "cases": FLAGS.cases, "seed": FLAGS.seed, "accepted": harness.counts["accepted"], "refused": harness.counts["refused"],
        "reader_pairs": len(harness._reader_cache), "cli_cases": cli_done, "rebuilds": rebuilt, "findings": findings,
        "seconds": round(seconds, 1), "mutations": dict(kinds),
    }  # fmt: skip
    (work / "fuzz_manifests.json").write_text(json.dumps(summary, indent=2))
    print(
        f"| cases (seed {FLAGS.seed}) | accepted by the readers' reading | refused, one line | distinct (config, shards) read "
        f"| through reader.check | rebuilt in place | findings | time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {FLAGS.cases:,} | {summary['accepted']:,} | {summary['refused']:,} | {summary['reader_pairs']} | {cli_done} | "
        f"{rebuilt} | {len(findings)} | {seconds:.0f} s |"
    )
    for finding in findings[:50]:
        print("-", finding)
    return 1 if findings else 0


if __name__ == "__main__":
    from absl import app

    app.run(main)
