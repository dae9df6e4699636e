"""The import contract (docs/architecture.md), read from the source with `ast`, not by convention.

- only squish/engine imports mlx or mlx_lm, and only squish/tui imports textual: anywhere in a
  file, also inside functions;
- packages depend one way: cli, tui -> agent, history, models -> engine -> errors;
- no import cycles between squish's modules (counting imports inside functions too);
- `import squish` and `squish --help` import neither mlx nor textual (checked in a subprocess).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "squish"

# What each part of squish may import from squish. A part is a subpackage or a top-level module.
ALLOWED = {
    "errors": set(),
    "engine": {"errors"},
    "models": {"engine", "errors"},
    "history": {"errors"},
    "agent": {"engine", "errors"},
    "tui": {"agent", "history", "models", "engine", "errors"},
    "cli": {"tui", "agent", "history", "models", "engine", "errors"},
    "__init__": set(),
    "__main__": {"cli"},
}
ONLY_IN = {"mlx": "engine", "mlx_lm": "engine", "textual": "tui"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, top level or not."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> list[tuple[str, int]]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((module, node.lineno))
            # `from . import x` and `from ..models import store` name modules too.
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def part(module: str) -> str:
    """squish.models.store -> models; squish -> __init__; squish.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(ROOT.rglob("*.py"))
MODULES = {module_name(path) for path in FILES}


def squish_imports(path: Path) -> list[tuple[str, int]]:
    return [(m, line) for m, line in imports(path) if m in MODULES and m != module_name(path)]


def test_the_checks_see_the_package():
    assert len(FILES) > 40 and "squish.engine.engine" in MODULES and "squish.cli" in MODULES


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_heavy_libraries_are_imported_by_one_package_only(library):
    home = ONLY_IN[library]
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {module}"
        for path in FILES
        if part(module_name(path)) != home
        for module, line in imports(path)
        if module == library or module.startswith(library + ".")
    ]
    assert not offenders, f"only squish/{home} may import {library}:\n" + "\n".join(offenders)


def test_packages_depend_one_way():
    offenders = []
    for path in FILES:
        mine = part(module_name(path))
        assert mine in ALLOWED, f"{path}: a new part of squish needs its place in ALLOWED (docs/architecture.md)"
        for module, line in squish_imports(path):
            theirs = part(module)
            if theirs not in (mine, "__init__") and theirs not in ALLOWED[mine]:  # squish/__init__: the version
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line}: {mine} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles():
    graph = {module_name(path): {m for m, _ in squish_imports(path)} for path in FILES}
    # A package's __init__ is imported with each of its modules: an edge to it is no cycle by itself.
    for module, targets in graph.items():
        targets -= {t for t in targets if module.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_imports_inside_functions_and_relative_ones_are_seen():
    source = "import json\n\ndef f():\n    from ..engine import loader\n    import mlx.core as mx\n"
    found = imports_in(source, "squish.models")
    assert ("squish.engine.loader", 4) in found and ("mlx.core", 5) in found and ("json", 1) in found


LOADED = "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'mlx', 'mlx_lm', 'textual'}))"


@pytest.mark.parametrize(
    "code",
    [
        "import squish",
        "import squish.cli",
        "import squish.cli.parser, squish.models.inventory, squish.models.pull, squish.history",
        "from squish.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["import squish", "import squish.cli", "models and history", "squish --help"],
)
def test_startup_imports_neither_mlx_nor_textual(code):
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{LOADED}"], capture_output=True, text=True, timeout=60
    ).stdout
    assert out.strip().splitlines()[-1] == "[]", out
