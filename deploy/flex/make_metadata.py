"""Writes deploy/flex/metadata.json, the Flex Template's parameters, from the pipeline's own flags.

    python deploy/flex/make_metadata.py            rewrite metadata.json
    python deploy/flex/make_metadata.py --check    exit 1 if metadata.json is out of date
    python deploy/flex/make_metadata.py --help     print this (any other argument: exit 2)

Every flag of `pipeline.cli.define_flags` becomes one template parameter, with its help text,
its default, and a regex for Dataflow to check a value with (enum choices, numbers).
Flags are optional but for cli.REQUIRED. tests/pipeline/test_dataflow.py runs the check, so a flag
added to the pipeline without regenerating this file fails the tests.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import flags

from pipeline import cli

METADATA = pathlib.Path(__file__).with_name("metadata.json")

# Picker types for the Dataflow console; every other flag is TEXT, NUMBER or ENUM by its kind.
_PATH_TYPES = {"annotations": "GCS_READ_FILE", "images_dir": "GCS_READ_FOLDER", "output_dir": "GCS_WRITE_FOLDER"}
_INTEGER = r"[0-9]+"
_NUMBER = r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"


def pipeline_flags() -> list[flags.Flag]:
    """The pipeline's flags, in the order define_flags declares them."""
    fv = flags.FlagValues()
    cli.define_flags(fv)
    return list({id(fv[name]): fv[name] for name in fv}.values())


def _help(flag: flags.Flag) -> str:
    """The flag's help without absl's `<a|b>: ` prefix, plus its range and default."""
    text = flag.help
    if isinstance(flag, flags.EnumFlag):
        text = text.removeprefix("<" + "|".join(flag.parser.enum_values) + ">: ")
    low, high = getattr(flag.parser, "lower_bound", None), getattr(flag.parser, "upper_bound", None)
    if low is not None and high is not None:
        text += f" From {low} to {high}."
    elif low is not None:
        text += f" At least {low}."
    elif high is not None:
        text += f" At most {high}."
    if flag.default is not None:
        text += f" Default: {flag.default}."
    return text


def parameter(flag: flags.Flag) -> dict:
    """One Dataflow ParameterMetadata (camelCase JSON, as metadata.json holds it)."""
    entry: dict = {
        "name": flag.name,
        "label": flag.name.replace("_", " ").capitalize(),
        "helpText": _help(flag),
        "isOptional": flag.name not in cli.REQUIRED,
    }
    if flag.default is not None:
        entry["defaultValue"] = str(flag.default)
    if isinstance(flag, flags.EnumFlag):
        choices = flag.parser.enum_values
        entry["paramType"] = "ENUM"
        entry["enumOptions"] = [{"value": choice} for choice in choices]
        entry["regexes"] = ["^(" + "|".join(choices) + ")$"]
    elif flag.flag_type() in ("int", "float"):
        low = getattr(flag.parser, "lower_bound", None)
        sign = "" if low is not None and low >= 0 else "-?"
        entry["paramType"] = "NUMBER"
        entry["regexes"] = [f"^{sign}{_INTEGER if flag.flag_type() == 'int' else _NUMBER}$"]
    else:
        entry["paramType"] = _PATH_TYPES.get(flag.name, "TEXT")
    return entry


def render() -> str:
    metadata = {
        "name": "facegrid build",
        "description": (
            "Builds one split of WIDER FACE (or any dataset in its annotation format) into sharded "
            "TFRecords of 224x224 images with 7x7x5 grid targets, plus a manifest and errors.jsonl."
        ),
        "parameters": [parameter(flag) for flag in pipeline_flags()],
    }
    return json.dumps(metadata, indent=2) + "\n"


def main(argv: list[str]) -> int:
    """argv without the program name. Returns 0, 1 when --check finds the file out of date, or
    2 on bad usage (nothing written)."""
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__.strip())
        return 0
    if argv not in ([], ["--check"]):
        print(f"make_metadata.py: unexpected arguments {' '.join(argv)}\n\n{__doc__.strip()}", file=sys.stderr)
        return 2
    text = render()
    if argv == ["--check"]:
        if METADATA.read_text() != text:
            print(f"{METADATA} is out of date: run python {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    METADATA.write_text(text)
    print(f"wrote {METADATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
