"""Fixtures of the config, secret and logging tests: an agent schema and a base environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

AGENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "FsAgent",
    "type": "object",
    "additionalProperties": False,
    "required": ["FS_SOURCE"],
    "properties": {
        "FS_SOURCE": {"type": "string", "format": "path"},
        "FS_EXCLUDE": {"type": "array", "items": {"type": "string"}, "default": []},
        "FS_LEVEL": {"type": "integer", "minimum": 1, "maximum": 19, "default": 3},
        "FS_RATIO": {"type": "number", "exclusiveMinimum": 0},
        "FS_VERIFY": {"type": "boolean", "default": True},
        "FS_OPTIONS": {"type": "object"},
        "FS_TOKEN": {"type": "string", "writeOnly": True, "minLength": 8},
        "FS_HOST": {"type": "string", "format": "hostname"},
        "FS_PEER": {"$ref": "common.json#/$defs/AgentId"},
        "FS_LIMIT": {"anyOf": [{"type": "integer"}, {"type": "string", "const": "auto"}]},
    },
    "if": {"properties": {"BAQUP_ROLE": {"const": "restore"}}, "required": ["BAQUP_ROLE"]},
    "then": {"required": ["FS_HOST"]},
    "dependentRequired": {"FS_HOST": ["FS_TOKEN"]},
}

BASE_ENV: dict[str, str] = {
    "BAQUP_JOB_ID": "job-1",
    "BAQUP_AGENT_ID": "fs-agent-1",
    "BAQUP_ROLE": "backup",
    "FS_SOURCE": "/data",
}


@pytest.fixture
def agent_schema(tmp_path: Path) -> Path:
    """The agent schema above, written to a file."""
    path = tmp_path / "agent-schema.json"
    path.write_text(json.dumps(AGENT_SCHEMA))
    return path


@pytest.fixture
def env() -> dict[str, str]:
    """A valid environment for the agent schema (a fresh copy per test)."""
    return dict(BASE_ENV)
