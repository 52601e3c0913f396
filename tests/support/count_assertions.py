"""Counts the assertions of the test suite, per test function, from the source (AST only).

An assertion is an `assert` statement, a call of `pytest.raises` / `pytest.warns` (a `with` block or
a call) or a call of any function whose name starts with `assert` (`np.testing.assert_allclose`,
`self.assertEqual`, Beam's `assert_that`, a test module's own `assert_...` helper). Functions named
`test_*` in `test_*.py` files are tests; every other function's assertions count as helpers'.

    python -m tests.support.count_assertions [--json=FILE] [--compare=FILE]

prints the number of test functions, their assertions and the helpers' assertions; `--json` writes
{qualified test name: assertions}; `--compare` lists every test whose count fell below (or which
is gone from) an earlier `--json`, and exits 1 if any did.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parents[1]


def _is_assertion(node: ast.AST) -> bool:
    if isinstance(node, ast.Assert):
        return True
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if (
        name in ("raises", "warns")
        and isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "pytest"
    ):
        return True
    return name.startswith("assert")


def _own_nodes(function: ast.AST):
    """The nodes of a function's body, not descending into nested functions or classes (each is
    counted as its own function)."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def count(root: pathlib.Path = TESTS) -> tuple[dict[str, int], int]:
    """({`ClassName.test_name` or `test_name`: assertions} summed over files, helpers' assertions)."""
    tests: dict[str, int] = collections.Counter()
    helpers = 0
    for path in sorted(root.rglob("*.py")):
        if "support" in path.relative_to(root).parts and path.name == "count_assertions.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        is_test_file = path.name.startswith("test_")

        def visit(node: ast.AST, prefix: str) -> None:
            nonlocal helpers
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found = sum(_is_assertion(n) for n in _own_nodes(child))
                    if is_test_file and child.name.startswith("test_"):  # noqa: B023 (visit runs in this iteration)
                        tests[f"{prefix}{child.name}"] += found
                    else:
                        helpers += found
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(tree, "")
    return dict(tests), helpers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--compare")
    args = parser.parse_args(argv)
    tests, helpers = count()
    print(f"{len(tests)} test functions, {sum(tests.values())} assertions in them, {helpers} in helpers")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(tests, indent=1, sort_keys=True) + "\n")
    if args.compare:
        before = json.loads(pathlib.Path(args.compare).read_text())
        fewer = {name: (n, tests.get(name)) for name, n in before.items() if tests.get(name, -1) < n}
        for name, (was, now) in sorted(fewer.items()):
            print(f"{name}: {was} -> {now if now is not None else 'gone'}")
        return 1 if fewer else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
