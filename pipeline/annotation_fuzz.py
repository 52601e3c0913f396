"""Mutation fuzzing of the annotation parser (pipeline.annotations), seeded and reproducible.

Each case is an excerpt of a real annotation file (a few whole images of the train or val
`*_bbx_gt.txt`, or a few lines of the test file list), put through 0 to 3 mutations: truncation
at a byte offset, bit flips, inserted, deleted or random bytes, duplicated, swapped or dropped
lines, odd encodings (UTF-16, UTF-32, Latin-1, BOMs), CRLF / CR / mixed line endings, NUL and
other control characters, huge numbers and counts, Unicode digits, underscores, signs, other
whitespace, path spellings of one image (`./`, `//`, `/./`), lines past the length cap, whole
binary files. Case `i` of seed `s` depends on (s, i) alone, so any case can be replayed.

The invariant (check_case): parse either yields annotations (at least one image; faces int32
[N, 10]; attributes within reader.core.schema.ATTRIBUTE_MAX; paths without control characters,
unique after posixpath.normpath; increasing line numbers inside the file), or raises
AnnotationError whose message is one line `SOURCE:LINE: expected ..., found ...`, short, with
LINE between 1 and one past the file's last line. Nothing else escapes; no case is slow. The
bytes are parsed as a binary file (what the Beam job passes), and again through reads of random
sizes and, when they are UTF-8, as a text file: all must agree.

    python -m pipeline.annotation_fuzz [--cases=200000] [--seed=0] [--data_dir=...] [--show=I]

prints cases run, accepted, refused, escapes (exceptions other than AnnotationError), violations
(anything else breaking the invariant), the first failures and the slowest case; exits 1 on any
failure.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import posixpath
import random
import re
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
from absl import flags

from pipeline import annotations
from reader.core.schema import ATTRIBUTE_MAX

SOURCE = "gs://bucket/wider (fuzz).txt"  # regex metacharacters: the check must quote the name
# Per case, all its parses together. A case takes a few milliseconds; the bound is there to catch
# a hang or a blow-up (quadratic work on some input), not a machine that is busy meanwhile.
SLOW_SECONDS = 10.0
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "wider_face_split"
_FILES = (("wider_face_train_bbx_gt.txt", "boxes"), ("wider_face_val_bbx_gt.txt", "boxes"), ("wider_face_test_filelist.txt", "names"))
_MESSAGE = re.compile(re.escape(SOURCE) + r":(\d+): expected .+, found .+")
_MAX_MESSAGE = 300
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")  # spelled apart from the parser's on purpose
_PATH_LINE = re.compile(rb"^[^\n]*\.jpg\r?$", re.M)  # where an image starts in a *_bbx_gt.txt
_ANY_LINE = re.compile(rb"^.", re.M)
_ATTRIBUTE_MAX = np.array([ATTRIBUTE_MAX[name] for name in annotations.BOX_FIELDS[4:]])


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The real files' bytes, and where each excerpt may start: image starts (boxes), line
    starts (names). Offsets end with len(data)."""

    files: tuple[tuple[str, bytes, tuple[int, ...]], ...]  # (list_format, data, offsets)


def load_corpus(data_dir: str | pathlib.Path = DATA_DIR) -> Corpus:
    """Reads the three real WIDER annotation files under data_dir (data/wider_face_split)."""
    files = []
    for name, list_format in _FILES:
        data = (pathlib.Path(data_dir) / name).read_bytes()
        starting = _PATH_LINE if list_format == "boxes" else _ANY_LINE
        starts = [m.start() for m in starting.finditer(data)]
        files.append((list_format, data, tuple(starts) + (len(data),)))
    return Corpus(tuple(files))


@dataclasses.dataclass(frozen=True)
class Case:
    """One generated input: `data` to parse as `list_format`; `steps` says how it was made."""

    seed: int
    index: int
    list_format: str
    data: bytes
    steps: tuple[str, ...]


def make_case(corpus: Corpus, seed: int, index: int) -> Case:
    """Case `index` of `seed`: an excerpt and 0-3 mutations, drawn from Random(f"{seed}/{index}")."""
    rng = random.Random(f"{seed}/{index}")
    list_format, data, offsets = corpus.files[rng.choice((0, 0, 1, 2))]  # train is the richest
    first = rng.randrange(len(offsets) - 1)
    last = min(first + rng.choice((1, 1, 2, 3, 5, 8)) * (1 if list_format == "boxes" else 4), len(offsets) - 1)
    data = data[offsets[first] : offsets[last]]
    if list_format == "boxes" and len(data) > 8192:  # a 1,968-face image: keep cases quick
        data = data[:8192]
    steps = []
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        name, mutate = rng.choice(_MUTATIONS)
        data = mutate(rng, data)
        steps.append(name)
    if rng.random() < 0.03:  # the other format's parser on this file
        list_format = "names" if list_format == "boxes" else "boxes"
        steps.append("other_format")
    return Case(seed, index, list_format, data, tuple(steps))


def cases(corpus: Corpus, seed: int, count: int, start: int = 0) -> Iterator[Case]:
    """Cases start .. start+count-1 of `seed`."""
    for index in range(start, start + count):
        yield make_case(corpus, seed, index)


# --- mutations: (rng, data) -> data -------------------------------------------------------

_NUMBERS = (
    "99999999999", "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967296", "9" * 5000,
    "0" * 3000 + "1", "3_37", "1_0", "\u00b2", "\u0661", "\uff11", "\u0967", "\u07c1", "\U0001d7d9", "+1", "-1", "-0",
    "--1", "1.5", "1e3", "0x10", "", " ", "1\t", "\t", "\u00a0", "1 1", "NaN", "\x00", "3" * 70000,
)
_TOKENS = (
    b"\x00", b"\xff", b"\xfe", b"\xef\xbb\xbf", b"\xff\xfe", b"\r", b"\r\n", b"\n", b"\t", b" ", b"\x0b", b"\x0c",
    b"\x1c", b"\x1f", b"\x7f", "\x85".encode(), "\u2028".encode(), "\u00a0".encode(), "\u3000".encode(), b"\xc0\x80",
    b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"_", b"-", b"+", b"./", b"//", b"../", b"/", b"\\", b"0",
    b"99999999999", "\u00b2".encode(), "\u0661".encode(), "\u00e9".encode(), "\u00e9".encode("latin-1"), b"\xf0\x9f\x98\x80",
)
_SPACES = ("\t", "  ", "\u00a0", "\u3000", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\x00", "")
_NUMBER = re.compile(rb"-?[0-9]+")
_SPACE = re.compile(rb" ")


def _at(rng, data):
    return rng.randrange(len(data) + 1)


def _truncate(rng, data):
    return data[: _at(rng, data)]


def _flip_bit(rng, data):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def _set_byte(rng, data):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]


def _insert_random(rng, data):
    i = _at(rng, data)
    return data[:i] + rng.randbytes(rng.randint(1, 8)) + data[i:]


def _insert_token(rng, data):
    i = _at(rng, data)
    return data[:i] + rng.choice(_TOKENS) * rng.choice((1, 1, 2, 3)) + data[i:]


def _delete_span(rng, data):
    i = _at(rng, data)
    return data[:i] + data[i + rng.randint(1, 40) :]


def _lines(data):
    return data.splitlines(keepends=True)


def _duplicate_line(rng, data):
    lines = _lines(data)
    if not lines:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines) + 1)
    return b"".join(lines[:j] + [lines[i]] + lines[j:])


def _swap_lines(rng, data):
    lines = _lines(data)
    if len(lines) < 2:
        return data
    i, j = rng.sample(range(len(lines)), 2)
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def _drop_line(rng, data):
    lines = _lines(data)
    if not lines:
        return data
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def _replace_number(rng, data):
    numbers = list(_NUMBER.finditer(data))
    if not numbers:
        return data
    m = rng.choice(numbers)
    return data[: m.start()] + rng.choice(_NUMBERS).encode() + data[m.end() :]


def _replace_space(rng, data):
    spaces = list(_SPACE.finditer(data))
    if not spaces:
        return data
    m = rng.choice(spaces)
    return data[: m.start()] + rng.choice(_SPACES).encode() + data[m.end() :]


def _respell_path(rng, data):
    """The block of one image again, its path spelled another way: `./d/x`, `d//x`, `d/./x`."""
    paths = list(_PATH_LINE.finditer(data))
    if not paths:
        return data
    i = rng.randrange(len(paths))
    path = paths[i].group().rstrip(b"\r")
    spelled = rng.choice((b"./" + path, path.replace(b"/", b"//", 1), path.replace(b"/", b"/./", 1), b"../" + path, b"/" + path, path + b"/"))
    block = spelled + data[paths[i].end() : paths[i + 1].start() if i + 1 < len(paths) else len(data)]
    return data + (b"" if data.endswith(b"\n") else b"\n") + block


def _huge_count(rng, data):
    lines = _lines(data)
    counts = [i for i, line in enumerate(lines) if line.strip().isdigit()]
    if not counts:
        return data
    lines[rng.choice(counts)] = rng.choice((b"2147483647", b"2147483648", b"1000000000", b"9" * 300, b"4294967297")) + b"\n"
    return b"".join(lines)


def _long_line(rng, data):
    """A line just under, at or over the cap, or a long run without any line break."""
    size = annotations.MAX_LINE_BYTES + rng.choice((-1, 0, 1, 2, 1000, 1 << 20))
    filler = rng.choice((b"a", b"9", b" ", b"\xff", b"\x00", b"1 ")) * size
    i = _at(rng, data)
    return data[:i] + filler[:size] + data[i:]


def _encode(rng, data):
    """The whole text in another encoding, or with a byte-order mark."""
    text = data.decode("utf-8", "replace")
    choice = rng.randrange(8)
    if choice == 0:
        return text.encode(rng.choice(("utf-16", "utf-16-le", "utf-16-be", "utf-32")))
    if choice in (1, 2):  # Latin-1 / cp1252 accents in a path
        letters = [m.start() for m in re.finditer("[a-z]", text)]
        if letters:
            i = rng.choice(letters)
            text = text[:i] + rng.choice("\u00e9\u00fc\u00e5\u00df") + text[i + 1 :]
        return text.encode("latin-1" if choice == 1 else "cp1252", "replace")
    if choice == 3:
        return b"\xef\xbb\xbf" + data
    if choice == 4:
        return b"\xef\xbb\xbf\xef\xbb\xbf" + data
    if choice == 5:
        return rng.choice((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) + data
    if choice == 6:  # what a lenient reader makes of it: bad bytes become U+FFFD
        return text.encode("utf-8")
    return data.decode("latin-1").encode("utf-8")  # mojibake: UTF-8 bytes seen as Latin-1


def _line_endings(rng, data):
    """Other line endings, for the whole file or line by line (mixed)."""
    ending = rng.choice((b"\r\n", b"\r", b"\n\r", b"\x00", b"\x85", b"\r\r\n"))
    if rng.random() < 0.5:
        return data.replace(b"\n", ending)
    lines = _lines(data)
    return b"".join(line.rstrip(b"\r\n") + rng.choice((b"\n", b"\r\n", b"\r", ending)) for line in lines)


def _blank_lines(rng, data):
    """Blank lines before or after the images, or no final line break."""
    blank = rng.choice((b"\n", b"\r\n", b" \n", b"\t\n", b"\xef\xbb\xbf\n"))
    return rng.choice((blank * rng.randint(1, 4) + data, data + blank * rng.randint(1, 4), data.rstrip(b"\n")))


def _replace_whole(rng, data):
    """Another file altogether: random bytes, an image, an empty file, digit noise."""
    choice = rng.randrange(6)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 4096))
    if choice == 1:  # a JPEG given as annotations
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00" + rng.randbytes(rng.randint(0, 4096))
    if choice == 2:
        return b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(0, 4096))
    if choice == 3:
        return rng.choice((b"", b"\n", b"\n\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b" \t \n", b"\r", b"\x00"))
    if choice == 4:
        return rng.randbytes(rng.randint(0, 64)).replace(b"\n", b"")
    # Noise made of the format's own characters: counts and boxes in the wrong places.
    return bytes(rng.choice(b"0123456789 -\n\r\t") for _ in range(rng.randint(1, 300)))


_MUTATIONS: tuple[tuple[str, Callable[[random.Random, bytes], bytes]], ...] = tuple(
    (f.__name__.lstrip("_"), f)
    for f in (
        _truncate, _truncate, _flip_bit, _set_byte, _insert_random, _insert_token, _insert_token, _delete_span,
        _duplicate_line, _swap_lines, _drop_line, _replace_number, _replace_number, _replace_space, _respell_path,
        _respell_path, _huge_count, _long_line, _encode, _encode, _line_endings, _blank_lines, _replace_whole,
    )
)


# --- the invariant --------------------------------------------------------------------------


class _RandomReads(io.BytesIO):
    """A binary file whose reads return fewer bytes than asked, as network readers may."""

    def __init__(self, data: bytes, rng: random.Random):
        super().__init__(data)
        self._rng = rng

    def read(self, size=-1):
        return super().read(self._rng.choice((1, 2, 3, 7, 64, 4096, 1 << 16)))


def _outcome(lines, list_format: str):
    """('accepted', [(filename, line, faces)]) or ('refused', message); other exceptions escape."""
    try:
        return "accepted", [(a.filename, a.line, a.faces) for a in annotations.parse(lines, SOURCE, list_format)]
    except annotations.AnnotationError as error:
        return "refused", error


def _violation(case: Case, kind: str, result) -> str | None:
    """What breaks the invariant in one outcome, or None."""
    lines_in_file = len(case.data.splitlines())
    if kind == "refused":
        message = str(result)
        match = _MESSAGE.fullmatch(message)
        if not match or int(match.group(1)) != result.line or result.source != SOURCE:
            return f"malformed message {message[:200]!r}"
        if not 1 <= result.line <= lines_in_file + 1:
            return f"line {result.line} outside the file's {lines_in_file} lines: {message[:200]!r}"
        if len(message) > _MAX_MESSAGE:
            return f"message of {len(message)} characters: {message[:200]!r}..."
        return None
    if not result:
        return "accepted a file without images"
    seen, previous = set(), 0
    for filename, line, faces in result:
        if not isinstance(faces, np.ndarray) or faces.dtype != np.int32 or faces.ndim != 2 or faces.shape[1] != 10:
            return f"faces of {filename!r}: {type(faces).__name__} {getattr(faces, 'dtype', '')} {getattr(faces, 'shape', '')}"
        if case.list_format == "names" and len(faces):
            return f"faces in a file list for {filename!r}"
        if ((faces[:, 4:] < 0) | (faces[:, 4:] > _ATTRIBUTE_MAX)).any():
            return f"attribute out of range for {filename!r}: {faces.tolist()[:3]}"
        if not isinstance(filename, str) or not filename or _CONTROL.search(filename) or filename != filename.strip(" \t"):
            return f"path {filename!r} accepted"
        key = posixpath.normpath(filename)
        if key in seen:
            return f"{filename!r} accepted twice"
        seen.add(key)
        if not previous < line <= lines_in_file:
            return f"line {line} of {filename!r} after line {previous}, in a file of {lines_in_file} lines"
        previous = line
    return None


def _same(a, b) -> bool:
    (kind_a, result_a), (kind_b, result_b) = a, b
    if kind_a != kind_b:
        return False
    if kind_a == "refused":
        return str(result_a) == str(result_b)
    return len(result_a) == len(result_b) and all(
        x[:2] == y[:2] and np.array_equal(x[2], y[2]) for x, y in zip(result_a, result_b)
    )


def check_case(case: Case) -> tuple[str, str | None, float]:
    """Parses the case's bytes and checks the invariant: (outcome, what went wrong or None,
    seconds). outcome: "accepted" or "refused" (both fine), "escape" (an exception other than
    AnnotationError) or "violation" (a bad result or message, parses that disagree, a slow case)."""
    rng = random.Random(f"reads/{case.seed}/{case.index}")
    started = time.perf_counter()
    try:
        first = _outcome(io.BytesIO(case.data), case.list_format)
        others = [("reads of random sizes", _outcome(_RandomReads(case.data, rng), case.list_format))]
        try:
            case.data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            text_file = io.TextIOWrapper(io.BytesIO(case.data), encoding="utf-8")  # universal newlines
            others.append(("a text file", _outcome(text_file, case.list_format)))
    except Exception as error:  # what the fuzzer hunts: anything but AnnotationError
        return "escape", f"{type(error).__name__}: {str(error)[:200]}", time.perf_counter() - started
    seconds = time.perf_counter() - started
    problem = _violation(case, *first)
    for how, other in others:
        if problem is None and not _same(first, other):
            problem = f"parsed as {how}: {other[0]} {str(other[1])[:120]!r}, as a binary file: {first[0]} {str(first[1])[:120]!r}"
    if problem is None and seconds > SLOW_SECONDS:
        problem = f"took {seconds:.2f} s"
    return ("violation" if problem else first[0]), problem, seconds


@dataclasses.dataclass
class Summary:
    """Figures of a run. failures: (case index, steps, what went wrong), the first 20."""

    cases: int = 0
    accepted: int = 0
    refused: int = 0
    escape: int = 0
    violation: int = 0
    slowest: float = 0.0
    slowest_index: int = -1
    failures: list = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"cases run: {self.cases}\naccepted: {self.accepted}\nrefused: {self.refused}\n"
            f"escapes: {self.escape}\nviolations: {self.violation}\n"
            f"slowest case: {self.slowest * 1000:.1f} ms (case {self.slowest_index})"
        )


def run(corpus: Corpus, seed: int, count: int, start: int = 0) -> Summary:
    """Generates and checks cases start .. start+count-1 of `seed`."""
    summary = Summary()
    for case in cases(corpus, seed, count, start):
        outcome, problem, seconds = check_case(case)
        summary.cases += 1
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        if problem is not None and len(summary.failures) < 20:
            summary.failures.append((case.index, case.steps, f"{outcome}: {problem}"))
        if seconds > summary.slowest:
            summary.slowest, summary.slowest_index = seconds, case.index
    return summary


def _define_flags() -> flags.FlagValues:
    values = flags.FlagValues()
    flags.DEFINE_integer("cases", 200_000, "Cases to run.", lower_bound=1, flag_values=values)
    flags.DEFINE_integer("seed", 0, "Same seed, same cases.", lower_bound=0, flag_values=values)
    flags.DEFINE_integer("start", 0, "Index of the first case.", lower_bound=0, flag_values=values)
    flags.DEFINE_string("data_dir", str(DATA_DIR), "The real annotation files (data/wider_face_split).", flag_values=values)
    flags.DEFINE_integer("show", None, "Print case SHOW of --seed (its bytes and outcome) instead of a run.", lower_bound=0, flag_values=values)
    return values


def main(argv: list[str] | None = None) -> int:
    """The CLI. argv includes the program name (default sys.argv). Returns 0, 1 when anything
    escaped, or 2 on bad usage."""
    values = _define_flags()
    try:
        values(sys.argv if argv is None else argv)
    except flags.Error as error:
        print(f"error: {error}\n{__doc__}", file=sys.stderr)
        return 2
    corpus = load_corpus(values.data_dir)
    if values.show is not None:
        case = make_case(corpus, values.seed, values.show)
        print(f"steps: {case.steps}\nformat: {case.list_format}\ndata: {case.data[:2000]!r}")
        print(check_case(case))
        return 0
    started = time.perf_counter()
    summary = run(corpus, values.seed, values.cases, values.start)
    print(f"seed {values.seed}, cases {values.start}..{values.start + values.cases - 1}\n{summary}")
    for index, steps, problem in summary.failures:
        print(f"case {index} {steps}: {problem}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
