"""``import baqup_agent`` stays light: heavy dependencies load only when used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("redis", "jsonschema", "zstandard", "blake3", "sqlite3")


def _loaded(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import baqup_agent",
        "from baqup_agent import ExitCode",
        "from baqup_agent import ExitCode, AgentState, LogLevel, Manifest, Artifact",
        "from baqup_agent.contract import BusMessage, BaseConfig, LogRecord, tables",
    ],
)
def test_heavy_modules_stay_unloaded(code: str) -> None:
    loaded = _loaded(code)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    "code", ["import baqup_agent", "from baqup_agent import ExitCode, AgentState, LogLevel"]
)
def test_enums_do_not_need_pydantic(code: str) -> None:
    """The contract package resolves names lazily: an enum loads its module alone."""
    loaded = _loaded(code)
    assert not {m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core")}
