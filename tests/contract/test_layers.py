"""The package's structure (issue 12 item 4): no import cycle, and the layer rule of
docs/architecture.md, checked on the source (an AST scan of every module's imports).

A module may import its own layer and the layers below it, never one above (a lazy
import and a name-string import included; ``TYPE_CHECKING`` imports are annotations
only and left out); there is no exception (``UPWARD`` would list one, with its reason).
Import-time cycles (module-level imports) are refused everywhere.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contract._imports import KINDS, Import, import_time_cycle, modules, scan
from tests.contract._schemas import ROOT

PACKAGE = ROOT / "src" / "baqup_agent"

# bottom to top; a name ending in ".*" is that package and everything below it
LAYERS: list[tuple[str, list[str]]] = [
    ("contract", ["baqup_agent.contract", "baqup_agent.contract.*"]),
    (
        "primitives",
        [
            "baqup_agent._surface",
            "baqup_agent._redaction",
            "baqup_agent._secret",
            "baqup_agent._errors",
            "baqup_agent._usage",
            "baqup_agent._durable",
            "baqup_agent._paths",
            "baqup_agent._checksum",
            "baqup_agent._tar_size",
            "baqup_agent._keys",
            "baqup_agent._config",
        ],
    ),
    (
        "services",
        [
            "baqup_agent._logger",
            "baqup_agent._progress",
            "baqup_agent._lifecycle",
            "baqup_agent._pid1",
            "baqup_agent._redis_client",
            "baqup_agent._spool",
            "baqup_agent._control",
            "baqup_agent._bus",
            "baqup_agent._heartbeat",
            "baqup_agent._reader",
            "baqup_agent._artifacts",
            "baqup_agent._archive",
            "baqup_agent._staging",
            "baqup_agent._restore",
            "baqup_agent._child",
        ],
    ),
    ("job", ["baqup_agent._job"]),
    (
        "api",
        [
            "baqup_agent._agent",
            "baqup_agent._scaffold",
            "baqup_agent",
            "baqup_agent.config",
            "baqup_agent.schema",
        ],
    ),
    (
        "suites",
        [
            "baqup_agent.conformance",
            "baqup_agent.conformance.*",
            "baqup_agent.testing",
            "baqup_agent.testing.*",
        ],
    ),
    ("command", ["baqup_agent._cli", "baqup_agent.__main__"]),
]

UPWARD: set[tuple[str, str]] = set()  # allowed imports up a layer: none today


def layer_of(module: str, layers: list[tuple[str, list[str]]] = LAYERS) -> int:
    """The index of ``module``'s layer; ValueError naming it when no layer holds it."""
    found = [
        index
        for index, (_, names) in enumerate(layers)
        for name in names
        if module == name or (name.endswith(".*") and module.startswith(name[:-1]))
    ]
    if len(found) != 1:
        raise ValueError(f"{module} is in {len(found)} layers of the table, not one")
    return found[0]


def violations(
    imports: list[Import],
    layers: list[tuple[str, list[str]]] = LAYERS,
    allowed: set[tuple[str, str]] = UPWARD,
) -> list[str]:
    """One line per import that goes up a layer (and is not allowed), naming it."""
    found = []
    for imp in imports:
        if imp.kind == "types" or (imp.source, imp.target) in allowed:
            continue
        source, target = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if target > source:
            found.append(
                f"{imp}: layer {layers[source][0]!r} may not import layer {layers[target][0]!r}"
            )
    return found


IMPORTS = scan(PACKAGE, ROOT)


def test_every_module_has_one_layer() -> None:
    for module in modules(PACKAGE):
        layer_of(module)


def test_no_import_goes_up_a_layer() -> None:
    assert violations(IMPORTS) == []


def test_no_import_time_cycle() -> None:
    assert import_time_cycle(IMPORTS) is None


def test_the_facades_import_no_runtime_eagerly() -> None:
    """``import baqup_agent`` stays cold: its runtime names come through the lazy table."""
    eager = [str(i) for i in IMPORTS if i.source == "baqup_agent" and i.kind == "module"]
    assert eager == [], eager


def test_the_architecture_doc_lists_every_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name != "__init__.py":
            assert f"`{path.name}`" in doc, f"docs/architecture.md does not list {path.name}"
    # and the picture names every layer of the table
    for name, _ in LAYERS:
        assert re.search(rf"\b{name}\b", doc), f"docs/architecture.md does not show {name}"


# -- the checks themselves, on generated packages ----------------------------------------

NAMES = [f"m{i}" for i in range(6)]
EDGES = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(KINDS)),
    max_size=12,
).map(lambda edges: [e for e in edges if e[0] != e[1]])


def _write(tmp: Path, edges: list[tuple[str, str, str]]) -> Path:
    """A package ``pkg`` whose modules import each other as ``edges`` says."""
    package = tmp / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body: dict[str, list[str]] = {name: ["from typing import TYPE_CHECKING"] for name in NAMES}
    for source, target, kind in edges:
        line = {
            "module": f"from pkg import {target}",
            "lazy": f"def f_{target}() -> None:\n    import pkg.{target}",
            "types": f"if TYPE_CHECKING:\n    from pkg.{target} import x",
            "dynamic": f"TABLE_{target} = {f'pkg.{target}'!r}",
        }[kind]
        body[source].append(line)
    for name, lines in body.items():
        (package / f"{name}.py").write_text("\n".join(lines) + "\n")
    return package


def _reference_cycle(edges: list[tuple[str, str, str]]) -> bool:
    graph = {n: {t for s, t, k in edges if s == n and k == "module"} for n in NAMES}
    seen: dict[str, int] = {}

    def cyclic(node: str) -> bool:  # depth-first: 1 on the path, 2 done
        seen[node] = 1
        for nxt in graph[node]:
            if seen.get(nxt) == 1 or (nxt not in seen and cyclic(nxt)):
                return True
        seen[node] = 2
        return False

    return any(node not in seen and cyclic(node) for node in NAMES)


@settings(max_examples=60, deadline=None)
@given(edges=EDGES)
def test_the_scan_finds_every_import_and_cycle(
    tmp_path_factory: pytest.TempPathFactory, edges: list[tuple[str, str, str]]
) -> None:
    package = _write(tmp_path_factory.mktemp("pkg"), edges)
    found = {(i.source, i.target, i.kind) for i in scan(package)}
    assert found == {(f"pkg.{s}", f"pkg.{t}", k) for s, t, k in edges}
    cycle = import_time_cycle(scan(package))
    assert (cycle is not None) == _reference_cycle(edges)
    if cycle is not None:  # a real cycle of module-level imports, closed
        assert cycle[0] == cycle[-1]
        pairs = {(f"pkg.{s}", f"pkg.{t}") for s, t, k in edges if k == "module"}
        assert all((b, a) in pairs for a, b in itertools.pairwise(cycle))


@settings(max_examples=60, deadline=None)
@given(edges=EDGES, split=st.integers(1, len(NAMES) - 1))
def test_the_layer_rule_names_every_upward_import(
    tmp_path_factory: pytest.TempPathFactory, edges: list[tuple[str, str, str]], split: int
) -> None:
    package = _write(tmp_path_factory.mktemp("pkg"), edges)
    layers = [
        ("low", ["pkg", *(f"pkg.{n}" for n in NAMES[:split])]),
        ("high", [f"pkg.{n}" for n in NAMES[split:]]),
    ]
    upward = {
        (s, t) for s, t, k in edges if k != "types" and NAMES.index(s) < split <= NAMES.index(t)
    }
    found = violations(scan(package), layers, allowed=set())
    assert len(found) == sum(1 for s, t, k in edges if (s, t) in upward and k != "types"), found
    for line in found:  # each names the file, the line, both modules and both layers
        assert re.match(r".+\.py:\d+: pkg\.m\d imports pkg\.m\d \(\w+\): layer 'low'", line)


def _borrowed_names(path: Path, known: set[str]) -> dict[str, str]:
    """Names a module imports from another module of the package: name -> that module."""
    borrowed = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module in known and not node.level:
            for alias in node.names:
                borrowed[alias.asname or alias.name] = node.module
    return borrowed


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split(".")[1:])


def test_private_helpers_come_from_the_module_that_defines_them() -> None:
    """``from baqup_agent._bus import connect_redis`` when ``_bus`` only imported it from
    ``_redis_client`` hides the real dependency (the reader did this): import a name
    from where it is defined. The public facades re-export on purpose."""
    known = modules(PACKAGE)
    borrowed = {module: _borrowed_names(path, set(known)) for module, path in known.items()}
    found = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module in known):
                continue
            if not _private(node.module):
                continue  # a public module: re-exports are its purpose
            for alias in node.names:
                origin = borrowed[node.module].get(alias.name)
                # the contract's names, renamed where they are used (_keys), are data
                if origin is not None and _private(origin):
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno}: {module} takes {alias.name} "
                        f"from {node.module}, which has it from {origin}"
                    )
    assert found == []
