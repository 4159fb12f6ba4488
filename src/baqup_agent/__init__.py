"""baqup-agent: the SDK for writing baqup backup agents.

The public names are re-exported here and resolved on first use (PEP 562), so
``import baqup_agent`` stays cheap for agents that start cold: redis, jsonschema
and compression libraries load only when the feature that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # contract (generated from schema/)
    "ExitCode": "baqup_agent.contract",
    "AgentState": "baqup_agent.contract",
    "LogLevel": "baqup_agent.contract",
    "Manifest": "baqup_agent.contract",
    "Artifact": "baqup_agent.contract",
    # runtime
    "Secret": "baqup_agent.secret",
    "Logger": "baqup_agent.logger",
    "BusClient": "baqup_agent.bus",
    "HeartbeatThread": "baqup_agent.heartbeat",
    "compute_checksum": "baqup_agent.checksum",
    "validate_path": "baqup_agent.paths",
    "atomic_write": "baqup_agent.staging",
    "load_config": "baqup_agent.config",
    "Agent": "baqup_agent.agent",
    "Context": "baqup_agent.agent",
    "run": "baqup_agent.agent",
    # errors (one class per exit code)
    "AgentError": "baqup_agent.errors",
    "ConfigError": "baqup_agent.errors",
    "DataError": "baqup_agent.errors",
    "ResourceUnavailable": "baqup_agent.errors",
    "CantCreateOutput": "baqup_agent.errors",
    "IOFailure": "baqup_agent.errors",
    "PartialFailure": "baqup_agent.errors",
    "Cancelled": "baqup_agent.errors",
}

__all__ = [
    "Agent",
    "AgentError",
    "AgentState",
    "Artifact",
    "BusClient",
    "Cancelled",
    "CantCreateOutput",
    "ConfigError",
    "Context",
    "DataError",
    "ExitCode",
    "HeartbeatThread",
    "IOFailure",
    "LogLevel",
    "Logger",
    "Manifest",
    "PartialFailure",
    "ResourceUnavailable",
    "Secret",
    "__version__",
    "atomic_write",
    "compute_checksum",
    "load_config",
    "run",
    "validate_path",
]

if TYPE_CHECKING:
    from baqup_agent.agent import Agent, Context, run
    from baqup_agent.bus import BusClient
    from baqup_agent.checksum import compute_checksum
    from baqup_agent.config import load_config
    from baqup_agent.contract import AgentState, Artifact, ExitCode, LogLevel, Manifest
    from baqup_agent.errors import (
        AgentError,
        Cancelled,
        CantCreateOutput,
        ConfigError,
        DataError,
        IOFailure,
        PartialFailure,
        ResourceUnavailable,
    )
    from baqup_agent.heartbeat import HeartbeatThread
    from baqup_agent.logger import Logger
    from baqup_agent.paths import validate_path
    from baqup_agent.secret import Secret
    from baqup_agent.staging import atomic_write


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baqup_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
