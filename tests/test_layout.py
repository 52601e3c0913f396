"""The architecture README.md's "Layout" describes, held to the code: which package may import
which (data flows one way: annotations -> records -> batches), each feature key spelled in one
library file, and no library module past 400 lines."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

from reader.core import schema
from tests.support.paths import ROOT

LIBRARY = ("pipeline", "reader", "train")
MAX_LINES = 400


def _modules():
    for package in LIBRARY:
        yield from sorted((ROOT / package).rglob("*.py"))


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
    if parts[:3] == ("reader", "core", "storage"):
        return "reader.core.storage"
    return ".".join(parts[:2]) if parts[0] == "reader" and len(parts) > 2 else parts[0]


# What each package may not import: the readers and the checker never need Beam; the format core
# needs neither TensorFlow nor the packages built on it; the Beam job ships with the core only.
FORBIDDEN = {
    "reader.core": ("apache_beam", "reader.data", "reader.check", "pipeline", "train"),
    # The storage layer every tool reads and writes through (the checker, ShardSequence, the
    # workers): no TensorFlow for any scheme (gs:// through google-cloud-storage), no Beam.
    "reader.core.storage": ("tensorflow", "keras", "apache_beam", "reader.data", "reader.check", "pipeline", "train"),
    "reader.check": ("tensorflow", "keras", "apache_beam", "reader.data", "pipeline", "train"),
    "reader.data": ("apache_beam", "reader.check", "pipeline", "train"),
    "reader": ("tensorflow", "keras", "apache_beam", "pipeline", "train"),  # reader/__init__.py
    "pipeline": ("tensorflow", "keras", "reader.data", "reader.check", "train"),
    "train": ("apache_beam", "pipeline", "reader.check"),
}


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    package = _package(path)
    forbidden = FORBIDDEN[package]
    bad = sorted(name for name in _imports(path) if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not bad, f"{path.relative_to(ROOT)} ({package}) imports {bad}"
    if package == "reader.core":
        # Only where TensorFlow is the point (the tf.data feature spec), and only when called: the workers import the core and never TensorFlow.
        eager = sorted(name for name in _imports(path, top_level_only=True) if name.split(".")[0] in ("tensorflow", "keras"))
        assert not eager, f"{path.relative_to(ROOT)} imports {eager} on import"


def test_each_feature_key_is_spelled_in_one_library_file():
    """Only reader/core/schema.py spells a feature key (the attribute keys it even derives)."""
    strings = {
        str(p.relative_to(ROOT)): {
            n.value for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
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


TOOLS = ("fuzzing", "benchmarks", "tests")  # run from the source tree, never installed


def test_the_wheel_ships_the_product_and_no_tools():
    """The packages the wheel holds (pyproject.toml's packages.find) are the library's; the fuzzers
    live in fuzzing/, outside them, with the benchmarks and the tests."""
    import tomllib

    import setuptools

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = setuptools.find_packages(str(ROOT), include=include)
    assert {name.split(".")[0] for name in shipped} == set(LIBRARY), shipped
    fuzzers = sorted(
        str(p.relative_to(ROOT)) for p in ROOT.rglob("*fuzz*.py") if p.parts[len(ROOT.parts)] not in ("tests", ".venv", "build")
    )
    assert fuzzers and all(name.startswith("fuzzing/") for name in fuzzers), fuzzers
    assert (ROOT / "fuzzing" / "annotation_cases.py").is_file()


def test_the_worker_image_ships_no_tools():
    """deploy/Dockerfile copies the library's packages only, and its .dockerignore sends none of the
    tools' folders to the build."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    sources = {source.split("/")[0] for sources in copied for source in sources}
    assert not sources & set(TOOLS), sources
    assert sources - {"pyproject.toml", "README.md", "deploy"} <= set(LIBRARY), sources
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert not {name.split("/")[0] for name in allowed} & set(TOOLS), allowed
    # The sample generator is installed (the demo's), but no worker runs it: left out after pipeline/.
    assert ignore.index("pipeline/sample/") > ignore.index("!pipeline/"), ignore


def test_the_static_import_contracts_are_this_layering():
    """pyproject.toml's import-linter contracts (`lint-imports`, run by `make test`) forbid what
    FORBIDDEN forbids, package by package; the format core's TensorFlow is forbidden there too,
    bar the imports inside functions test_imports_flow_one_way allows."""
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert set(settings["root_packages"]) == set(LIBRARY)
    contracts = {c["source_modules"][0]: c for c in settings["contracts"] if c["type"] == "forbidden"}
    assert contracts.keys() == FORBIDDEN.keys()
    for package, forbidden in FORBIDDEN.items():
        extra = {"tensorflow", "keras"} if package == "reader.core" else set()
        assert set(contracts[package]["forbidden_modules"]) == set(forbidden) | extra, package
    assert contracts["reader"]["as_packages"] is False  # reader/__init__.py alone


def test_make_test_runs_the_import_contracts():
    """CI (.ci/run) runs `make test`, whose recipe checks the contracts before pytest."""
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    recipe = _make_test_recipe()
    assert recipe.index("lint-imports") < recipe.index("pytest"), recipe


def _make_test_recipe() -> str:
    return (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]


def test_make_test_runs_ruff_lint_and_format_before_pytest():
    """`make test` (CI's command) runs ruff's lint and its format check, before pytest."""
    recipe = _make_test_recipe()
    for command in ("ruff check .", "ruff format --check ."):
        assert command in recipe and recipe.index(command) < recipe.index("pytest"), (command, recipe)


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=" ".join)
def test_the_tree_passes_ruff(command):
    """The tree as committed passes pyproject.toml's [tool.ruff] lint and format."""
    ruff = [sys.executable, "-m", "ruff", *command]
    result = subprocess.run(ruff, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wider_attributes_are_named_in_one_library_file():
    """WIDER's attribute names (blur ... pose) are spelled in reader/core/schema.py alone: the
    annotation parser's fields and the records' keys derive from schema.ATTRIBUTES, and the
    invalid flag is looked up one way (schema.invalid_flags). (A module may use one of the words
    on its own: the readers' meta dict has an "invalid" entry.)"""
    names = set(schema.ATTRIBUTES)
    for path in _modules():
        if path.name == "schema.py" and path.parent.name == "core":
            continue
        tree = ast.parse(path.read_text())
        spelled = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)} & names
        assert len(spelled) <= 1, f"{path.relative_to(ROOT)} spells {sorted(spelled)}"
        lookups = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr == "index" and any(isinstance(a, ast.Constant) and a.value in names for a in n.args)]  # fmt: skip
        assert not lookups, f"{path.relative_to(ROOT)}:{lookups[0]}: looks an attribute's column up itself"


def test_the_static_import_contracts_hold():
    """`lint-imports` (what `make test` runs first) keeps every contract: a test run alone says so too."""
    import subprocess
    import sys

    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"Contracts: {len(FORBIDDEN)} kept, 0 broken." in done.stdout
