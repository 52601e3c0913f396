"""JPEG files cut short and "repaired" with an end marker: telling them from complete ones.

pipeline.images decodes every source; for a JPEG it then asks `scan_was_cut` whether libjpeg ran
out of scan data and filled the rest in, and refuses the image as truncated when it did. This
module owns that judgement: the walk over the file's markers and scans, and the probe decodes.
It decodes only inside a probe, where a failure is an answer (the probe was read as scan data),
never an error: it raises nothing of its own.

libjpeg does not fail when a scan's data stops at a marker (say an EOI appended to a file cut
in half): it warns "premature end of data segment", which Pillow discards, and decodes the
missing blocks with zero coefficients, flat mid-grey. Whether that happened is decided by
decoding a second time with a probe, bytes that hold no marker, put where the last scan's
data stops. A complete scan never reads them (libjpeg skips bytes between a scan and the next
marker), so the pixels are the same; a scan that ran short reads them as data, so the pixels
change. The second decode costs as much as the first, so it runs only on suspicion:
- the bottom-right pixel has libjpeg's zero fill (every band 128, or 127 inverted for
  Adobe CMYK): a cut single-scan (baseline) file, or a progressive one cut in its first scan;
- a progressive file whose scans stop before every coefficient of every component reached
  full precision: a file cut in one of its scans before the last one.
Not seen: a progressive file cut in its last scan (libjpeg's script ends refining the low bits
of the luminance AC coefficients; what is left out moved the rows of 1,024-px photos by 2.6
grey levels at most, BENCHMARKS.md), and sequential files with one scan per component (rare)
cut in a chroma scan. The second decode is not counted in the pixel budget (one lease per
image): for the few files under suspicion, their pixels are held twice for a moment.
"""

from __future__ import annotations

import dataclasses
import io
import re

from PIL import Image

# A marker ending a scan's data, from its first fill byte: FF then neither a stuffed 00, RSTn
# nor more fill. (A file cut just after the FF of a stuffed FF 00 ends in FF FF D9.) The
# look-behind starts a match only at the first byte of a run of FF, and the possessive run never
# gives bytes back, so the search stays linear on a run of any length (a plain `\xff+` retried
# the whole run from each of its bytes: a 100 KB file with 96,000 fill bytes took 37 s).
_ENTROPY_END = re.compile(rb"(?<!\xff)\xff++[^\x00\xd0-\xd7\xff]")
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_ALL_COEFFICIENTS = (1 << 64) - 1
_ZERO_FILL = (127, 128)
# No 0xFF, so no marker: libjpeg reads a probe as scan data or skips it as stray bytes. Three
# bit patterns for progressive files, because in an AC scan a probe may happen to decode as a
# run of empty blocks reaching the end, which changes nothing, like the zero fill.
_PROBES = (
    bytes(range(1, 255)) * 16,
    bytes(range(254, 0, -1)) * 16,
    bytes((i * 197 + 89) % 254 + 1 for i in range(4096)),
)


@dataclasses.dataclass(frozen=True)
class _Scans:
    """data_end: offset where the entropy-coded data of the last scan stops (None: no scan
    found); complete: every component of the frame reached full precision in every coefficient."""

    data_end: int | None
    complete: bool


def _walk(data: bytes) -> _Scans:
    """Walks the markers of the first image in `data` (a JPEG stream) up to its EOI.

    Never raises: the walk stops where the structure stops making sense (libjpeg had decoded
    the file, so the walk only informs the decision whether to probe).
    """
    components: list[int] = []
    precise: dict[int, int] = {}  # component id -> bit mask of coefficients coded with Al = 0
    data_end, pos, size = None, 2, len(data)
    while pos + 1 < size and data[pos] == 0xFF:
        code = data[pos + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code == 0xD9:  # EOI
            break
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if code in _SOF_MARKERS and len(segment) >= 6:
            components = list(segment[6 : 6 + 3 * segment[5] : 3])
        elif code == 0xDA:  # SOS: header, then entropy-coded data up to the next marker
            count = segment[0] if segment else 0
            if len(segment) < 1 + 2 * count + 3:
                break
            ss, se, approximation = segment[1 + 2 * count : 4 + 2 * count]
            if approximation & 0x0F == 0 and ss <= se <= 63:
                for component in segment[1 : 1 + 2 * count : 2]:
                    precise[component] = precise.get(component, 0) | (((1 << (se + 1)) - 1) ^ ((1 << ss) - 1))
            marker = _ENTROPY_END.search(data, pos + 2 + length)
            data_end = pos = marker.start() if marker else size
            continue
        pos += 2 + length
    complete = bool(components) and all(precise.get(c, 0) == _ALL_COEFFICIENTS for c in components)
    return _Scans(data_end, complete)


def scan_was_cut(im: Image.Image, corner: float | tuple, data: bytes, size: tuple[int, int]) -> bool:
    """Whether libjpeg ran out of scan data while decoding `im` (loaded from `data`, drafted
    towards `size`) and filled the rest in. `corner`: im's bottom-right pixel, read by the
    caller inside its Pillow boundary (pipeline.images). See the module docstring."""
    grey_corner = all(band in _ZERO_FILL for band in (corner if isinstance(corner, tuple) else (corner,)))
    if not grey_corner and not im.info.get("progressive"):
        return False
    scans = _walk(data)
    if scans.data_end is None or not (grey_corner or not scans.complete):  # nothing to probe, or no suspicion
        return False
    end = scans.data_end
    probes = _PROBES if im.info.get("progressive") else _PROBES[:1]  # sequential scans have no runs of empty blocks
    return any(decodes_differently(im, data[:end] + probe + data[end:], size) for probe in probes)


def decodes_differently(im: Image.Image, probed: bytes, size: tuple[int, int]) -> bool:
    """Whether `probed` decodes (drafted towards `size`) to other pixels than `im`."""
    # Pillow calls only: if the probed file fails to decode, its probe was read as scan data.
    try:
        with Image.open(io.BytesIO(probed)) as again:
            again.draft("RGB", size)
            again.load()
            return again.mode != im.mode or again.tobytes() != im.tobytes()
    except Exception:
        return True
