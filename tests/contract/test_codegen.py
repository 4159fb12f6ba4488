"""`make generate` is deterministic, fast, and the committed package is up to date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from tests.contract._schemas import ROOT

GENERATE = ROOT / "codegen" / "generate.py"
BUDGET_SECONDS = 30


def _codegen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baqup_codegen", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generation_is_deterministic_and_fast(tmp_path: Path) -> None:
    codegen = _codegen()
    trees = []
    for run in ("a", "b"):
        start = time.perf_counter()
        codegen.generate(tmp_path / run)
        assert time.perf_counter() - start < BUDGET_SECONDS
        trees.append(_tree(tmp_path / run))
    assert trees[0] == trees[1]
    assert trees[0] == _tree(codegen.TARGET), "committed package is stale: make generate"


def test_generated_files_say_do_not_edit() -> None:
    codegen = _codegen()
    paths = [*codegen.TARGET.glob("*.py"), *codegen.REEXPORT_TARGET.glob("*.py")]
    assert len(paths) > 2
    for path in sorted(paths):
        assert "Do not edit by hand." in path.read_text(encoding="utf-8").splitlines()[0], path


def test_check_mode_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATE), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


def test_check_mode_fails_on_drift(tmp_path: Path) -> None:
    codegen = _codegen()
    committed = tmp_path / "committed"
    codegen.generate(committed)
    (committed / "exit_code.py").write_text("# edited by hand\n", encoding="utf-8")
    fresh = tmp_path / "fresh"
    codegen.generate(fresh)
    diff = codegen._diff(committed, fresh)
    assert any("exit_code.py" in line for line in diff)
