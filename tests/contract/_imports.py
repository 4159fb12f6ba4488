"""The imports of a package, read from its source (AST), for the structure tests.

Each import names the importing module, the imported module of the same package, how it
runs and where it is written. Kinds:

* ``module``: at module level, run when the module is imported (also inside ``try``);
* ``lazy``: inside a function, run when the function is called;
* ``types``: under ``if TYPE_CHECKING:``, never run (annotations only);
* ``dynamic``: a string constant that is exactly a module's dotted name (the tables that
  ``importlib.import_module`` reads: the lazy exports, the CLI's subcommands).
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = ("module", "lazy", "types", "dynamic")


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another."""

    source: str
    target: str
    kind: str
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target} ({self.kind})"


def modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package in ``package_dir``: dotted name -> file."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(
    node: ast.Import | ast.ImportFrom, source: str, is_package: bool, known: Iterable[str]
) -> Iterator[str]:
    """The package's modules ``node`` imports (``from P import m`` names module ``P.m``
    when there is one, else ``P``)."""
    known = set(known)
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in known)
        return
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = source.split(".") if is_package else source.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    if base not in known:
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in known else base


def scan(package_dir: Path, root: Path | None = None) -> list[Import]:
    """Every import among the package's modules, with its kind."""
    known = modules(package_dir)
    found: list[Import] = []
    for source, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        shown = path.relative_to(root) if root else path
        is_package = path.name == "__init__.py"

        def visit(
            node: ast.AST,
            kind: str,
            source: str = source,
            shown: Path = shown,
            is_package: bool = is_package,
        ) -> None:
            for child in ast.iter_child_nodes(node):
                inner = kind
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    inner = "types" if kind == "types" else "lazy"
                elif isinstance(child, ast.If) and _is_type_checking(child.test):
                    for stmt in child.body:
                        visit(ast.Module(body=[stmt], type_ignores=[]), "types")
                    for stmt in child.orelse:
                        visit(ast.Module(body=[stmt], type_ignores=[]), kind)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, source, is_package, known):
                        if target != source:
                            found.append(Import(source, target, kind, f"{shown}:{child.lineno}"))
                elif (
                    isinstance(child, ast.Constant)
                    and isinstance(child.value, str)
                    and child.value in known
                    and child.value != source
                ):
                    found.append(Import(source, child.value, "dynamic", f"{shown}:{child.lineno}"))
                visit(child, inner)

        visit(tree, "module")
    return found


def import_time_cycle(imports: Iterable[Import]) -> list[str] | None:
    """A cycle of module-level imports (the modules, first repeated last), or None.

    Only ``module`` imports count: a lazy import runs after both modules are loaded, a
    ``TYPE_CHECKING`` one never runs.
    """
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.kind == "module":
            graph.setdefault(imp.source, set()).add(imp.target)
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return None
