"""The README and docs/DESIGN.md say what the code does: the flags and their defaults, the
record keys, the make targets, and nothing that points outside the repository."""

from __future__ import annotations

import re

from absl import flags

from pipeline import cli
from reader.core import schema
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text()
DESIGN = (ROOT / "docs" / "DESIGN.md").read_text()


def _readme_flag_table() -> dict[str, str]:
    """{flag: default} of the README's table of build flags (`--a` / `--b` rows split in two)."""
    table = README.split("`facegrid-build` is the same command. The flags:")[1].split("\n\n")[1]
    found = {}
    for row in table.splitlines()[2:]:
        names, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        defaults = [d.strip(" `") for d in default.split("/")]
        for name, value in zip(re.findall(r"`--(\w+)`", names), defaults * 2 if len(defaults) == 1 else defaults):
            found[name] = value
    return found


def test_the_readme_lists_every_build_flag_with_its_default():
    fv = flags.FlagValues()
    cli.define_flags(fv)
    ours = {name: fv[name] for name in fv if name not in ("flagfile", "undefok")}
    table = _readme_flag_table()
    assert set(table) == set(ours)
    for name, flag in ours.items():
        if flag.default is None:
            # Optional flags without a value of their own say what they fall back to.
            assert table[name] == {"reuse_from": "--output_dir"}.get(name, "required"), name
        elif isinstance(flag.default, bool):
            assert table[name] == ("on" if flag.default else "off"), name
        else:
            assert (
                float(table[name]) == float(flag.default)
                if isinstance(flag.default, (int, float))
                else table[name] == flag.default
            ), name


def test_the_design_lists_every_record_key():
    rows = set(re.findall(r"^\| (image/[^|]+|target/[^|]+) \|", DESIGN, flags=re.M))
    listed = set()
    for row in rows:
        first, *rest = (part.strip() for part in row.split(","))
        listed.add(first)
        prefix = first.rsplit("/", 1)[0]
        listed.update(name if "/" in name else f"{prefix}/{name}" for name in rest)
    assert listed == set(schema.FEATURES_BY_KEY)


def test_the_make_targets_the_readme_names_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    for target in re.findall(r"`make (\w+)`", README):
        assert target in targets, target


def test_nothing_points_outside_the_repository():
    texts = {
        path: path.read_text()
        for path in [ROOT / "README.md", ROOT / "BENCHMARKS.md", *ROOT.glob("docs/*.md"), *ROOT.glob("deploy/**/*.md")]
    }
    texts.update(
        {
            path: path.read_text()
            for folder in ("pipeline", "reader", "train", "benchmarks", "fuzzing", "deploy")
            for path in (ROOT / folder).rglob("*.py")
        }
    )
    for path, text in texts.items():
        assert "../shared" not in text and "shared/DESIGN" not in text and "shared/baselines" not in text, path


DOCS = {ROOT / "README.md": README, ROOT / "deploy" / "README.md": (ROOT / "deploy" / "README.md").read_text()}
_PACKAGES = ("pipeline", "reader", "train", "benchmarks", "deploy", "tests")
_FILE_ENDINGS = {"json", "jsonl", "tfrecord", "txt", "csv", "png", "html", "keras", "pbtxt", "py"}  # `train.manifest.json`


def test_the_files_the_readmes_name_exist():
    """Every `path/like.py` of README.md and deploy/README.md is a file of the repository
    (from its root, or from the README's own folder), every bare `name.py` one under that folder."""
    for doc, text in DOCS.items():
        names = set(re.findall(r"(?<![\w/.:-])([\w-]+(?:/[\w-]+)*\.py)\b", text))
        assert names, doc
        for name in names:
            if "/" in name:
                assert (ROOT / name).is_file() or (doc.parent / name).is_file(), f"{doc.relative_to(ROOT)}: {name}"
            else:
                assert list(doc.parent.rglob(name)), f"{doc.relative_to(ROOT)}: {name}"


def test_the_modules_the_readmes_name_import():
    """Every `python -m x.y` and every dotted name of the project's own (`train.loss.GridLoss`,
    `pipeline.cli.define_flags`) in the READMEs is a module, or an attribute of one."""
    import importlib
    import importlib.util

    for doc, text in DOCS.items():
        commands = set(re.findall(r"python -m ([\w.]+)", text))
        assert commands, doc
        for module in commands:
            assert importlib.util.find_spec(module) is not None, f"{doc.relative_to(ROOT)}: python -m {module}"
        names = set(re.findall(rf"`((?:{'|'.join(_PACKAGES)})(?:\.\w+)+)[`(]", text))
        for dotted in {name for name in names if name.rsplit(".", 1)[1] not in _FILE_ENDINGS}:
            parts = dotted.split(".")
            found = importlib.import_module(parts[0])
            for at, part in enumerate(parts[1:], start=2):  # a submodule, else an attribute
                if not hasattr(found, part) and importlib.util.find_spec(".".join(parts[:at])) is not None:
                    importlib.import_module(".".join(parts[:at]))
                assert hasattr(found, part), f"{doc.relative_to(ROOT)}: {dotted}"
                found = getattr(found, part)


def test_the_file_names_of_a_build_in_the_readmes_carry_its_build_id():
    """Shards and errors files are named with the build id (reader.core.layout): an example
    without one is a name from before build ids."""
    from reader.core import layout

    for doc, text in DOCS.items():
        for name in re.findall(r"(?:train|val|test)-[\w]+-of-[\w.]+?\.tfrecord", text):
            parsed = layout.parse_shard_name(name.replace("BUILD", "0" * layout.BUILD_ID_LENGTH).replace("NN", "00"))
            assert parsed is not None and re.search(r"\.([0-9a-f]{12}|BUILD)\.tfrecord$", name), (
                f"{doc.relative_to(ROOT)}: {name}"
            )
        for name in re.findall(r"(?:train|val|test)\.[\w.]*errors\.jsonl", text):
            assert re.fullmatch(r"\w+\.([0-9a-f]{12}|BUILD)\.errors\.jsonl", name), f"{doc.relative_to(ROOT)}: {name}"
