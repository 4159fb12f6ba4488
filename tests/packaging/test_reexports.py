"""baqup-agent re-exports baqup-schema: the same objects under the old import paths, one
class per contract type, one process-wide redactor; baqup_schema imports as lightly."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import baqup_agent.schema
import baqup_schema
import baqup_schema.contract

GENERATED = sorted(
    m.name for m in pkgutil.iter_modules(baqup_schema.contract.__path__) if m.name != "schemas"
)


def _public(module: object) -> dict[str, object]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def test_every_generated_module_is_reexported_object_for_object() -> None:
    assert {"exit_code", "tables", "wire", "bus_message"} <= set(GENERATED)
    for name in GENERATED:
        theirs = importlib.import_module(f"baqup_schema.contract.{name}")
        ours = importlib.import_module(f"baqup_agent.contract.{name}")
        expected = _public(theirs)
        assert expected, name
        for attr, value in expected.items():
            assert getattr(ours, attr) is value, (name, attr)


def test_contract_package_names_are_the_same_objects() -> None:
    import baqup_agent.contract

    assert baqup_agent.contract.__all__ == baqup_schema.contract.__all__
    for name in baqup_schema.contract.__all__:
        assert getattr(baqup_agent.contract, name) is getattr(baqup_schema.contract, name)


def test_schema_facade_and_shared_state_are_the_same_objects() -> None:
    from baqup_agent import ConfigError, Secret
    from baqup_agent import _errors as errors
    from baqup_agent import _redaction as redaction
    from baqup_agent import _secret as secret

    for name in baqup_agent.schema.__all__:
        assert getattr(baqup_agent.schema, name) is getattr(baqup_schema, name), name
    assert Secret is secret.Secret is baqup_schema.Secret
    assert ConfigError is errors.ConfigError is baqup_schema.ConfigError
    assert errors.SchemaError is baqup_schema.SchemaError
    assert issubclass(errors.DataError, baqup_schema.AgentError)
    assert redaction.REDACTOR is importlib.import_module("baqup_schema.redaction").REDACTOR


def test_baqup_schema_names_resolve() -> None:
    assert sorted(dir(baqup_schema)) == sorted(baqup_schema.__all__)
    for name in baqup_schema.__all__:
        assert getattr(baqup_schema, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = baqup_schema.no_such_name


@pytest.mark.parametrize(
    "code", ["import baqup_schema", "from baqup_schema.contract import ExitCode, AgentState"]
)
def test_baqup_schema_imports_light(code: str) -> None:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = {m.split(".")[0] for m in json.loads(done.stdout.splitlines()[-1])}
    assert not loaded & {"jsonschema", "pydantic", "pydantic_core", "orjson", "baqup_agent"}
