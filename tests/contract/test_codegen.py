"""The code generator's own guarantees.

Whether the committed package is up to date (and generation deterministic: the committed
tree was generated at another time, in another directory) is `make check-generated`'s
job, run once by `make test`; these tests do not generate again.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.contract._schemas import ROOT, SCHEMAS

GENERATE = ROOT / "codegen" / "generate.py"


def _codegen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baqup_codegen", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_say_do_not_edit() -> None:
    codegen = _codegen()
    paths = [*codegen.TARGET.glob("*.py"), *codegen.REEXPORT_TARGET.glob("*.py")]
    assert len(paths) > 2
    for path in sorted(paths):
        assert "Do not edit by hand." in path.read_text(encoding="utf-8").splitlines()[0], path


def test_check_mode_reports_a_hand_edit(tmp_path: Path) -> None:
    codegen = _codegen()
    edited = tmp_path / "edited"
    shutil.copytree(codegen.TARGET, edited, ignore=shutil.ignore_patterns("__pycache__"))
    assert codegen._diff(edited, codegen.TARGET) == []
    (edited / "wire.py").write_text("# edited by hand\n", encoding="utf-8")
    (edited / "stray.py").write_text("", encoding="utf-8")
    diff = "".join(codegen._diff(edited, codegen.TARGET))
    assert "committed/wire.py" in diff
    assert "only in committed tree: stray.py" in diff


def _wire_with(monkeypatch: pytest.MonkeyPatch, change: Any) -> Any:
    codegen = _codegen()
    wire = copy.deepcopy(SCHEMAS["wire.json"])
    change(wire)
    real = codegen._load
    monkeypatch.setattr(codegen, "_load", lambda n: wire if n == "wire.json" else real(n))
    return codegen._wire_context


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.update({"x-stream-field": "message"}),
        lambda w: w.update({"required": ["msg", "other"]}),
        lambda w: w["x-redis-keys"]["events"].update({"template": "baqup:JOB_ID:events"}),
        lambda w: w["x-redis-keys"]["result"].update({"template": "baqup:result"}),
    ],
    ids=["field-name", "two-fields", "no-hash-tag", "no-job-id"],
)
def test_generator_refuses_an_inconsistent_wire_schema(
    monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    with pytest.raises(SystemExit, match=r"wire\.json"):
        _wire_with(monkeypatch, change)()
