"""Mistakes a build can see in its first lines of input, before Beam starts (one line each).

- A Dataflow job given local paths: its workers would find nothing there.
- An annotation file of the other format than the split reads (`*_bbx_gt.txt` with
  `--split=test`, the test file list with train or val): the parser would fail somewhere inside
  the file with a puzzling line (`found '29' again`).
- `--images_dir` one level off: no image of the first few listed is there, but a folder near it
  holds them all (WIDER_val/ instead of WIDER_val/images/).
"""

from __future__ import annotations

import os
import re

from reader.core import storage

HEAD_BYTES = 64 * 1024  # enough for the first images of any WIDER file
SAMPLED_IMAGES = 8
_IMAGE_PATH = re.compile(rb"\S.*\.(jpe?g|png|bmp|gif|webp|tiff?)", re.IGNORECASE)
FORMATS = {
    "boxes": "a *_bbx_gt.txt file (a face count after each image path)",
    "names": "a file list (one image path a line, no face counts)",
}
REMOTE_RUNNERS = ("DataflowRunner",)


def local_paths_for_remote_runner(runner: str, paths: dict[str, str | None]) -> str | None:
    """The one line refusing a runner whose workers are elsewhere given local paths, or None.
    paths: {flag name: path or None}."""
    if runner not in REMOTE_RUNNERS:
        return None
    local = [f"--{name}={path}" for name, path in paths.items() if path is not None and storage.is_local(path)]
    if not local:
        return None
    return f"--runner={runner} with local paths ({', '.join(local)}): its workers cannot read or write this machine's files; give gs:// paths"


def read_head(path: str, options=None) -> bytes:
    """The first HEAD_BYTES of a file (local, gs://, s3://; `options`: Beam's PipelineOptions,
    whose storage settings gs:// and s3:// need)."""
    if options is not None:
        from pipeline import worker_setup

        worker_setup.apply(worker_setup.settings_of(options))
    with storage.open_input(path) as f:
        return f.read(HEAD_BYTES)


def _whole_lines(head: bytes) -> list[bytes]:
    """The lines of a file's first bytes, without the last one when the bytes end inside it."""
    lines = head.splitlines()
    return lines[:-1] if len(head) >= HEAD_BYTES and not head.endswith(b"\n") else lines


def file_format(head: bytes) -> str | None:
    """ "boxes" or "names": what the first lines of an annotation file look like; None if unsure."""
    lines = [line.strip() for line in _whole_lines(head) if line.strip()][:3]
    if len(lines) < 2 or not _IMAGE_PATH.fullmatch(lines[0]):
        return None
    if lines[1].isdigit():
        return "boxes"
    if all(_IMAGE_PATH.fullmatch(line) for line in lines):
        return "names"
    return None


def format_mismatch(path: str, head: bytes, expected: str, asked_by: str, fix: str) -> str | None:
    """The one line saying that the file at `path` is of the other format than `expected`
    ("boxes" or "names", which the flag `asked_by` chose; `fix` says what to give instead)."""
    found = file_format(head)
    if found is None or found == expected:
        return None
    return f"{path}: {FORMATS[found]}, but {asked_by} reads {FORMATS[expected]}: {fix}"


def build_format_mismatch(path: str, head: bytes, split: str) -> str | None:
    expected = "names" if split == "test" else "boxes"
    fix = (
        "give --split=train or --split=val, or the test file list"
        if split == "test"
        else f"give the {split} *_bbx_gt.txt file, or --split=test"
    )
    return format_mismatch(path, head, expected, f"--split={split}", fix)


def sample_format_mismatch(path: str, list_format: str) -> str | None:
    """pipeline.sample --render_for=path with --list_format=list_format: the line, or None."""
    other = "names" if list_format == "boxes" else "boxes"
    return format_mismatch(f"--render_for={path}", read_head(path), list_format, f"--list_format={list_format}",
                           f"give --list_format={other}")  # fmt: skip


def listed_images(head: bytes, count: int = SAMPLED_IMAGES) -> list[str]:
    """The first `count` image paths of an annotation file's first bytes (either format)."""
    found = []
    for line in _whole_lines(head):
        line = line.strip()
        if _IMAGE_PATH.fullmatch(line) and not line.isdigit():
            found.append(line.decode("utf-8", "replace"))
            if len(found) == count:
                break
    return found


def _holds(folder: str, images: list[str]) -> bool:
    return all(os.path.isfile(os.path.join(folder, image)) for image in images)


def images_dir_mismatch(images_dir: str, images: list[str]) -> str | None:
    """The one line for a local --images_dir that holds none of `images` (paths relative to it)
    while a folder near it (below it, two levels at most, or its parent) holds them all; None
    otherwise (also when nothing near holds them: the build then lists each missing image)."""
    if not images or any(os.path.isfile(os.path.join(images_dir, image)) for image in images):
        return None
    candidates = [os.path.dirname(os.path.abspath(images_dir))]
    try:
        children = sorted(entry.path for entry in os.scandir(images_dir) if entry.is_dir(follow_symlinks=False))
        for child in children[:64]:
            candidates.append(child)
            with os.scandir(child) as entries:
                candidates.extend(sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))[:64])
    except OSError:
        pass
    for folder in candidates:
        if _holds(folder, images):
            return (f"--images_dir={images_dir}: none of the first {len(images)} images listed is there "
                    f"({images[0]}, ...); they are all under {folder}: give --images_dir={folder}")  # fmt: skip
    return None


def check(build, options) -> None:
    """Raises beam_flags.UsageError with the first of the mistakes above that `build` (a
    pipeline.job.Job) makes, before anything is written. An annotation file it cannot read is
    left to pipeline.cli.check_inputs to name."""
    from pipeline import beam_flags

    paths = {"annotations": build.annotations, "images_dir": build.images_dir, "output_dir": build.output.output_dir}
    if build.reuse_from not in (None, build.output.output_dir):
        paths["reuse_from"] = build.reuse_from
    problem = local_paths_for_remote_runner(beam_flags.runner_name(options), paths)
    if problem is None and beam_flags.writes(options):  # a dry run or a template opens no input
        try:
            head = read_head(build.annotations, options)
        except Exception:  # missing, unreadable, no credentials: check_inputs says which, in one line
            return
        problem = build_format_mismatch(build.annotations, head, build.output.split)
        if problem is None and storage.is_local(build.images_dir):
            problem = images_dir_mismatch(storage.local_path(build.images_dir), listed_images(head))
    if problem is not None:
        raise beam_flags.UsageError(problem)
