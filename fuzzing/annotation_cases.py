"""The cases of the annotation fuzzer (fuzzing.annotation_fuzz, which checks them): excerpts of
the real WIDER files and the mutations put on them, seeded and reproducible.

load_corpus reads the three real annotation files. make_case(corpus, seed, index) cuts an
excerpt (a few whole images of the train or val `*_bbx_gt.txt`, or a few lines of the test file
list) and puts it through 0 to 3 mutations, each a function (rng, data) -> data: truncation,
bit flips, inserted, deleted or random bytes, duplicated, swapped or dropped lines, other
encodings and byte-order marks, other line endings, control characters, huge numbers and
counts, Unicode digits, other whitespace, other spellings of one image's path, lines past the
length cap, whole other files. Everything is drawn from Random(f"{seed}/{index}") alone, so
case `index` of `seed` can be replayed on its own.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import re
from collections.abc import Callable, Iterator

from pipeline import annotations

DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "wider_face_split"
_FILES = (
    ("wider_face_train_bbx_gt.txt", "boxes"),
    ("wider_face_val_bbx_gt.txt", "boxes"),
    ("wider_face_test_filelist.txt", "names"),
)
_PATH_LINE = re.compile(rb"^[^\n]*\.jpg\r?$", re.M)  # where an image starts in a *_bbx_gt.txt
_ANY_LINE = re.compile(rb"^.", re.M)


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

# fmt: off
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
# fmt: on
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


def _replace_one(rng, data, pattern, choices):
    """One match of `pattern`, drawn at random, replaced by one of `choices`."""
    found = list(pattern.finditer(data))
    if not found:
        return data
    m = rng.choice(found)
    return data[: m.start()] + rng.choice(choices).encode() + data[m.end() :]


def _replace_number(rng, data):
    return _replace_one(rng, data, _NUMBER, _NUMBERS)


def _replace_space(rng, data):
    return _replace_one(rng, data, _SPACE, _SPACES)


def _respell_path(rng, data):
    """The block of one image again, its path spelled another way: `./d/x`, `d//x`, `d/./x`."""
    paths = list(_PATH_LINE.finditer(data))
    if not paths:
        return data
    i = rng.randrange(len(paths))
    path = paths[i].group().rstrip(b"\r")
    spelled = rng.choice(
        (b"./" + path, path.replace(b"/", b"//", 1), path.replace(b"/", b"/./", 1), b"../" + path, b"/" + path, path + b"/")
    )
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


# fmt: off
_MUTATIONS: tuple[tuple[str, Callable[[random.Random, bytes], bytes]], ...] = tuple(
    (f.__name__.lstrip("_"), f)
    for f in (
        _truncate, _truncate, _flip_bit, _set_byte, _insert_random, _insert_token, _insert_token, _delete_span,
        _duplicate_line, _swap_lines, _drop_line, _replace_number, _replace_number, _replace_space, _respell_path,
        _respell_path, _huge_count, _long_line, _encode, _encode, _line_endings, _blank_lines, _replace_whole,
    )
)
# fmt: on
