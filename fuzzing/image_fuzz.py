"""Robustness of image preparation: fuzzing, the cut-JPEG detector, and the pixel budget.

    python -m fuzzing.image_fuzz --part=fuzz [--cases=120000] [--seed=0] [--processes=2]
    python -m fuzzing.image_fuzz --part=detector [--photos=400]
    python -m fuzzing.image_fuzz --part=memory [--work_dir=build/fuzz] [--pixel_budget=N]

fuzz: seeded cases, each a small image in one of the formats Pillow both writes and reads here
  (every format of Image.SAVE and Image.OPEN whose round trip works, in several modes and
  options), truncated or mutated, then given to images.prepare. Invariant: a PreparedImage of
  the configured size, or UnusableImage with a reason of images.REASONS; anything else is an
  escape. A case that runs past --case_seconds is a hang: the worker process dumps its stack
  and exits (faulthandler, which works even inside C code), and the run reports it.
detector: false positives and detection rate of the cut-JPEG detector on photo-like images.
memory: peak RSS of a shard writer's 8 threads preparing 16 PNGs of 9000x9000 pixels (81 Mpx
  each, under Pillow's bomb limit), with the process-wide pixel budget and without it.

Prints a Markdown report and writes WORK_DIR/<part>.json. tests/pipeline/test_images_fuzz.py runs a
few thousand of the same cases.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import faulthandler
import functools
import io
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
from absl import flags
from PIL import Image

from pipeline import images, jpeg_cut
from pipeline.images import UnusableImage
from reader.core.config import BuildConfig

# --- The corpus ---------------------------------------------------------------------------

# Modes tried for every format; a format keeps those it writes and reads back.
_MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I", "F")
# Options that change the file's structure, per format (besides the plain save).
_OPTIONS = {
    "JPEG": (
        {"quality": 90},
        {"quality": 90, "progressive": True},
        {"quality": 75, "subsampling": 0},
        {"quality": 90, "optimize": True},
        {"quality": 90, "restart_marker_rows": 1},
    ),
    "PNG": ({"optimize": True},),
    "TIFF": tuple({"compression": c} for c in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg")),
    "WEBP": ({"lossless": True}, {"quality": 60}),
    "TGA": ({"compression": "tga_rle"},),
    "JPEG2000": ({"irreversible": True}, {"no_jp2": True}),
    "GIF": ({"save_all": True, "append_images": "second frame"},),
}
# Formats that need an external program or a plugin handler to read: never round-trip here.
_NEEDS_HANDLER = frozenset({"EPS", "BUFR", "GRIB", "HDF5", "WMF"})


@dataclasses.dataclass(frozen=True)
class Seed:
    """One valid file of the corpus: `name` says format, mode and options."""

    name: str
    format: str
    data: bytes


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """A small photo-like RGB picture: smooth gradients, an edge and noise (so every codec has
    real data to code, and a JPEG has several MCUs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], axis=-1)
    base[: height // 2, : width // 3] += 40
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _in_mode(picture: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray((np.asarray(picture.convert("L"), np.uint16) * 257).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(np.asarray(picture.convert("L"), np.int32) * 1000)
    if mode == "F":
        return Image.fromarray(np.asarray(picture.convert("L"), np.float32) / 255.0)
    if mode == "P":
        return picture.quantize(32)
    return picture.convert(mode)


def _encode(im: Image.Image, fmt: str, options: dict) -> tuple[bytes, str] | None:
    """(`im` saved as `fmt`, the mode it reads back in), if Pillow writes it and reads it
    back whole; else None."""
    options = dict(options)
    if options.get("append_images") == "second frame":
        options["append_images"] = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.save(out, format=fmt, **options)
            data = out.getvalue()
            with Image.open(io.BytesIO(data)) as back:
                back.load()
                mode = back.mode
    except Exception:
        return None
    return data, mode


@functools.cache
def corpus() -> tuple[Seed, ...]:
    """Every (format, mode, options) that Pillow writes and reads back here, as small files."""
    Image.init()
    formats = sorted((set(Image.SAVE) & set(Image.OPEN)) - _NEEDS_HANDLER)
    seeds, seen = [], set()
    for fmt in formats:
        size = (48, 40) if fmt in ("JPEG", "JPEG2000", "WEBP", "AVIF") else (37, 29)
        picture = _picture(*size, seed=len(seeds))
        if fmt == "ICNS":  # its sizes are fixed; a tiny picture has no slot
            picture = picture.resize((64, 64))
        variants = [(_in_mode(picture, mode), {}) for mode in _MODES] + [(picture, o) for o in _OPTIONS.get(fmt, ())]
        for im, options in variants:
            encoded = _encode(im, fmt, options)
            if encoded is None:
                continue
            data, mode = encoded
            described = " ".join(f"{k}={v}" for k, v in options.items() if k != "append_images")
            name = f"{fmt} {mode} {described or ('animated' if options else '')}".strip()
            if name not in seen:  # a mode the format converts on saving gives a file already there
                seen.add(name)
                seeds.append(Seed(name, fmt, data))
    return tuple(seeds)


# --- Mutations ----------------------------------------------------------------------------

_INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
_INTERESTING_WORDS = (0, 0xFFFF, 0x7FFF, 0x8000, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000)
HEADER_BYTES = 64  # truncations inside this many first bytes are tried at every offset


def _ending(seed: Seed, rng: np.random.Generator) -> bytes:
    """What a "repair" puts after a cut: the format's end marker, or the original's last bytes."""
    marker = {"JPEG": b"\xff\xd9", "PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82", "GIF": b"\x00;"}.get(seed.format)
    if marker is not None and rng.random() < 0.7:
        return marker
    return seed.data[-int(rng.integers(1, 17)) :]


def mutate(seed: Seed, rng: np.random.Generator) -> tuple[str, bytes]:
    """(mutation kind, mutated bytes) for one case, drawn with `rng`."""
    data = seed.data
    n = len(data)
    kind = str(
        rng.choice(("truncate", "truncate", "repaired", "zero_tail", "flip", "byte", "word", "insert", "delete", "duplicate"))
    )

    # Half the positions fall in the header, where a format's fields are.
    def position(limit: int = n) -> int:
        return int(rng.integers(0, min(limit, HEADER_BYTES) if rng.random() < 0.5 else limit))

    if kind == "truncate":
        return kind, data[: position()]
    if kind == "repaired":
        return kind, data[: int(rng.integers(1, n))] + _ending(seed, rng)
    if kind == "zero_tail":  # a file preallocated, then only partly written
        cut = int(rng.integers(1, n))
        return kind, data[:cut] + bytes(n - cut)
    mutable = bytearray(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            at = position()
            mutable[at] ^= 1 << int(rng.integers(8))
    elif kind == "byte":
        for _ in range(int(rng.integers(1, 5))):
            mutable[position()] = int(rng.choice(_INTERESTING_BYTES)) if rng.random() < 0.7 else int(rng.integers(256))
    elif kind == "word":
        width = int(rng.choice((2, 4)))
        at = position(max(1, n - width))
        value = int(rng.choice(_INTERESTING_WORDS)) & ((1 << (8 * width)) - 1)
        mutable[at : at + width] = value.to_bytes(width, str(rng.choice(("big", "little"))))
    elif kind == "insert":
        at = position()
        mutable[at:at] = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        at = position()
        del mutable[at : at + int(rng.integers(1, 65))]
    else:  # duplicate: a chunk copied again, right after itself or elsewhere
        start = position()
        chunk = bytes(mutable[start : start + int(rng.integers(1, 257))])
        at = start + len(chunk) if rng.random() < 0.5 else int(rng.integers(0, n))
        mutable[at:at] = chunk
    return kind, bytes(mutable)


# --- Cases and the invariant --------------------------------------------------------------

_CONFIGS = (
    BuildConfig(input_size=32, image_format="raw"),
    BuildConfig(input_size=32, resize="letterbox", image_format="raw"),
    BuildConfig(input_size=32, image_format="jpeg"),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One fuzz case: a seed, what was done to it, and the bytes and config prepare() gets."""

    index: int
    seed: Seed
    kind: str
    data: bytes
    config: BuildConfig

    def describe(self) -> str:
        return f"case {self.index}: {self.seed.name}, {self.kind}, {len(self.data)} of {len(self.seed.data)} bytes"


def header_cases(seeds: tuple[Seed, ...]) -> list[Case]:
    """Every seed cut at every offset of its first HEADER_BYTES bytes."""
    cases = []
    for seed in seeds:
        for cut in range(min(HEADER_BYTES, len(seed.data))):
            cases.append(Case(len(cases), seed, f"cut at {cut}", seed.data[:cut], _CONFIGS[cut % len(_CONFIGS)]))
    return cases


def random_case(seeds: tuple[Seed, ...], run_seed: int, index: int) -> Case:
    """Case `index` of the run seeded `run_seed`: the same arguments give the same case."""
    rng = np.random.default_rng([run_seed, index])
    seed = seeds[int(rng.integers(len(seeds)))]
    kind, data = mutate(seed, rng)
    return Case(index, seed, kind, data, _CONFIGS[int(rng.integers(len(_CONFIGS)))])


def outcome(case: Case) -> str:
    """`record`, or the reason of the UnusableImage. Raises AssertionError for a record of the
    wrong size; any other exception escapes (that is what the fuzz looks for)."""
    try:
        prepared = images.prepare(case.data, case.config)
    except UnusableImage as e:
        assert e.reason in images.REASONS and e.detail, case.describe()
        return e.reason
    size = case.config.input_size
    if case.config.image_format == "raw":
        assert len(prepared.encoded) == size * size * 3, case.describe()
    else:
        with Image.open(io.BytesIO(prepared.encoded)) as stored:
            assert stored.format == "JPEG" and stored.size == (size, size), case.describe()
    assert prepared.placement.size == size, case.describe()
    return "record"


# --- The fuzz run -------------------------------------------------------------------------


def _run_chunk(run_seed: int, start: int, stop: int, case_seconds: float) -> dict:
    """Runs cases [start, stop) in this worker; returns counts, escapes and the slowest case."""
    warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and such, once per case
    seeds = corpus()
    by_format: collections.Counter = collections.Counter()
    outcomes: collections.Counter = collections.Counter()
    escapes: list[str] = []
    slowest = (0.0, "")
    for index in range(start, stop):
        case = random_case(seeds, run_seed, index)
        by_format[case.seed.format] += 1
        faulthandler.dump_traceback_later(case_seconds, exit=True)
        began = time.perf_counter()
        try:
            result = outcome(case)
        except Exception as e:
            result = "ESCAPE"
            escapes.append(f"{case.describe()}: {type(e).__name__}: {e}")
        finally:
            faulthandler.cancel_dump_traceback_later()
        elapsed = time.perf_counter() - began
        if elapsed > slowest[0]:
            slowest = (elapsed, case.describe())
        outcomes[result] += 1
    return {"by_format": by_format, "outcomes": outcomes, "escapes": escapes, "slowest": slowest}


def fuzz(cases: int, run_seed: int, processes: int, case_seconds: float, chunk: int = 2000) -> dict:
    """Runs `cases` random cases on `processes` worker processes; returns the figures."""
    began = time.perf_counter()
    total = {"by_format": collections.Counter(), "outcomes": collections.Counter(), "escapes": [], "slowest": (0.0, "")}
    hangs = []
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        futures = {pool.submit(_run_chunk, run_seed, s, min(cases, s + chunk), case_seconds): s for s in range(0, cases, chunk)}
        for future in concurrent.futures.as_completed(futures):
            try:
                part = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                hangs.append(f"cases {futures[future]}..{futures[future] + chunk}: a worker ran past {case_seconds} s and exited")
                continue
            total["by_format"].update(part["by_format"])
            total["outcomes"].update(part["outcomes"])
            total["escapes"] += part["escapes"]
            total["slowest"] = max(total["slowest"], tuple(part["slowest"]))
    seeds = corpus()
    return {
        "cases": cases,
        "seed": run_seed,
        "seeds": [s.name for s in seeds],
        "formats": len({s.format for s in seeds}),
        "by_format": dict(sorted(total["by_format"].items())),
        "outcomes": dict(total["outcomes"].most_common()),
        "escapes": total["escapes"],
        "hangs": hangs,
        "slowest_case": {"seconds": round(total["slowest"][0], 3), "case": total["slowest"][1]},
        "seconds": round(time.perf_counter() - began, 1),
        "processes": processes,
    }


# --- The cut-JPEG detector ----------------------------------------------------------------


def _photo_jpegs(count: int) -> list[tuple[str, bytes]]:
    """Photo-like JPEGs: pipeline.sample.synthetic.photo (baseline, progressive, grey), scikit-image's
    photographs at several qualities and crops, and the checked-in fixture photos."""
    from skimage import data as photos

    from pipeline.sample import synthetic
    from tests.support.paths import FIXTURE_IMAGES

    out = []
    rng = np.random.default_rng(0)
    no_faces = synthetic.no_faces()
    for i in range(count):
        height = int(rng.choice((576, 683, 768, 1024, 1366)))
        picture = synthetic.photo(no_faces, height, rng)
        flavour = ("baseline", "progressive", "grey")[i % 3]
        picture = picture.convert("L") if flavour == "grey" else picture
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=int(rng.choice((70, 85, 90, 95))), progressive=flavour == "progressive")
        out.append((f"sample {flavour}", buffer.getvalue()))
    scikit_photos = "astronaut coffee chelsea camera rocket immunohistochemistry brick grass gravel moon page text"
    for name in scikit_photos.split():
        photo = Image.fromarray(getattr(photos, name)())
        for quality in (50, 75, 95):
            for progressive in (False, True):
                for crop in ((0, 0) + photo.size, (7, 5, photo.width - 3, photo.height - 11)):
                    buffer = io.BytesIO()
                    photo.crop(crop).save(buffer, "JPEG", quality=quality, progressive=progressive)
                    out.append((f"skimage {'progressive' if progressive else 'baseline'}", buffer.getvalue()))
    for path in sorted(FIXTURE_IMAGES.rglob("*.jpg")):
        if "Broken" not in str(path) and path.read_bytes()[:2] == b"\xff\xd8":
            out.append(("fixture", path.read_bytes()))
    return out


def detector(count: int) -> dict:
    """Complete photos (false positives: refused as truncated; probe decodes: the cost of
    suspicion) and the same cut at a random place with an EOI appended (detected: refused)."""
    probes = collections.Counter()
    original = jpeg_cut.decodes_differently

    def counted(*args):
        probes["decodes"] += 1
        return original(*args)

    jpeg_cut.decodes_differently = counted
    rng = np.random.default_rng(1)
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    try:
        for source, data in _photo_jpegs(count):
            progressive = b"\xff\xc2" in data[: data.find(b"\xff\xda")]
            kind = f"{source} ({'progressive' if progressive else 'baseline'})" if source == "fixture" else source
            row = rows[kind]
            for config in (BuildConfig(image_format="raw"), BuildConfig(input_size=512, image_format="raw")):
                # 224: decoded at 1/4 or 1/2 scale; 512: at 1/2 or full scale
                row["complete"] += 1
                before = probes["decodes"]
                try:
                    whole = images.prepare(data, config).encoded
                except UnusableImage as e:
                    row[f"complete refused: {e.reason}"] += 1
                    continue
                finally:
                    row["complete, probe decodes"] += probes["decodes"] - before
                cut = data[: int(len(data) * rng.uniform(0.05, 0.995))] + b"\xff\xd9"
                row["cut"] += 1
                try:
                    stored = images.prepare(cut, config).encoded
                except UnusableImage:
                    row["cut refused"] += 1
                    continue
                row["cut stored"] += 1
                # How visible the damage is: the worst row's mean difference, in grey levels.
                size = config.input_size
                difference = np.abs(np.frombuffer(stored, np.uint8).astype(int) - np.frombuffer(whole, np.uint8)).reshape(
                    size, -1
                )
                worst = float(difference.mean(axis=1).max())
                row["cut stored, worst row mean difference"] = round(max(row["cut stored, worst row mean difference"], worst), 2)
    finally:
        jpeg_cut.decodes_differently = original
    return {"rows": {k: dict(v) for k, v in sorted(rows.items())}}


# --- Memory under the pixel budget --------------------------------------------------------

BIG_SIDE = 9000
BIG_COUNT = 16


def _big_pngs(work_dir: str) -> list[str]:
    """BIG_COUNT PNGs of BIG_SIDE^2 RGB pixels (smooth, so 2 MB each: the memory measured is the
    decoded pixels', not the files'), written once."""
    paths = [os.path.join(work_dir, f"big_{i:02d}.png") for i in range(BIG_COUNT)]
    if not all(os.path.exists(p) for p in paths):
        os.makedirs(work_dir, exist_ok=True)
        ramp = np.linspace(0, 255, BIG_SIDE, dtype=np.float32)
        grey = ramp[:, None] * 0.6 + ramp[None, :] * 0.4
        picture = Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], -1).astype(np.uint8))
        picture.save(paths[0], "PNG")
        for path in paths[1:]:
            with open(paths[0], "rb") as src, open(path, "wb") as dst:
                dst.write(src.read())
    return paths


def _prepare_all(paths: list[str], pixel_budget: int, threads: int) -> dict:
    """In this process: what a shard writer does (8 images at once on a thread pool, read then
    prepared), returning peak RSS and the budget's high-water mark."""
    from pipeline import sources
    from pipeline.prefetch import prefetch

    budget = images.PixelBudget(pixel_budget)
    directory = os.path.dirname(paths[0])

    def one(path):
        return images.prepare(sources.read_source(directory, os.path.basename(path)), BuildConfig(), budget)

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = [r for _, r in prefetch(one, paths, pool, threads)]
    errors = [repr(r) for r in results if isinstance(r, Exception)]
    return {
        "pixel_budget": pixel_budget,
        "threads": threads,
        "images": len(paths),
        "errors": errors,
        "seconds": round(time.perf_counter() - began, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "budget_high_water_mpx": round(budget.high_water / 1e6, 1),
    }


def memory(work_dir: str, pixel_budget: int) -> dict:
    """Peak RSS of fresh processes preparing the big PNGs: with the budget or without it (a
    budget of 2**62), with Pillow's default 16 MB blocks or images.PILLOW_BLOCK_BYTES."""
    paths = _big_pngs(work_dir)
    runs = []
    for budget, block in ((2**62, "16M"), (pixel_budget, "16M"), (2**62, None), (pixel_budget, None)):
        command = [
            sys.executable,
            "-m",
            "fuzzing.image_fuzz",
            "--part=_memory_child",
            f"--pixel_budget={budget}",
            f"--work_dir={work_dir}",
        ]
        environment = dict(os.environ, **({"PILLOW_BLOCK_SIZE": block} if block else {}))
        environment.pop("PILLOW_BLOCK_SIZE", None) if block is None else None
        child = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
        run = json.loads(child.stdout.strip().splitlines()[-1])
        run["pillow_block_bytes"] = block or images.PILLOW_BLOCK_BYTES
        runs.append(run)
    return {
        "files": f"{BIG_COUNT} PNGs of {BIG_SIDE}x{BIG_SIDE} RGB ({os.path.getsize(paths[0]) / 1e6:.1f} MB each)",
        "runs": runs,
    }


# --- Entry point --------------------------------------------------------------------------


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("part", "fuzz", ["fuzz", "detector", "memory", "_memory_child"], "What to measure.", flag_values=fv)
    flags.DEFINE_integer("cases", 120_000, "Fuzz cases.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the fuzz cases.", flag_values=fv)
    flags.DEFINE_integer("processes", os.cpu_count() or 1, "Worker processes for the fuzz.", flag_values=fv)
    flags.DEFINE_float("case_seconds", 20.0, "A case running longer is a hang.", flag_values=fv)
    flags.DEFINE_integer(
        "photos", 300, "Rendered photos for the detector (plus scikit-image's and the fixtures).", flag_values=fv
    )
    flags.DEFINE_integer("pixel_budget", images.DEFAULT_PIXEL_BUDGET, "Pixel budget for the memory part.", flag_values=fv)
    flags.DEFINE_string("work_dir", "build/fuzz", "Where results (and the big PNGs) go.", flag_values=fv)


def _report(part: str, result: dict) -> str:
    if part == "fuzz":
        lines = [
            f"{result['cases']:,} cases (seed {result['seed']}) over {len(result['seeds'])} seed files in {result['formats']} formats, "
            f"{result['seconds']} s on {result['processes']} processes",
            "",
            "| format | cases |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v:,} |" for k, v in result["by_format"].items()]
        lines += ["", "| outcome | cases |", "| --- | --- |"] + [f"| {k} | {v:,} |" for k, v in result["outcomes"].items()]
        lines += ["", f"escapes: {len(result['escapes'])}, hangs: {len(result['hangs'])}, slowest case {result['slowest_case']}"]
        lines += result["escapes"][:20] + result["hangs"]
        return "\n".join(lines)
    return json.dumps(result, indent=2)


def main(argv: list[str]) -> int:
    fv = flags.FlagValues()
    _define(fv)
    fv(argv)
    if fv.part == "_memory_child":
        print(json.dumps(_prepare_all(_big_pngs(fv.work_dir), fv.pixel_budget, threads=8)))
        return 0
    os.makedirs(fv.work_dir, exist_ok=True)
    if fv.part == "fuzz":
        result = fuzz(fv.cases, fv.seed, fv.processes, fv.case_seconds)
    elif fv.part == "detector":
        result = detector(fv.photos)
    else:
        result = memory(fv.work_dir, fv.pixel_budget)
    with open(os.path.join(fv.work_dir, f"{fv.part}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(_report(fv.part, result))
    return 1 if fv.part == "fuzz" and (result["escapes"] or result["hangs"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
