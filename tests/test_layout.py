"""The architecture README.md's "Layout" describes, held to the code: which package may import
which (data flows one way: annotations -> records -> batches), each feature key spelled in one
library file, and no library module past 400 lines."""

import ast
import re
import pathlib

import pytest

from reader.core import schema

from tests.support.paths import ROOT

LIBRARY = ("pipeline", "reader", "train")
MAX_LINES = 400


def _modules():
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path


def _imports(path: pathlib.Path, top_level_only: bool = False) -> set[str]:
    """Every module `path` imports (inside functions too unless top_level_only), as dotted names."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if parts[0] == "reader" and len(parts) > 2 else parts[0]


# What each package may not import: the readers and the checker never need Beam; the format core
# needs neither TensorFlow nor the packages built on it; the Beam job ships with the core only.
FORBIDDEN = {
    "reader.core": ("apache_beam", "reader.data", "reader.check", "pipeline", "train"),
    "reader.check": ("tensorflow", "keras", "apache_beam", "reader.data", "pipeline", "train"),
    "reader.data": ("apache_beam", "reader.check", "pipeline", "train"),
    "reader": ("tensorflow", "keras", "apache_beam", "pipeline", "train"),  # reader/__init__.py
    "pipeline": ("tensorflow", "keras", "reader.data", "reader.check", "train"),
    "train": ("apache_beam", "pipeline", "reader.check"),
}


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    package = _package(path)
    if package == "pipeline" and path.name in ("sample.py", "synthetic.py", "annotation_fuzz.py"):
        # Tools beside the job, never run on a worker: the sample draws its own images.
        forbidden = tuple(f for f in FORBIDDEN[package] if f not in ("reader.check",))
    else:
        forbidden = FORBIDDEN[package]
    bad = sorted(name for name in _imports(path) if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not bad, f"{path.relative_to(ROOT)} ({package}) imports {bad}"
    if package == "reader.core":
        # Only where TensorFlow is the point (gs:// through tf.io.gfile, the tf.data feature
        # spec), and only when called: the workers import the core and never TensorFlow.
        eager = sorted(name for name in _imports(path, top_level_only=True) if name.split(".")[0] in ("tensorflow", "keras"))
        assert not eager, f"{path.relative_to(ROOT)} imports {eager} on import"


def test_each_feature_key_is_spelled_in_one_library_file():
    """Only reader/core/schema.py spells a feature key (the attribute keys it even derives)."""
    strings = {
        str(p.relative_to(ROOT)): {n.value for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for p in _modules()
    }
    for key in schema.FEATURES_BY_KEY:
        holders = [name for name, found in strings.items() if key in found]
        assert set(holders) <= {"reader/core/schema.py"}, (key, holders)


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_library_module_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines; split it along a concept"


def test_the_readme_names_the_one_file_of_every_library_module():
    """README.md's "Where each concept lives" table names every library module, and only those."""
    table = (ROOT / "README.md").read_text().split("Where each concept lives:")[1]
    named = set()
    for row in table.splitlines():
        if not row.startswith("| ") or row.startswith("| concept") or row.startswith("|---"):
            continue
        directory = ""
        for name in re.findall(r"`([\w/]+\.py)`", row.rsplit("|", 2)[1]):
            if "/" in name:
                directory = name.rsplit("/", 1)[0]
            else:
                name = f"{directory}/{name}"
            named.add(name)
    modules = {str(p.relative_to(ROOT)) for p in _modules() if p.name not in ("__init__.py", "__main__.py")}
    assert named == modules, {"not in the table": sorted(modules - named), "no such module": sorted(named - modules)}
