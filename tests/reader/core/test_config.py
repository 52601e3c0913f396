"""The build config (reader.core.config): its rules, its JSON form, and its one set of defaults."""

import dataclasses
import json

import pytest

from pipeline import cli
from reader.core import config
from reader.core.config import BuildConfig


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 8}, "input_size: expected an integer in [16, 4096], found 8"),
        ({"resize": "crop"}, "resize: expected one of ('stretch', 'letterbox'), found 'crop'"),
        ({"image_format": "png"}, "image_format: expected one of ('jpeg', 'raw'), found 'png'"),
        ({"jpeg_quality": 0}, "jpeg_quality: expected an integer in [1, 100], found 0"),
        ({"grid_size": 300}, "grid_size: expected an integer in [1, input_size], found 300"),
        ({"min_face_px": float("nan")}, "min_face_px: expected a finite number >= 0, found nan"),
        ({"min_face_px": -1.0}, "min_face_px: expected a finite number >= 0, found -1.0"),
        ({"grid_size": True}, "grid_size: expected an integer in [1, input_size], found True"),
    ],
)
def test_config_validates_itself(kwargs, message):
    with pytest.raises(ValueError) as caught:
        BuildConfig(**kwargs)
    assert str(caught.value) == message


def test_json_form_round_trips_in_the_manifests_key_order():
    built = BuildConfig(input_size=320, grid_size=10, image_format="raw", jpeg_quality=80, resize="letterbox", min_face_px=2)
    raw = built.to_json()
    assert list(raw) == ["input_size", "grid_size", "image_format", "jpeg_quality", "resize", "min_face_px"]
    assert json.dumps(raw) == json.dumps(json.loads(json.dumps(raw)))
    assert raw["min_face_px"] == 2.0 and isinstance(raw["min_face_px"], float)  # one spelling in every manifest
    assert BuildConfig.from_json(json.loads(json.dumps(raw))) == built


def test_from_json_names_the_first_unusable_key():
    raw = BuildConfig().to_json()
    with pytest.raises(ValueError, match=r"^config.grid_size: expected an integer in \[1, input_size\], found '7'$"):
        BuildConfig.from_json({**raw, "grid_size": "7"})
    with pytest.raises(ValueError, match=r"^config.resize: missing \(expected one of \('stretch', 'letterbox'\)\)$"):
        BuildConfig.from_json({k: v for k, v in raw.items() if k != "resize"})
    with pytest.raises(ValueError, match="^config: expected a JSON object, found list$"):
        BuildConfig.from_json([])


def test_salvage_keeps_the_usable_settings_and_defaults_the_rest():
    raw = {**BuildConfig(input_size=64, grid_size=2, resize="letterbox").to_json(), "grid_size": 65, "jpeg_quality": "high"}
    assert set(config.problems(raw)) == {"grid_size", "jpeg_quality"}
    assert BuildConfig.salvage(raw) == BuildConfig(input_size=64, resize="letterbox")


def test_the_build_flags_take_their_defaults_from_the_config():
    """One set of defaults: each setting's flag defaults to BuildConfig's value, and a build with
    no setting flags writes BuildConfig()'s JSON form."""
    from absl import flags

    fv = flags.FlagValues()
    cli.define_flags(fv)
    for field in dataclasses.fields(BuildConfig):
        assert fv[field.name].default == getattr(BuildConfig(), field.name), field.name
    job, _ = cli.parse_args(["facegrid-build", "--annotations=a", "--images_dir=i", "--output_dir=o", "--split=val"])
    assert job.config == BuildConfig()
    job, _ = cli.parse_args(
        [
            "facegrid-build",
            "--annotations=a",
            "--images_dir=i",
            "--output_dir=o",
            "--split=val",
            "--resize=letterbox",
            "--grid_size=14",
        ]
    )
    assert job.config == BuildConfig(resize="letterbox", grid_size=14)
