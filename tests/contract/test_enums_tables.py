"""Generated enums and tables hold exactly what the schemas hold, and the values the
published preview fixed."""

from __future__ import annotations

import enum
import itertools
from typing import Any

import pytest

from baqup_agent import contract
from baqup_agent.contract import ExitCode, LogLevel, tables
from baqup_agent.contract.common import Common
from baqup_agent.contract.tables import EXIT_CODES, FINAL_STATES, INITIAL_STATE, TRANSITIONS
from tests.contract._schemas import SCHEMAS


def _schema_enums() -> dict[str, dict[str, Any]]:
    """Every enum in the schemas, by the name its generated class carries."""
    found: dict[str, dict[str, Any]] = {}
    for schema in SCHEMAS.values():
        if "enum" in schema:
            found[schema["title"]] = schema
        for name, sub in schema.get("$defs", {}).items():
            if "enum" in sub:
                found[name] = sub
    return found


SCHEMA_ENUMS = _schema_enums()
GENERATED_ENUMS = {
    name: getattr(contract, name)
    for name in contract.__all__
    if issubclass(getattr(contract, name), enum.Enum)
}


def test_every_schema_enum_is_generated_and_vice_versa() -> None:
    assert set(SCHEMA_ENUMS) == set(GENERATED_ENUMS)


@pytest.mark.parametrize("name", sorted(SCHEMA_ENUMS))
def test_enum_members_match_schema(name: str) -> None:
    schema, cls = SCHEMA_ENUMS[name], GENERATED_ENUMS[name]
    assert [m.value for m in cls] == schema["enum"]
    if "x-enum-varnames" in schema:
        assert [m.name for m in cls] == schema["x-enum-varnames"]
    else:
        assert [m.name for m in cls] == [str(v).upper() for v in schema["enum"]]
    for member in cls:
        assert str(member) == str(member.value)  # print(AgentState.RUNNING) -> running
        assert f"{member}" == str(member.value)


def test_exit_codes_are_the_previews() -> None:
    assert {m.name: m.value for m in ExitCode} == {
        "SUCCESS": 0,
        "GENERAL_FAILURE": 1,
        "USAGE_CONFIG_ERROR": 64,
        "DATA_ERROR": 65,
        "RESOURCE_UNAVAILABLE": 69,
        "INTERNAL_ERROR": 70,
        "CANT_CREATE_OUTPUT": 73,
        "IO_ERROR": 74,
        "COMPLETED_UNREPORTED": 75,
        "PARTIAL_FAILURE": 76,
    }
    assert issubclass(ExitCode, int)


def test_log_levels_and_states_are_the_previews() -> None:
    assert {m.name: m.value for m in LogLevel} == {
        "TRACE": 0,
        "DEBUG": 1,
        "INFO": 2,
        "WARN": 3,
        "ERROR": 4,
        "FATAL": 5,
    }
    assert [s.value for s in contract.AgentState] == [
        "initializing",
        "running",
        "completing",
        "terminated",
        "failed",
    ]


def test_exit_code_table_matches_schema() -> None:
    schema = SCHEMAS["exit-code.json"]
    assert list(EXIT_CODES) == list(ExitCode)
    for i, code in enumerate(ExitCode):
        info = EXIT_CODES[code]
        assert info.code is code
        assert info.meaning == schema["x-meanings"][i]
        assert info.retryable is schema["x-retryable"][i]
        assert info.controller_action == schema["x-controller-actions"][i]


def test_transition_table_matches_schema() -> None:
    schema = SCHEMAS["agent-state.json"]
    assert {s.value: sorted(t.value for t in targets) for s, targets in TRANSITIONS.items()} == {
        s: sorted(targets) for s, targets in schema["x-transitions"].items()
    }


def test_state_machine() -> None:
    """initializing -> running -> completing -> terminated; any non-final -> failed;
    final states have no exits."""
    s = contract.AgentState
    assert INITIAL_STATE is s.INITIALIZING
    assert {s.TERMINATED, s.FAILED} == FINAL_STATES
    assert {
        s.INITIALIZING: {s.RUNNING, s.FAILED},
        s.RUNNING: {s.COMPLETING, s.FAILED},
        s.COMPLETING: {s.TERMINATED, s.FAILED},
        s.TERMINATED: set(),
        s.FAILED: set(),
    } == TRANSITIONS
    path = [s.INITIALIZING, s.RUNNING, s.COMPLETING, s.TERMINATED]
    assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(path))
    for state in set(s) - FINAL_STATES:
        assert s.FAILED in TRANSITIONS[state]


def test_secret_config_variables_are_the_write_only_ones() -> None:
    props = SCHEMAS["config.json"]["properties"]
    assert {n for n, p in props.items() if p.get("writeOnly")} == tables.SECRET_CONFIG_VARIABLES
    assert {"BAQUP_REDIS_URL", "BAQUP_REDIS_PASSWORD"} <= tables.SECRET_CONFIG_VARIABLES


@pytest.mark.parametrize(
    ("model", "file", "name"),
    [
        (contract.Artifact, "artifact.json", None),
        (contract.BaseConfig, "config.json", None),
        (Common, "common.json", None),
        (contract.Progress, "common.json", "Progress"),
        (contract.LogRecord, "log-record.json", None),
        (contract.ExceptionInfo, "log-record.json", "ExceptionInfo"),
        (contract.Manifest, "manifest.json", None),
        (contract.StateChange, "bus-message.json", "StateChange"),
        (contract.Heartbeat, "bus-message.json", "Heartbeat"),
        (contract.ProgressUpdate, "bus-message.json", "ProgressUpdate"),
        (contract.Result, "bus-message.json", "Result"),
        (contract.Cancel, "bus-message.json", "Cancel"),
    ],
)
def test_model_fields_match_schema(model: Any, file: str, name: str | None) -> None:
    schema = SCHEMAS[file] if name is None else SCHEMAS[file]["$defs"][name]
    assert list(model.model_fields) == list(schema["properties"])
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert required == set(schema.get("required", []))
    extra = {False: "forbid", True: "allow"}[schema["additionalProperties"]]
    assert model.model_config["extra"] == extra
