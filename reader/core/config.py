"""The build config: every setting that decides a record's bytes, declared once with its JSON form.

    BuildConfig(input_size=224, grid_size=7, image_format="jpeg", jpeg_quality=95,
                resize="stretch", min_face_px=0.0)

The build takes it from its flags (whose defaults are these), writes it as the manifest's
`config` block (`to_json`), and the readers, the checker and training read it back from there
(`from_json`). Its defaults and its rules live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable

from reader.core.boxes import RESIZE_MODES

IMAGE_FORMATS = ("jpeg", "raw")  # how a record stores its image (image/format)

_SHORT = reprlib.Repr()  # Python 3.11's takes no arguments
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 4, 4, 60, 60, 40


def found_text(value) -> str:
    """A value read from a file, for a message: short and on one line, however large or deep."""
    return _SHORT.repr(value)


def is_int(value) -> bool:
    """A JSON integer (not a bool, which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Each setting's rule and what the rule says in words. grid_size's upper bound is the config's own
# input_size (checked apart, with both values known).
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "input_size": (lambda v: is_int(v) and 16 <= v <= 4096, "an integer in [16, 4096]"),
    "grid_size": (lambda v: is_int(v) and v >= 1, "an integer in [1, input_size]"),
    "image_format": (lambda v: v in IMAGE_FORMATS, f"one of {IMAGE_FORMATS}"),
    "jpeg_quality": (lambda v: is_int(v) and 1 <= v <= 100, "an integer in [1, 100]"),
    "resize": (lambda v: v in RESIZE_MODES, f"one of {RESIZE_MODES}"),
    "min_face_px": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
}


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """How a build stores images and encodes targets. Validates itself: ValueError
    `grid_size: expected an integer in [1, input_size], found 300`.

    input_size: side of the stored square image, pixels.
    grid_size: side of the target grid, cells (at most input_size).
    image_format: "jpeg" or "raw" (uint8 RGB bytes), the stored image's encoding.
    jpeg_quality: 1-100, for "jpeg".
    resize: "stretch" fills the square; "letterbox" keeps the aspect ratio (reader.core.boxes).
    min_face_px: faces whose shorter side, in stored pixels, is below this are ignored, not targets.
    """

    input_size: int = 224
    grid_size: int = 7
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    resize: str = "stretch"
    min_face_px: float = 0.0

    def __post_init__(self):
        for key, problem in problems(dataclasses.asdict(self)).items():
            raise ValueError(f"{key}: {problem}")

    def to_json(self) -> dict:
        """The manifest's `config` block (keys in declaration order; min_face_px always a float)."""
        return {**dataclasses.asdict(self), "min_face_px": float(self.min_face_px)}

    @classmethod
    def from_json(cls, raw) -> BuildConfig:
        """The config a manifest's `config` block holds. Raises ValueError naming the first key
        that is missing or unusable: `config.grid_size: expected ..., found ...`."""
        if not isinstance(raw, dict):
            raise ValueError(f"config: expected a JSON object, found {type(raw).__name__}")
        for key, problem in problems(raw).items():
            raise ValueError(f"config.{key}: {problem}")
        return cls(**{key: raw[key] for key in _RULES})

    @classmethod
    def salvage(cls, raw) -> BuildConfig:
        """The config from the usable keys of `raw`, the defaults for the rest: what the checker
        checks records against when the manifest's config is damaged (and says so)."""
        raw = raw if isinstance(raw, dict) else {}
        broken = problems(raw)
        return cls(**{key: raw[key] for key in _RULES if key not in broken})


def problems(raw) -> dict[str, str]:
    """{key: "expected ..., found ..." or "missing (expected ...)"} for each unusable setting of a
    decoded `config` block (anything but a JSON object has none of them); empty when
    BuildConfig.from_json would take it."""
    raw = raw if isinstance(raw, dict) else {}
    found = {}
    for key, (ok, expected) in _RULES.items():
        if key not in raw:
            found[key] = f"missing (expected {expected})"
        elif not ok(raw[key]):
            found[key] = f"expected {expected}, found {found_text(raw[key])}"
    size = raw.get("input_size")
    grid = raw.get("grid_size")
    if "input_size" not in found and "grid_size" not in found and grid > size:
        found["grid_size"] = f"expected {_RULES['grid_size'][1]}, found {grid}"
    return found
