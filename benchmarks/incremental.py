"""Incremental rebuilds: the edited inputs built over the earlier build, against a clean build.

The inputs are a real WIDER annotation file (val: 3,226 images; train: 12,880) over the images
`pipeline.sample.render_images` generated for it, edited as users edit a dataset (`edit_inputs`,
seeded; the originals are left as they are):

- boxes moved on every 30th image (x and y shifted by 1-4 px, each box kept inside its image;
  the image's bytes unchanged),
- 20 images dropped from the annotation file,
- 20 images replaced by other bytes under the same name (drawn again with another seed: another
  background, the same boxes; their sha256 changes),
- 20 images added: new files with faces, appended to existing event folders, their entries
  after the last image of their event, in WIDER's format.

The edited images directory holds hard links to the unchanged images (copies on another file
system) and new files for the replaced and added ones.

Then, as fresh `python -m pipeline` processes (start-up included, 8 shards, default runner):
(a) the original inputs built into an empty directory: the earlier build, once; then, in
interleaved rounds, (b) the incremental build: the edited inputs built into a fresh copy of (a)'s
directory, so that each round starts from the same earlier build, reusing its prepared images
by the source files' sha256 (the default), and (c) the clean build: the same edited inputs with
`--noreuse` into an empty directory. Each side's figure is its best round (its peak memory too:
the highest sum of resident memory over the process tree, `benchmarks.measure`).

The result is checked: the incremental build's shards (by shard index) and errors file must be
byte-identical to the clean build's, and the manifests equal but for the build id and "reuse";
the manifest's reuse counts are reported beside what the edit predicts (reused: the images
whose bytes did not change; prepared: the 20 replaced and 20 added).

    python -m benchmarks --parts=incremental [--incremental_splits=val,train] [--work_dir=build/bench]
    python -m benchmarks.incremental --work_dir=build/bench [--splits=val,train] [--rounds=3]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

from benchmarks.build import beam_command
from benchmarks.measure import Measurement, measure

ROUNDS = 3
EDIT_SEED = 0
MOVE_EVERY = 30  # boxes move on 1 image in 30
DROPPED = REPLACED = ADDED = 20
MAX_SHIFT = 4  # px
GOAL = 3.0  # clean / incremental, val


@dataclasses.dataclass(frozen=True)
class Edit:
    """The edited inputs and what the edit did. unchanged: images of the edited file whose bytes
    the earlier build prepared (what reuse should find); new: replaced + added."""

    annotations: str
    images_dir: str
    images: int
    moved: int
    dropped: int
    replaced: int
    added: int
    unchanged: int

    @property
    def new(self) -> int:
        return self.replaced + self.added


def _link(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def _moved(faces: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """`faces` with every box shifted by 1-MAX_SHIFT px in x and y where the shifted box stays
    inside the image (boxes that do not fit either way stay where they are)."""
    faces = faces.copy()
    width, height = size
    for face in faces:
        for axis, limit in ((0, width), (1, height)):
            shift = int(rng.integers(1, MAX_SHIFT + 1)) * (1 if rng.random() < 0.5 else -1)
            for step in (shift, -shift):
                if face[axis] + step >= 0 and face[axis] + step + face[axis + 2] <= limit:
                    face[axis] += step
                    break
    return faces


def edit_inputs(annotations_path: str, images_dir: str, out_dir: str, split: str, seed: int = EDIT_SEED) -> Edit:
    """Writes out_dir/annotations.txt and out_dir/images: the inputs edited as the module says.
    The same seed gives the same edit, byte for byte."""
    from pipeline import annotations
    from pipeline.sample import synthetic

    with open(annotations_path, "rb") as f:
        entries = [(a.filename, a.faces) for a in annotations.parse(f, annotations_path, "boxes")]
    rng = np.random.default_rng(seed)
    moved = set(range(0, len(entries), MOVE_EVERY))
    others = np.array(sorted(set(range(len(entries))) - moved))
    picked = rng.choice(others, DROPPED + REPLACED, replace=False).tolist()
    dropped, replaced = set(picked[:DROPPED]), set(picked[DROPPED:])

    shutil.rmtree(out_dir, ignore_errors=True)
    edited_dir = os.path.join(out_dir, "images")
    edited: list[tuple[str, np.ndarray]] = []
    moved_count = 0
    for index, (filename, faces) in enumerate(entries):
        if index in dropped:
            continue
        source, target = os.path.join(images_dir, filename), os.path.join(edited_dir, filename)
        if index in replaced:
            with Image.open(source) as image:
                height = image.height  # the same height, so that every box still fits
            drawn = synthetic.photo(faces, height, synthetic.image_rng(seed + 1, filename))
            synthetic.write_file(target, synthetic.encode_photo(drawn))
            assert _sha256(target) != _sha256(source), f"{filename}: drawn again with the same bytes"
        else:
            _link(source, target)
        if index in moved and len(faces):
            with Image.open(source) as image:
                size = image.size
            new_faces = _moved(faces, size, rng)
            moved_count += int(not np.array_equal(new_faces, faces))
            faces = new_faces
        edited.append((filename, faces))

    # Added images: into existing event folders, each entry after the last of its event.
    events = sorted({filename.split("/", 1)[0] for filename, _ in entries if "/" in filename})
    taken = {filename for filename, _ in entries}
    for k in range(ADDED):
        event = events[int(rng.integers(len(events)))]
        number, _, name = event.partition("--")
        filename = f"{event}/{number}_{name}_added_{seed}_{k}.jpg"
        assert filename not in taken, filename
        image_rng = synthetic.image_rng(seed, filename)
        height = synthetic.typical_height(image_rng)
        faces = synthetic.group_faces(image_rng, height)
        synthetic.write_file(
            os.path.join(edited_dir, filename), synthetic.encode_photo(synthetic.photo(faces, height, image_rng))
        )
        last = max((i for i, (f, _) in enumerate(edited) if f.startswith(event + "/")), default=len(edited) - 1)
        edited.insert(last + 1, (filename, faces))

    edited_annotations = os.path.join(out_dir, os.path.basename(annotations_path))
    synthetic.write_annotations(edited_annotations, edited, split)
    return Edit(
        edited_annotations,
        edited_dir,
        len(edited),
        moved_count,
        len(dropped),
        len(replaced),
        ADDED,
        unchanged=len(entries) - len(dropped) - len(replaced),
    )


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def compare(incremental_dir: str, clean_dir: str, split: str) -> dict:
    """Whether the two builds of the same inputs hold the same bytes: shards by index, errors
    files, and manifests but for the build id (which every file name carries) and "reuse"."""
    from reader.core import layout

    manifests, shards, errors = [], [], []
    for data_dir in (incremental_dir, clean_dir):
        with open(os.path.join(data_dir, layout.manifest_name(split)), "rb") as f:
            manifest = json.loads(f.read())
        build = manifest["build"]
        shards.append(
            {layout.parse_shard_name(s["file"])[1]: _sha256(os.path.join(data_dir, s["file"])) for s in manifest["shards"]}
        )
        errors.append(_sha256(os.path.join(data_dir, manifest["errors_file"])))
        reuse = manifest.pop("reuse", None)
        manifests.append((json.loads(json.dumps(manifest).replace(build, "BUILD")), reuse, build))
    (inc_manifest, inc_reuse, _), (clean_manifest, clean_reuse, _) = manifests
    different = sorted(k for k in set(inc_manifest) | set(clean_manifest) if inc_manifest.get(k) != clean_manifest.get(k))
    return {
        "shards_identical": shards[0] == shards[1],
        "shards_differing": sorted(i for i in set(shards[0]) | set(shards[1]) if shards[0].get(i) != shards[1].get(i)),
        "errors_file_identical": errors[0] == errors[1],
        "manifests_equal_but_build_and_reuse": not different,
        "manifest_keys_differing": different,
        "incremental_reuse": inc_reuse,
        "clean_reuse": clean_reuse,
        "counts": inc_manifest.get("counts"),
    }


def _earlier_build(data_dir: str, split: str) -> str:
    from reader.core import layout

    with open(os.path.join(data_dir, layout.manifest_name(split)), "rb") as f:
        return json.loads(f.read())["build"]


def _best(runs: list[Measurement]) -> Measurement:
    return min(runs, key=lambda m: m.seconds)


def run(split: str, annotations: str, images_dir: str, work_dir: str, rounds: int = ROUNDS) -> dict:
    """Edits `split`'s inputs, builds the earlier build, then times incremental against clean
    rebuilds of the edit in `rounds` interleaved rounds; checks their bytes. Returns the figures."""
    load_before = os.getloadavg()[1]  # other work on the machine: the 5-minute load average
    base = os.path.join(work_dir, f"incremental_{split}")
    os.makedirs(base, exist_ok=True)
    print(f"incremental ({split}): editing {annotations} over {images_dir}", flush=True)
    edit = edit_inputs(annotations, images_dir, os.path.join(base, "edited"), split)
    print(
        f"incremental ({split}): {edit.images} images: boxes moved on {edit.moved}, {edit.dropped} dropped, "
        f"{edit.replaced} replaced, {edit.added} added",
        flush=True,
    )
    earlier_dir = os.path.join(base, "earlier")
    earlier = measure(
        beam_command(annotations, images_dir, _fresh(earlier_dir), split), log_path=os.path.join(base, "earlier.log")
    )
    earlier_id = _earlier_build(earlier_dir, split)
    print(f"incremental ({split}): earlier build {earlier_id}, {earlier.seconds:.1f} s", flush=True)
    incremental_dir, clean_dir = os.path.join(base, "incremental"), os.path.join(base, "clean")
    incrementals, cleans = [], []
    for round_ in range(rounds):
        shutil.copytree(earlier_dir, _fresh(incremental_dir))
        incrementals.append(
            measure(
                beam_command(edit.annotations, edit.images_dir, incremental_dir, split),
                log_path=os.path.join(base, "incremental.log"),
            )
        )
        cleans.append(
            measure(
                beam_command(edit.annotations, edit.images_dir, _fresh(clean_dir), split, "--noreuse"),
                log_path=os.path.join(base, "clean.log"),
            )
        )
        print(
            f"incremental ({split}) round {round_ + 1}/{rounds}: incremental {incrementals[-1].seconds:.1f} s "
            f"({incrementals[-1].peak_total_mb:.0f} MB), clean {cleans[-1].seconds:.1f} s ({cleans[-1].peak_total_mb:.0f} MB)",
            flush=True,
        )
    check = compare(incremental_dir, clean_dir, split)  # the last round's builds
    incremental, clean = _best(incrementals), _best(cleans)
    reuse = check["incremental_reuse"] or {}
    return {
        "split": split,
        "images": edit.images,
        "edit": {"moved": edit.moved, "dropped": edit.dropped, "replaced": edit.replaced, "added": edit.added},
        "rounds": rounds,
        "load_average_5min_before_after": [round(load_before, 2), round(os.getloadavg()[1], 2)],
        "earlier_build_seconds": round(earlier.seconds, 2),
        "earlier_build_peak_total_mb": round(earlier.peak_total_mb, 1),
        "incremental_seconds_each": [round(m.seconds, 2) for m in incrementals],
        "clean_seconds_each": [round(m.seconds, 2) for m in cleans],
        "speedup_each_round": [round(c.seconds / i.seconds, 3) for i, c in zip(incrementals, cleans)],
        "incremental_seconds": round(incremental.seconds, 2),
        "clean_seconds": round(clean.seconds, 2),
        "speedup": round(clean.seconds / incremental.seconds, 3),
        "incremental_peak_total_mb": round(incremental.peak_total_mb, 1),
        "incremental_peak_process_mb": round(incremental.peak_process_mb, 1),
        "clean_peak_total_mb": round(clean.peak_total_mb, 1),
        "clean_peak_process_mb": round(clean.peak_process_mb, 1),
        "incremental_peak_total_mb_each": [round(m.peak_total_mb, 1) for m in incrementals],
        "clean_peak_total_mb_each": [round(m.peak_total_mb, 1) for m in cleans],
        "expected_reused": edit.unchanged,
        "expected_prepared": edit.new,
        "reuse": reuse,
        "reuse_from_earlier_build": reuse.get("from") == earlier_id,
        "reuse_counts_as_expected": reuse.get("reused") == edit.unchanged
        and reuse.get("prepared") == edit.new + check["counts"]["errors"],
        **{
            key: check[key]
            for key in (
                "shards_identical",
                "shards_differing",
                "errors_file_identical",
                "manifests_equal_but_build_and_reuse",
                "manifest_keys_differing",
                "clean_reuse",
            )
        },
    }


def report(figures: dict[str, dict]) -> None:
    """Prints the figures of every split measured as a table."""
    print("\nincremental rebuild: edited inputs built over the earlier build vs --noreuse, best of interleaved rounds")
    print(
        f"{'split':6s} {'images':>7s} {'incr s':>7s} {'clean s':>8s} {'ratio':>6s} {'incr MB':>8s} {'clean MB':>9s} {'reused':>7s} {'prepared':>9s}  bytes"
    )
    for split, f in figures.items():
        same = f["shards_identical"] and f["errors_file_identical"] and f["manifests_equal_but_build_and_reuse"]
        print(
            f"{split:6s} {f['images']:7d} {f['incremental_seconds']:7.1f} {f['clean_seconds']:8.1f} {f['speedup']:5.2f}x "
            f"{f['incremental_peak_total_mb']:8.0f} {f['clean_peak_total_mb']:9.0f} {f['reuse'].get('reused', '?')!s:>7s} "
            f"{f['reuse'].get('prepared', '?')!s:>9s}  {'identical' if same else 'DIFFER'}"
            f" (expected reused {f['expected_reused']}, prepared {f['expected_prepared']})",
            flush=True,
        )
    if "val" in figures:
        print(f"goal: val ratio >= {GOAL:.0f}x: {'met' if figures['val']['speedup'] >= GOAL else 'not met'}")
    if "val" in figures and "train" in figures:
        growth = figures["train"]["incremental_peak_total_mb"] / figures["val"]["incremental_peak_total_mb"]
        print(f"incremental peak memory, train / val: {growth:.2f}x")


def run_splits(splits: list[str], split_dir: str, work_dir: str, rounds: int = ROUNDS) -> dict:
    """`run` for each split (its images rendered under work_dir/{split}_images), then `report`."""
    figures = {}
    for split in splits:
        annotations = os.path.join(split_dir, f"wider_face_{split}_bbx_gt.txt")
        figures[split] = run(split, annotations, os.path.join(work_dir, f"{split}_images"), work_dir, rounds)
        print(json.dumps(figures[split], indent=2), flush=True)
    report(figures)
    if "val" in figures and "train" in figures:
        figures["train_over_val"] = {
            "speedup": round(figures["train"]["speedup"] / figures["val"]["speedup"], 3),
            "incremental_peak_total_mb": round(
                figures["train"]["incremental_peak_total_mb"] / figures["val"]["incremental_peak_total_mb"], 3
            ),
        }
    return figures


def main(argv: list[str]) -> int:
    from absl import flags

    from benchmarks.data import WIDER_SPLIT
    from pipeline.sample import render_images

    fv = flags.FlagValues()
    flags.DEFINE_string("work_dir", "build/bench", "Where generated images and builds go.", flag_values=fv)
    flags.DEFINE_string("split_dir", str(WIDER_SPLIT), "Folder of the real WIDER annotation files.", flag_values=fv)
    flags.DEFINE_list("splits", ["val"], "Splits to measure: val, train.", flag_values=fv)
    flags.DEFINE_integer("rounds", ROUNDS, "Interleaved rounds.", lower_bound=1, flag_values=fv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(f"{__doc__.strip()}\n\nflags:\n{fv.get_help()}")
        return 0
    try:
        fv(argv)
    except flags.Error as e:
        print(f"benchmarks.incremental: {e}", file=sys.stderr)
        return 2
    work = os.path.abspath(fv.work_dir)
    for split in fv.splits:
        annotations = os.path.join(fv.split_dir, f"wider_face_{split}_bbx_gt.txt")
        print(f"rendering images for {annotations} (skips existing files)", flush=True)
        render_images(annotations, os.path.join(work, f"{split}_images"))
    figures = run_splits(fv.splits, fv.split_dir, work, fv.rounds)
    with open(os.path.join(work, "incremental.json"), "w") as f:
        f.write(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
