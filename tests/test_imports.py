"""The import graph, read from the source: no circle among the modules of `agents/`, and every
package imports only the packages below it in DESIGN.md's layout table.

Imports are read from each module's syntax tree, wherever they stand: at the top, inside a
function, or under `if TYPE_CHECKING:` (a circle that only the type checker walks is still a
circle a reader has to untangle).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("agents", "api", "tools", "retrieval", "policies", "store", "evals", "bench", "attune")
# DESIGN.md's table: what each package may import of ours (besides itself).
MAY_IMPORT = {
    "store": set(),
    "policies": {"store"},
    "retrieval": {"store"},
    "tools": {"policies", "retrieval", "store"},
    "agents": {"tools", "policies", "retrieval", "store"},
    # "Everything below" it in the table: evals too, which `attune eval` runs.
    "api": {"agents", "tools", "policies", "retrieval", "store", "evals"},
    # The Python client sees the service from outside, over HTTP only: none of its packages.
    "attune": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that the module `name` at `path` imports, anywhere in its body.

    `from a.b import c` imports the module `a.b.c` when there is one, else the module `a.b`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in known else base)
    return {module for module in found if module.split(".")[0] in OURS}


def graph_of(*packages: str) -> dict[str, set[str]]:
    sources = {name: path for package in packages for name, path in modules(package).items()}
    known = set(sources)
    return {name: imported(name, path, known) for name, path in sources.items()}


def test_the_reader_finds_imports_of_every_kind(tmp_path: Path) -> None:
    """The parser itself: plain, from-, relative, in-function and TYPE_CHECKING imports."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import store.db\n"
        "from agents.decide import graph\n"
        "from . import sibling\n"
        "from .sibling import thing\n"
        "if TYPE_CHECKING:\n"
        "    from agents.services import Services\n"
        "def late():\n"
        "    from tools.profile import lookup_profile\n"
    )
    known = {"agents.decide.graph", "agents.chat.sibling"}
    assert imported("agents.chat.mod", source, known) == {
        "store.db",
        "agents.decide.graph",
        "agents.chat.sibling",
        "agents.services",
        "tools.profile",
    }


def test_the_cycle_finder_finds_a_circle_through_type_checking() -> None:
    with pytest.raises(CycleError):
        TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).prepare()


def test_no_module_of_agents_is_part_of_an_import_circle() -> None:
    graph = graph_of("agents")
    assert len(graph) > 20, "the agents package was not found"
    inner = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
    try:
        TopologicalSorter(inner).prepare()
    except CycleError as error:
        pytest.fail(f"import circle among agents modules: {' -> '.join(error.args[1])}")


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_point_down_the_layout_table(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    upward = sorted(
        f"{name} imports {module}"
        for name, deps in graph_of(package).items()
        for module in deps
        if module.split(".")[0] not in allowed
    )
    assert not upward, f"{package}/ may import only {sorted(allowed)}: {upward}"
