"""The package's import graph has no cycle, counting the imports inside functions too (a lazy import is still a
dependency): each module's room stays nameable, and the core imports neither Airflow nor a database."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import flexbill

PACKAGE = Path(flexbill.__file__).resolve().parent
CORE = (
    "clock",
    "periods",
    "money",
    "suspension",
    "vector",
    "rules",
    "billing",
    "report",
    "lifecycle",
    "frames",
    "errors",
)


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _imports(path: Path) -> set[str]:
    """The flexbill modules `path` imports, anywhere in the file."""
    me = _module(path).split(".")
    package = me[:-1] if path.name != "__init__.py" else me
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [a.name for a in node.names]
            for name in names:  # `from . import steps` imports a module; `from .steps import x` imports steps
                candidate = ".".join([*target, name])
                out.add(
                    candidate
                    if (PACKAGE / Path(*candidate.split("."))).with_suffix(".py").exists()
                    else ".".join(target)
                )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flexbill"):
            out.add(node.module.removeprefix("flexbill").lstrip("."))
    return {m for m in out if m and m != _module(path)}


@cache
def graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py") if _module(p)}


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(graph()) is None, " -> ".join(_cycle(graph()))


def test_the_graph_sees_lazy_imports():
    g = graph()
    assert "publishing" in g["steps"] and "staging" in g["steps"]
    assert "figures" in g["publishing"]  # imported inside published_by
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_core_imports_no_airflow_and_no_database():
    for name in CORE:
        source = (PACKAGE / f"{name}.py").read_text()
        tree = ast.parse(source)
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
        }
        assert not imported & {"airflow", "sqlalchemy", "great_expectations"}, name
        assert not graph()[name] & {"db", "db.connect", "db.dialect", "db.extract", "db.schema", "steps", "runner"}
