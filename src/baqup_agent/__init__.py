"""baqup-agent: the SDK for writing baqup backup agents.

The public names are re-exported here and resolved on first use (PEP 562), so
``import baqup_agent`` stays cheap for agents that start cold: redis, jsonschema
and compression libraries load only when the feature that needs them is used.
"""

from __future__ import annotations

import importlib
import typing

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
    "Secret": "baqup_agent._secret",
    "Logger": "baqup_agent._logger",
    "BusClient": "baqup_agent._bus",
    "HeartbeatThread": "baqup_agent._heartbeat",
    "compute_checksum": "baqup_agent._checksum",
    "validate_path": "baqup_agent._paths",
    "atomic_write": "baqup_agent._staging",
    "load_config": "baqup_agent.config",
    "Agent": "baqup_agent._agent",
    "Context": "baqup_agent._agent",
    "run": "baqup_agent._agent",
    "SecretFile": "baqup_agent._child",
    "ChildFailed": "baqup_agent._child",
    "ChildResult": "baqup_agent._child",
    "PublishedOutput": "baqup_agent._restore",
    "JobEvents": "baqup_agent._reader",
    # errors (one class per exit code)
    "AgentError": "baqup_agent._errors",
    "ConfigError": "baqup_agent._errors",
    "DataError": "baqup_agent._errors",
    "ResourceUnavailable": "baqup_agent._errors",
    "CantCreateOutput": "baqup_agent._errors",
    "IOFailure": "baqup_agent._errors",
    "PartialFailure": "baqup_agent._errors",
    "Cancelled": "baqup_agent._errors",
}

__all__ = [
    "Agent",
    "AgentError",
    "AgentState",
    "Artifact",
    "BusClient",
    "Cancelled",
    "CantCreateOutput",
    "ChildFailed",
    "ChildResult",
    "ConfigError",
    "Context",
    "DataError",
    "ExitCode",
    "HeartbeatThread",
    "IOFailure",
    "JobEvents",
    "LogLevel",
    "Logger",
    "Manifest",
    "PartialFailure",
    "PublishedOutput",
    "ResourceUnavailable",
    "Secret",
    "SecretFile",
    "__version__",
    "atomic_write",
    "compute_checksum",
    "load_config",
    "run",
    "validate_path",
]

if typing.TYPE_CHECKING:
    from baqup_agent._agent import Agent, Context, run
    from baqup_agent._bus import BusClient
    from baqup_agent._checksum import compute_checksum
    from baqup_agent._child import ChildFailed, ChildResult, SecretFile
    from baqup_agent._errors import (
        AgentError,
        Cancelled,
        CantCreateOutput,
        ConfigError,
        DataError,
        IOFailure,
        PartialFailure,
        ResourceUnavailable,
    )
    from baqup_agent._heartbeat import HeartbeatThread
    from baqup_agent._logger import Logger
    from baqup_agent._paths import validate_path
    from baqup_agent._reader import JobEvents
    from baqup_agent._restore import PublishedOutput
    from baqup_agent._secret import Secret
    from baqup_agent._staging import atomic_write
    from baqup_agent.config import load_config
    from baqup_agent.contract import AgentState, Artifact, ExitCode, LogLevel, Manifest


def __getattr__(name: str) -> typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baqup_agent' has no attribute {name!r}")
    from baqup_agent._surface import publish

    # defined in a private module: reprs and pickles name this package instead
    value = publish(__name__, getattr(importlib.import_module(module), name))
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
