"""Helpers of the agent tests: example agents, message and output checks (job
environments and spool events come from baqup_agent.testing)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import orjson

from baqup_agent import Agent
from baqup_agent._checksum import compute_checksum
from baqup_agent.contract import AgentState
from baqup_agent.contract.tables import FINAL_STATES, TRANSITIONS

# re-exported: the agent tests import them from here
from baqup_agent.testing import job_env as job_env
from baqup_agent.testing import process_env as process_env
from baqup_agent.testing import spool_messages

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SAMPLE_AGENT = Path(__file__).resolve().parent / "sample_agent.py"
FS_AGENT = EXAMPLES / "filesystem_agent" / "agent.py"
SQLITE_AGENT = EXAMPLES / "sqlite_agent" / "agent.py"

events = spool_messages  # the agent tests' short name


def load_agent(script: Path, class_name: str) -> type[Agent]:
    """The agent class defined in an example script, imported without running it."""
    spec = importlib.util.spec_from_file_location(f"example_{script.parent.name}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # inspect.getfile (config_schema's base) looks here
    spec.loader.exec_module(module)
    cls: type[Agent] = getattr(module, class_name)
    return cls


def agent_command(script: Path) -> list[str]:
    return [sys.executable, str(script)]


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == kind]


def the_result(messages: list[dict[str, Any]]) -> dict[str, Any]:
    results = of_type(messages, "result")
    assert len(results) == 1, f"expected exactly one result, got {len(results)}"
    return results[0]


def assert_legal_states(messages: list[dict[str, Any]]) -> list[AgentState]:
    """State changes start at initializing, follow the table, end final; returns them."""
    states = [AgentState(m["to_state"]) for m in of_type(messages, "state_change")]
    assert states and states[0] is AgentState.INITIALIZING
    for frm, to in itertools.pairwise(states):
        assert to in TRANSITIONS[frm], f"illegal {frm} -> {to}"
    assert states[-1] in FINAL_STATES
    return states


def assert_complete_output(output: Path) -> dict[str, Any]:
    """A published output: manifest present, every artifact's size and checksum match."""
    manifest: dict[str, Any] = orjson.loads((output / "manifest.json").read_bytes())
    names = {a["filename"] for a in manifest["artifacts"]} | {"manifest.json"}
    assert {p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()} == names
    for art in manifest["artifacts"]:
        path = output / art["filename"]
        assert path.stat().st_size == art["size_bytes"]
        assert compute_checksum(path, art["checksum_algorithm"]) == art["checksum_value"]
    return manifest
