"""Photo-like stand-ins for WIDER FACE images, which cannot be downloaded here.

- `write_sample` writes a small dataset in the WIDER layout: JPEGs under `images/<event>/` and
  train and val `*_bbx_gt.txt` files holding every quirk of the real files (trailing spaces, both
  empty-image placeholders, degenerate and invalid boxes, boxes past the edges, crowds of tiny
  faces, big faces), for end-to-end tests and the demo.
- `render_images` paints one image per entry of an existing annotation file (the real train or
  val file, or the test file list), so that benchmarks build the real annotations at full scale.

An image is a random crop of one of scikit-image's bundled public-domain photographs scaled to
1,024 px wide, with the astronaut's face pasted into every annotated box and mild sensor-like
grain on top, so that it compresses like a photo (150-250 KB). The same seed gives byte-identical
files: each image's randomness derives from (seed, filename) alone, whatever the process count.

    python -m pipeline.sample --output_dir=DIR [--num_images=48] [--seed=0]
    python -m pipeline.sample --render_for=ANNOTATIONS --images_dir=DIR [--list_format=boxes|names]
        [--seed=0] [--processes=N] [--noskip_existing]

Rendering shows its progress on stderr (images done of all, rate, time left): a bar redrawn in
place on a terminal, a line every 10 seconds otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Callable

import numpy as np
from absl import flags
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from pipeline import annotations
from reader.core import progress as progress_display

WIDTH = 1024  # every WIDER image is 1,024 px wide
MAX_HEIGHT = 4500  # the real boxes reach down to y + h = 4,441
# Common WIDER heights (16:9, 3:2, 4:3, 1:1, 3:4 portrait) and how often each is drawn.
_HEIGHTS = (576, 683, 768, 1024, 1366)
_HEIGHT_WEIGHTS = (0.1, 0.4, 0.3, 0.1, 0.1)
_FACE_CROP = (176, 56, 274, 178)  # hairline to chin in skimage.data.astronaut(), (left, top, right, bottom)
_GRAIN_SIGMA = 4.0  # grey levels: the high-frequency content that gives photo-like JPEG sizes
_GRAIN_ROWS = 2048  # rows of the grain tile; taller images wrap around it
_KB = 1024
_TARGET_BYTES = (160 * _KB, 240 * _KB)  # inside 150-250 KB, the size of a typical WIDER JPEG
_QUALITIES = (97, 95, 92, 90, 87, 84, 80, 75, 70, 60, 50, 40, 30)
_START_QUALITY = _QUALITIES.index(90)
_EVENTS = (
    "0--Parade", "2--Demonstration", "7--Cheering", "12--Group", "13--Interview",
    "20--Family_Group", "29--Students_Schoolkids", "50--Celebration_Or_Party",
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


@dataclasses.dataclass(frozen=True)
class _Sources:
    photos: tuple[Image.Image, ...]  # RGB backgrounds, none showing a face
    face: Image.Image  # RGB
    face_mask: Image.Image  # L, a soft ellipse so pasted faces blend in rather than show a box
    grain: np.ndarray  # uint8 [_GRAIN_ROWS, WIDTH, 3], 128 + Gaussian noise


@functools.cache
def _sources() -> _Sources:
    """Loaded once per process: decoding the photos costs more than drawing an image."""
    from skimage import (
        data,  # only images shipped inside the wheel: none of these downloads
    )

    # No astronaut or camera: their faces would be faces without a box.
    colour = (data.coffee(), data.chelsea(), data.rocket(), data.stereo_motorcycle()[0])
    grey = (data.grass(), data.gravel(), data.brick())
    photos = colour + tuple(np.stack([g] * 3, axis=-1) for g in grey)
    face = Image.fromarray(data.astronaut()).crop(_FACE_CROP)
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, face.width - 1, face.height - 1), fill=255)
    grain = np.random.default_rng(0).normal(128, _GRAIN_SIGMA, (_GRAIN_ROWS, WIDTH, 3))
    return _Sources(
        photos=tuple(Image.fromarray(p) for p in photos),
        face=face,
        face_mask=mask.filter(ImageFilter.GaussianBlur(3)),
        grain=np.clip(np.rint(grain), 0, 255).astype(np.uint8),
    )


@functools.lru_cache(maxsize=4096)
def _face(width: int, height: int, mirrored: bool) -> tuple[Image.Image, Image.Image]:
    """The face and its mask at width x height px; cached, as crowds repeat a few tiny sizes."""
    sources = _sources()
    face = sources.face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else sources.face
    size = (width, height)
    return face.resize(size, Image.Resampling.BILINEAR), sources.face_mask.resize(size, Image.Resampling.BILINEAR)


def _draw(faces: np.ndarray, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB WIDTH x `height` photo with a face in every box of `faces` (int32 [N, 10], xywh px).

    Boxes with no area are left unpainted; boxes past an edge are painted where they overlap.
    """
    sources = _sources()
    photo = sources.photos[rng.integers(len(sources.photos))]
    # Between half and all of the largest crop with the output's aspect ratio.
    aspect = height / WIDTH
    crop_w = min(photo.width, photo.height / aspect) * rng.uniform(0.5, 1.0)
    crop_h = crop_w * aspect
    left, top = rng.uniform(0, photo.width - crop_w), rng.uniform(0, photo.height - crop_h)
    image = photo.resize((WIDTH, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mirrored = (rng.random(len(faces)) < 0.5).tolist()
    for (x, y, w, h), flip in zip(faces[:, :4].tolist(), mirrored):
        if w > 0 and h > 0:
            face, mask = _face(w, h, flip)
            image.paste(face, (x, y), mask)
    rows = (rng.integers(_GRAIN_ROWS) + np.arange(height)) % _GRAIN_ROWS
    # Grain goes on last, over the faces too, as a sensor would put it.
    return ImageChops.add(image, Image.fromarray(sources.grain[rows]), scale=1.0, offset=-128)


def _encode(image: Image.Image, progressive: bool = False) -> bytes:
    """JPEG bytes, sized into _TARGET_BYTES where some quality allows it.

    Starts at quality 90 and walks the quality ladder towards the target until a size falls
    inside it, or just past it when one step jumps over the whole window.
    """

    def jpeg(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, progressive=progressive)
        return buffer.getvalue()

    low, high = _TARGET_BYTES
    index = _START_QUALITY
    encoded = jpeg(_QUALITIES[index])
    step = -1 if len(encoded) < low else 1 if len(encoded) > high else 0  # -1: towards higher quality
    while step and 0 <= index + step < len(_QUALITIES):
        index += step
        encoded = jpeg(_QUALITIES[index])
        if (len(encoded) >= low) if step < 0 else (len(encoded) <= high):
            break
    return encoded


def _write(path: str, data: bytes) -> None:
    """Writes through a temporary name, so a file present is always complete (reruns skip it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)


def _image_rng(seed: int, filename: str) -> np.random.Generator:
    """The randomness of one image: from the seed and its filename only, not the work order."""
    digest = hashlib.sha256(filename.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


def _typical_height(rng: np.random.Generator) -> int:
    return int(rng.choice(_HEIGHTS, p=_HEIGHT_WEIGHTS))


def _attributes(rng: np.random.Generator, sizes: np.ndarray, invalid_rate: float) -> np.ndarray:
    """WIDER attributes, int [N, 6], for faces whose smaller side is `sizes` px.

    Blur follows size as in WIDER (tiny faces are heavily blurred); the rest are rare.
    """
    n = len(sizes)
    blur = np.minimum(2, (sizes < 40).astype(int) + (sizes < 12) + (rng.random(n) < 0.1))
    return np.stack([
        blur,
        rng.random(n) < 0.05,  # expression: exaggerated
        rng.random(n) < 0.05,  # illumination: extreme
        rng.random(n) < invalid_rate,
        rng.choice(3, n, p=(0.7, 0.2, 0.1)),  # occlusion: none, partial, heavy
        rng.random(n) < 0.08,  # pose: atypical
    ], axis=1).astype(int)


def _faces(rng: np.random.Generator, widths: np.ndarray, height: int, invalid_rate: float = 0.05) -> np.ndarray:
    """Faces, int32 [N, 10], of the given widths (px) at random places inside WIDTH x `height`.

    A face is 1.1-1.35 times as tall as it is wide.
    """
    widths = np.asarray(widths)
    heights = np.rint(widths * rng.uniform(1.1, 1.35, len(widths))).astype(int)
    x = rng.integers(0, WIDTH - widths + 1)
    y = rng.integers(0, height - heights + 1)
    boxes = np.stack([x, y, widths, heights], axis=1)
    return np.concatenate([boxes, _attributes(rng, np.minimum(widths, heights), invalid_rate)], axis=1).astype(np.int32)


def _group_faces(rng: np.random.Generator, height: int) -> np.ndarray:
    """An ordinary photo's faces: 2-15 of them, 12-120 px wide."""
    n = rng.integers(2, 16)
    return _faces(rng, rng.integers(12, 121, n), height)


def _sample_faces(kind: str, height: int, rng: np.random.Generator) -> np.ndarray:
    """The faces of one sample image of the given kind (see _TRAIN_KINDS)."""
    if kind == "empty":
        return np.zeros((0, len(annotations.BOX_FIELDS)), np.int32)
    if kind == "crowd":  # hundreds of 3-10 px faces, as in WIDER's parades and concerts
        return _faces(rng, rng.integers(3, 8, rng.integers(150, 400)), height, invalid_rate=0.03)
    if kind == "big":  # one to three faces, hundreds of px, side by side
        n = int(rng.integers(1, 4))
        slot = WIDTH // n
        faces = _faces(rng, rng.integers(150, min(400, slot - 10) + 1, n), height, invalid_rate=0)
        faces[:, 0] = np.arange(n) * slot + rng.integers(0, slot - faces[:, 2] + 1)
        return faces
    faces = _group_faces(rng, height)
    if kind != "edges":
        return faces
    faces[0, 7] = 1  # invalid
    x, y = rng.integers(0, WIDTH - 100, 4), rng.integers(0, height - 100, 4)
    quirks = np.array([
        [WIDTH - 30, y[0], 60, 75],  # past the right edge
        [x[1], height - 40, 64, 80],  # past the bottom edge
        [x[2], y[2], 0, 14],  # zero width, not flagged invalid (as in WIDER)
        [x[3], y[3], 12, 0],  # zero height
    ])
    attributes = _attributes(rng, np.minimum(quirks[:, 2], quirks[:, 3]), invalid_rate=0)
    return np.concatenate([faces, np.concatenate([quirks, attributes], axis=1)]).astype(np.int32)


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
    split_dir = os.path.join(output_dir, "wider_face_split")
    sample = Sample(
        images_dir=os.path.join(output_dir, "images"),
        train_annotations=os.path.join(split_dir, "wider_face_train_bbx_gt.txt"),
        val_annotations=os.path.join(split_dir, "wider_face_val_bbx_gt.txt"),
    )
    os.makedirs(split_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_val = num_images // 4
    index = 0
    for split, count, kinds, path in (
        ("train", num_images - num_val, _TRAIN_KINDS, sample.train_annotations),
        ("val", num_val, _VAL_KINDS, sample.val_annotations),
    ):
        entries = []
        for position in range(count):
            kind = kinds[position] if position < len(kinds) else "group"
            event = _EVENTS[rng.integers(len(_EVENTS))]
            number, name = event.split("--")
            filename = f"{event}/{number}_{name}_{name}_{number}_{index}.jpg"
            height = _typical_height(rng)
            faces = _sample_faces(kind, height, rng)
            entries.append((filename, faces))
            image = _draw(faces, height, _image_rng(seed, filename))
            if kind == "gray":
                image = image.convert("L")
            _write(os.path.join(sample.images_dir, filename), _encode(image, progressive=kind == "progressive"))
            index += 1
        _write(path, annotations.format_boxes(entries, split).encode("ascii"))
    return sample


@dataclasses.dataclass(frozen=True)
class _Job:
    path: str
    filename: str
    faces: np.ndarray
    seed: int
    invent_faces: bool  # the entry comes from a file list, which has no boxes


def _render(job: _Job) -> None:
    rng = _image_rng(job.seed, job.filename)
    height = _typical_height(rng)
    faces = job.faces
    if job.invent_faces:
        faces = _group_faces(rng, height)
    elif len(faces):
        height = max(height, int((faces[:, 1] + faces[:, 3]).max()))
    height = min(height, MAX_HEIGHT)
    _write(job.path, _encode(_draw(faces, height, rng)))


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
    Images are WIDTH px wide; the height is a typical one, raised to contain every box (up to
    MAX_HEIGHT). A face is painted in every box; a file list has no boxes, so each of its images
    gets 2-15 faces at random places.
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
    flags.DEFINE_integer("num_images", 48, "Images in the sample, about 3:1 train:val.", lower_bound=MIN_SAMPLE_IMAGES, flag_values=values)
    flags.DEFINE_integer("seed", 0, "Same seed, byte-identical files.", lower_bound=0, flag_values=values)
    flags.DEFINE_string("render_for", None, "Render images for this existing annotation file.", flag_values=values)
    flags.DEFINE_string("images_dir", None, "With --render_for: the images root.", flag_values=values)
    flags.DEFINE_enum("list_format", "boxes", annotations.LIST_FORMATS, "With --render_for: boxes (*_bbx_gt.txt) or names (test file list).", flag_values=values)
    flags.DEFINE_integer("processes", None, "With --render_for: worker processes (default: one per CPU).", lower_bound=1, flag_values=values)
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


if __name__ == "__main__":
    sys.exit(main())
