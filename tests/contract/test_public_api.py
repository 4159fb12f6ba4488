"""Generated names are public API: a schema edit must not remove one silently
(airbyte-protocol 124 broke every importer that way)."""

from __future__ import annotations

import enum
import importlib
import importlib.util

import baqup_agent
import baqup_schema.contract
from baqup_agent import contract
from baqup_agent.contract import tables, wire
from baqup_schema import _types
from tests.contract.test_surface import PUBLIC

CONTRACT_NAMES = set(PUBLIC["baqup_agent.contract"])  # pinned in test_surface
TABLE_NAMES = {
    "EXIT_CODES",
    "ExitCodeInfo",
    "FINAL_STATES",
    "INITIAL_STATE",
    "SECRET_CONFIG_VARIABLES",
    "TRANSITIONS",
    "JOB_ID_PATTERN",
    "AGENT_ID_PATTERN",
    "ARTIFACT_FILENAME_PATTERN",
    "ARTIFACT_FILENAME_MAX_LENGTH",
    "LOG_RECORD_FIELDS",
    "RESULT_ERROR_MAX_LENGTH",
}
WIRE_NAMES = {
    "RedisKey",
    "REDIS_KEYS",
    "JOB_ID_PLACEHOLDER",
    "STREAM_FIELD",
    "EVENTS_STREAM_MAXLEN",
    "HEARTBEAT_TTL_INTERVALS",
    "RESULT_RETENTION_SECONDS",
    "SPOOL_SUBDIR",
    "SPOOL_DIR_MODE",
    "SPOOL_FILE_MODE",
    "SPOOL_EVENTS_FILE",
    "SPOOL_REPLAYED_FILE",
    "SPOOL_CONTROL_FILE",
    "STAGING_SUBDIR",
    "LOCKS_SUBDIR",
    "STAGING_DIR_MODE",
}
# Hand-written since issue 12 (baqup_schema._types, no longer the generated
# baqup_agent.contract._types): the generated models import them from there.
TYPE_NAMES = {"MessageId", "Timestamp", "UtcTimestamp"}

PACKAGE_CONTRACT_NAMES = {"ExitCode", "AgentState", "LogLevel", "Manifest", "Artifact"}
PACKAGE_NAMES = PACKAGE_CONTRACT_NAMES | {
    "__version__",
    "Secret",
    "Logger",
    "BusClient",
    "HeartbeatThread",
    "compute_checksum",
    "validate_path",
    "atomic_write",
    "load_config",
    "Agent",
    "Context",
    "run",
    "AgentError",
    "ConfigError",
    "DataError",
    "ResourceUnavailable",
    "CantCreateOutput",
    "IOFailure",
    "PartialFailure",
    "Cancelled",
    # public since issue 12 item 4, when their modules became private: authors build a
    # SecretFile, get a ChildResult (or a ChildFailed) and a PublishedOutput, read a job
    # with JobEvents
    "ChildFailed",
    "ChildResult",
    "JobEvents",
    "PublishedOutput",
    "SecretFile",
}
"""The preview's names (README) plus what the runtime adds."""


def test_contract_exports_exactly_the_pinned_names() -> None:
    assert set(contract.__all__) == CONTRACT_NAMES
    assert len(contract.__all__) == len(CONTRACT_NAMES)
    # Common (common.json's placeholder root, holding its $defs together) was dropped
    # from the public names in issue 12; the model stays in contract.common
    assert "Common" not in dir(contract)
    for name in CONTRACT_NAMES:
        value = getattr(contract, name)
        assert value.__name__ == name
        # generated into the baqup-schema distribution; baqup_agent.contract re-exports it
        assert value.__module__.startswith("baqup_schema.contract.")
        assert value is getattr(baqup_schema.contract, name)


def test_contract_tables_and_types_keep_their_names() -> None:
    assert set(vars(tables)) >= TABLE_NAMES
    assert set(vars(wire)) >= WIRE_NAMES
    assert set(vars(_types)) >= TYPE_NAMES


def test_contract_names_are_models_or_enums() -> None:
    from pydantic import BaseModel

    for name in CONTRACT_NAMES:
        value = getattr(contract, name)
        assert issubclass(value, (BaseModel, enum.Enum)), name


def test_package_all_is_pinned() -> None:
    assert set(baqup_agent.__all__) == PACKAGE_NAMES
    assert set(dir(baqup_agent)) >= PACKAGE_NAMES


def test_package_contract_names_are_the_generated_ones() -> None:
    for name in PACKAGE_CONTRACT_NAMES:
        assert getattr(baqup_agent, name) is getattr(contract, name)


def test_every_package_name_resolves_when_its_module_exists() -> None:
    """Runtime modules are written in parallel: a name whose module exists must resolve
    to an object of that name; one whose module is missing must fail for that reason."""
    for name in sorted(PACKAGE_NAMES - {"__version__"}):
        module = baqup_agent._EXPORTS[name]
        if importlib.util.find_spec(module) is None:
            try:
                getattr(baqup_agent, name)
            except ModuleNotFoundError as exc:
                assert exc.name == module
            else:
                raise AssertionError(f"{name} resolved without {module}")
            continue
        value = getattr(baqup_agent, name)
        assert getattr(value, "__name__", name) == name
        assert value is getattr(importlib.import_module(module), name)


def test_unknown_names_raise_attribute_error() -> None:
    for module in (baqup_agent, contract):
        try:
            module.NoSuchName  # noqa: B018
        except AttributeError:
            pass
        else:
            raise AssertionError(f"{module.__name__}.NoSuchName resolved")
