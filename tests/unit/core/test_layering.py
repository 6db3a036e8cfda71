"""Arrows run one way: the core package never imports a service or the CLI, services never import the CLI,
and the console imports the core package only.

Function-level imports count too: they are how a core module used to reach
into a service's internals unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
# What sits above the core: the CLI imports core and services; the embedded stack runs services as processes.
ABOVE_CORE = ("streamml/cli/", "streamml/stack/")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def imports_of(root: Path, folder: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    """``file:line imports module`` for each import of a ``forbidden`` package under ``root/folder``."""
    offences = []
    for path in sorted((root / folder).rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(skip):
            continue
        for line, module in imported_modules(path):
            if any(module == name or module.startswith(name + ".") for name in forbidden):
                offences.append(f"{relative}:{line} imports {module}")
    return offences


def test_the_core_package_imports_no_service_and_not_the_cli():
    offences = imports_of(ROOT, "streamml", ("services", "streamml.cli"), skip=ABOVE_CORE)
    assert not offences, "move what both need into the core package:\n" + "\n".join(offences)


def test_the_console_imports_the_core_package_only_and_nothing_below_imports_it():
    assert not imports_of(ROOT, "streamml/console", ("services", "streamml.cli", "streamml.stack"))
    core = ("streamml/cli/", "streamml/stack/", "streamml/console/")
    assert not imports_of(ROOT, "streamml", ("streamml.console",), skip=core)
    assert not imports_of(ROOT, "services", ("streamml.console",))


def test_services_do_not_import_the_cli():
    assert not imports_of(ROOT, "services", ("streamml.cli",))


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (``from a import b`` counts a.b when that is a module)."""
    paths = {".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
             for path in (root / package).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {module for module in found if module in paths and module != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle a depth-first walk meets, as the modules around it."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_module_of_the_package_imports_itself_round_a_circle():
    found = cycles(module_graph(ROOT, "streamml"))
    assert not found, "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_check_sees_function_level_imports(tmp_path):
    (tmp_path / "streamml").mkdir()
    (tmp_path / "streamml" / "tool.py").write_text("def run():\n    from services.prep.versions import pending\n")
    assert imports_of(tmp_path, "streamml", ("services",)) == ["streamml/tool.py:2 imports services.prep.versions"]


def test_the_cycle_check_sees_a_circle_through_a_function_level_import(tmp_path):
    (tmp_path / "streamml").mkdir()
    (tmp_path / "streamml" / "a.py").write_text("from streamml.b import run\n")
    (tmp_path / "streamml" / "b.py").write_text("def run():\n    from streamml import a\n")
    assert cycles(module_graph(tmp_path, "streamml")) == [["streamml.a", "streamml.b", "streamml.a"]]
