"""`python -m pipeline.sample`: WIDER-layout datasets of photo-like images, made with pipeline.sample.synthetic.

- `write_sample` writes a small dataset in the WIDER layout: JPEGs under `images/<event>/` and
  train and val `*_bbx_gt.txt` files holding every quirk of the real files (trailing spaces, both
  empty-image placeholders, degenerate and invalid boxes, boxes past the edges, crowds of tiny
  faces, big faces), for end-to-end tests and the demo.
- `render_images` paints one image per entry of an existing annotation file (the real train or
  val file, or the test file list), so that benchmarks build the real annotations at full scale.

Images are `synthetic.photo`s: 1,024 px wide, 150-250 KB, a face pasted into every annotated box.
The same seed gives byte-identical files: each image's randomness derives from (seed, filename)
alone, whatever the process count.

    python -m pipeline.sample --output_dir=DIR [--num_images=48] [--seed=0]
    python -m pipeline.sample --render_for=ANNOTATIONS --images_dir=DIR [--list_format=boxes|names]
        [--seed=0] [--processes=N] [--noskip_existing]

Rendering shows its progress on stderr (images done of all, rate, time left): a bar redrawn in
place on a terminal, a line every 10 seconds otherwise.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
from absl import flags

from pipeline import annotations, preflight
from pipeline.sample import synthetic
from reader.core import progress as progress_display
from reader.core import schema

_EVENTS = (
    "0--Parade",
    "2--Demonstration",
    "7--Cheering",
    "12--Group",
    "13--Interview",
    "20--Family_Group",
    "29--Students_Schoolkids",
    "50--Celebration_Or_Party",
)
# The images each split opens with, so a sample of any allowed size holds every quirk. The rest
# are "group" images; "gray" and "progressive" are group images stored in that JPEG flavour.
_TRAIN_KINDS = ("crowd", "big", "empty", "edges", "gray", "progressive")
_VAL_KINDS = ("big", "empty", "edges")
MIN_SAMPLE_IMAGES = 4 * len(_VAL_KINDS)  # val gets a quarter of the images
Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclasses.dataclass(frozen=True)
class Sample:
    """Paths written by `write_sample`: the images root and the two annotation files."""

    images_dir: str
    train_annotations: str
    val_annotations: str


def _sample_faces(kind: str, height: int, rng: np.random.Generator) -> np.ndarray:
    """The faces of one sample image of the given kind (see _TRAIN_KINDS)."""
    width = synthetic.WIDTH
    if kind == "empty":
        return synthetic.no_faces()
    if kind == "crowd":  # hundreds of 3-10 px faces, as in WIDER's parades and concerts
        return synthetic.random_faces(rng, rng.integers(3, 8, rng.integers(150, 400)), height, invalid_rate=0.03)
    if kind == "big":  # one to three faces, hundreds of px, side by side
        n = int(rng.integers(1, 4))
        slot = width // n
        faces = synthetic.random_faces(rng, rng.integers(150, min(400, slot - 10) + 1, n), height, invalid_rate=0)
        faces[:, 0] = np.arange(n) * slot + rng.integers(0, slot - faces[:, 2] + 1)
        return faces
    faces = synthetic.group_faces(rng, height)
    if kind != "edges":
        return faces
    faces[0, 4:][schema.INVALID_ATTRIBUTE] = 1  # its attributes (a view): flagged invalid
    x, y = rng.integers(0, width - 100, 4), rng.integers(0, height - 100, 4)
    quirks = np.array(
        [
            [width - 30, y[0], 60, 75],  # past the right edge
            [x[1], height - 40, 64, 80],  # past the bottom edge
            [x[2], y[2], 0, 14],  # zero width, not flagged invalid (as in WIDER)
            [x[3], y[3], 12, 0],  # zero height
        ]
    )
    attributes = synthetic.attributes(rng, np.minimum(quirks[:, 2], quirks[:, 3]), invalid_rate=0)
    return np.concatenate([faces, np.concatenate([quirks, attributes], axis=1)]).astype(np.int32)


def _sample_pictures(
    rng: np.random.Generator, seed: int, count: int, kinds: tuple[str, ...], first: int
) -> Iterator[synthetic.Picture]:
    """`count` images of one split, numbered from `first`, opening with `kinds`."""
    for position in range(count):
        kind = kinds[position] if position < len(kinds) else "group"
        event = _EVENTS[rng.integers(len(_EVENTS))]
        number, name = event.split("--")
        filename = f"{event}/{number}_{name}_{name}_{number}_{first + position}.jpg"
        height = synthetic.typical_height(rng)
        faces = _sample_faces(kind, height, rng)
        image = synthetic.photo(faces, height, synthetic.image_rng(seed, filename))
        if kind == "gray":
            image = image.convert("L")
        yield synthetic.Picture(filename, faces, synthetic.encode_photo(image, progressive=kind == "progressive"))


def write_sample(output_dir: str, num_images: int = 48, seed: int = 0) -> Sample:
    """Writes a WIDER-layout sample dataset of `num_images` images under `output_dir`.

    Writes output_dir/images/<event>/<name>.jpg (1,024 px wide, 150-250 KB, one of them greyscale
    and one progressive) and output_dir/wider_face_split/wider_face_{train,val}_bbx_gt.txt, about
    3:1 train:val, holding every quirk of the real files. Same seed, byte-identical files.
    """
    if num_images < MIN_SAMPLE_IMAGES:
        raise ValueError(f"num_images must be at least {MIN_SAMPLE_IMAGES} to hold every quirk, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(seed)  # one stream for both splits, in this order: train, then val
    num_val = num_images // 4
    train, images_dir = synthetic.write_split(
        output_dir, "train", _sample_pictures(rng, seed, num_images - num_val, _TRAIN_KINDS, 0)
    )
    val, _ = synthetic.write_split(output_dir, "val", _sample_pictures(rng, seed, num_val, _VAL_KINDS, num_images - num_val))
    return Sample(images_dir=images_dir, train_annotations=train, val_annotations=val)


@dataclasses.dataclass(frozen=True)
class _Job:
    path: str
    filename: str
    faces: np.ndarray
    seed: int
    invent_faces: bool  # the entry comes from a file list, which has no boxes


def _render(job: _Job) -> None:
    rng = synthetic.image_rng(job.seed, job.filename)
    height = synthetic.typical_height(rng)
    faces = job.faces
    if job.invent_faces:
        faces = synthetic.group_faces(rng, height)
    elif len(faces):
        height = max(height, int((faces[:, 1] + faces[:, 3]).max()))
    height = min(height, synthetic.MAX_HEIGHT)
    synthetic.write_file(job.path, synthetic.encode_photo(synthetic.photo(faces, height, rng)))


def render_images(
    annotations_path: str,
    images_dir: str,
    seed: int = 0,
    processes: int | None = None,
    list_format: str = "boxes",
    skip_existing: bool = True,
    progress: Progress | None = None,
) -> int:
    """Writes a photo-like JPEG for every image of an existing annotation file.

    annotations_path: a `*_bbx_gt.txt` file (list_format "boxes") or the test file list ("names").
    images_dir: each image goes to images_dir/<filename as written>; entries whose path leaves
      images_dir are skipped.
    Images are synthetic.WIDTH px wide; the height is a typical one, raised to contain every box
    (up to synthetic.MAX_HEIGHT). A face is painted in every box; a file list has no boxes, so
    each of its images gets 2-15 faces at random places.
    processes: worker processes, default os.cpu_count(); 1 draws in this process.
    skip_existing: keep files already there (always whole: files are written via a rename).
    progress: called with (images done, images to write) before the first and after each image.
    Returns the number of images written.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    root = os.path.abspath(images_dir)
    jobs = []
    with open(annotations_path, "rb") as lines:
        for entry in annotations.parse(lines, annotations_path, list_format):
            path = os.path.abspath(os.path.join(root, entry.filename))
            if os.path.commonpath([root, path]) != root or (skip_existing and os.path.exists(path)):
                continue
            jobs.append(_Job(path, entry.filename, entry.faces, seed, list_format == "names"))
    processes = processes or os.cpu_count() or 1
    report = progress or _no_progress
    report(0, len(jobs))
    if processes == 1 or len(jobs) < 2:
        for done, job in enumerate(jobs, 1):
            _render(job)
            report(done, len(jobs))
    else:
        # spawn: workers share no state with the parent (which may run threads, e.g. TensorFlow's).
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for done, _ in enumerate(pool.imap_unordered(_render, jobs, chunksize=8), 1):
                report(done, len(jobs))
    return len(jobs)


def _no_progress(done: int, total: int) -> None:
    pass


def _define_flags() -> flags.FlagValues:
    values = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "Write a sample dataset here.", flag_values=values)
    flags.DEFINE_integer(
        "num_images", 48, "Images in the sample, about 3:1 train:val.", lower_bound=MIN_SAMPLE_IMAGES, flag_values=values
    )
    flags.DEFINE_integer("seed", 0, "Same seed, byte-identical files.", lower_bound=0, flag_values=values)
    flags.DEFINE_string("render_for", None, "Render images for this existing annotation file.", flag_values=values)
    flags.DEFINE_string("images_dir", None, "With --render_for: the images root.", flag_values=values)
    flags.DEFINE_enum(
        "list_format",
        "boxes",
        annotations.LIST_FORMATS,
        "With --render_for: boxes (*_bbx_gt.txt) or names (test file list).",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "processes", None, "With --render_for: worker processes (default: one per CPU).", lower_bound=1, flag_values=values
    )
    flags.DEFINE_boolean("skip_existing", True, "With --render_for: keep images already written.", flag_values=values)
    return values


def usage() -> str:
    return f"{__doc__}\nflags:\n{_define_flags().get_help()}"


def main(argv: list[str] | None = None) -> int:
    """The CLI. argv includes the program name (default sys.argv). Returns 0; 1 when the
    annotation file to render for is malformed or a file cannot be written; 2 on bad usage."""
    argv = sys.argv if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv[1:]):
        print(usage())
        return 0
    values = _define_flags()
    try:
        values(argv)
        if (values.output_dir is None) == (values.render_for is None):
            raise flags.Error("expected exactly one of --output_dir and --render_for")
        if values.render_for is not None and values.images_dir is None:
            raise flags.Error("--render_for needs --images_dir")
        for name in ("output_dir", "images_dir"):
            if values[name].value is not None and os.path.exists(values[name].value) and not os.path.isdir(values[name].value):
                raise flags.Error(f"--{name}={values[name].value}: a file, not a directory")
        if values.render_for is not None and not os.path.isfile(values.render_for):
            raise flags.Error(f"--render_for={values.render_for}: no such file")
        if values.render_for is not None and (
            mismatch := preflight.sample_format_mismatch(values.render_for, values.list_format)
        ):
            raise flags.Error(mismatch)
    except flags.Error as error:
        print(f"pipeline.sample: {error}; --help lists every flag", file=sys.stderr)
        return 2
    try:
        if values.output_dir is not None:
            sample = write_sample(values.output_dir, values.num_images, values.seed)
            for field in dataclasses.fields(sample):
                print(f"{field.name}: {getattr(sample, field.name)}")
        else:
            written = render_images(
                values.render_for, values.images_dir, values.seed, values.processes, values.list_format, values.skip_existing,
                progress=progress_display.Progress("rendering", stream=sys.stderr, interval=10.0),
            )  # fmt: skip
            print(f"wrote {written} images under {values.images_dir}")
    except (annotations.AnnotationError, OSError) as error:  # a malformed file to render for; a disk that refuses
        print(f"pipeline.sample: {error}", file=sys.stderr)
        return 1
    return 0
