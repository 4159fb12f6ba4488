"""baqup-schema: validate baqup agent configs against JSON Schema, load them from the environment.

The small distribution a controller installs for pre-flight validation (no Redis
client, no compression library); baqup-agent depends on it and re-exports it as
``baqup_agent.schema`` (and the generated contract as ``baqup_agent.contract``).

- ``validate(schema, config)`` checks a mapping against a Draft 2020-12 schema, with
  format checking (the standard formats plus ``path`` and ``hostname``), and returns
  every error, each naming its variable (or JSON path) in a short message that never
  echoes a secret (``writeOnly``) value and never dumps the schema.
- ``load_from_env(schema_path, ...)`` reads each declared property from the
  environment by its exact name, coerces the strings to the schema's types, applies
  defaults, reads ``NAME_FILE`` for secrets, reports unknown prefixed variables and
  raises one ``ConfigError`` listing every problem.
- ``config_schema(agent_schema)`` merges an agent's ``agent-schema.json`` with the
  base contract (``schema/config.json``); baqup-agent's ``load_config`` and its
  ``validate-config`` command use it.
- ``contract_errors(name, document)`` checks a document against a packaged contract
  schema.
- ``baqup_schema.contract``: the pydantic models, enums and tables generated from the
  schemas (``make generate``), with copies of the schema files.

This module is the public face (``ConfigError``, ``Secret`` and the rest of
``__all__`` come from here too); the work is done in ``compiled_schema`` (compiling
and caching schemas, merging), ``contract_schemas`` (the packaged schemas, the
``$ref`` registry, never the network, and the custom formats), ``schema_messages``
(the wording of errors) and ``env`` (the environment). Names resolve on first use
and jsonschema is imported on first validation only.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

# public name -> module that defines it; resolved on first use (PEP 562), so that
# ``from baqup_schema.contract import ExitCode`` (and ``import baqup_agent``) stays cheap
_EXPORTS: dict[str, str] = {
    "CompiledSchema": "baqup_schema.compiled_schema",
    "SchemaSource": "baqup_schema.compiled_schema",
    "Variable": "baqup_schema.compiled_schema",
    "compile_schema": "baqup_schema.compiled_schema",
    "config_schema": "baqup_schema.compiled_schema",
    "is_hostname": "baqup_schema.contract_schemas",
    "is_path": "baqup_schema.contract_schemas",
    "coerce": "baqup_schema.env",
    "load_from_env": "baqup_schema.env",
    "read_secret_file": "baqup_schema.env",
    "AgentError": "baqup_schema.errors",
    "ConfigError": "baqup_schema.errors",
    "ConfigProblem": "baqup_schema.errors",
    "SchemaError": "baqup_schema.errors",
    "ValidationError": "baqup_schema.schema_messages",
    "ValidationResult": "baqup_schema.schema_messages",
    "Secret": "baqup_schema.secret",
}

__all__ = [
    "AgentError",
    "CompiledSchema",
    "ConfigError",
    "ConfigProblem",
    "SchemaError",
    "SchemaSource",
    "Secret",
    "ValidationError",
    "ValidationResult",
    "Variable",
    "coerce",
    "compile_schema",
    "config_schema",
    "contract_errors",
    "is_hostname",
    "is_path",
    "load_from_env",
    "read_secret_file",
    "validate",
]

if TYPE_CHECKING:
    from baqup_schema.compiled_schema import (
        CompiledSchema,
        SchemaSource,
        Variable,
        compile_schema,
        config_schema,
    )
    from baqup_schema.contract_schemas import is_hostname, is_path
    from baqup_schema.env import coerce, load_from_env, read_secret_file
    from baqup_schema.errors import AgentError, ConfigError, ConfigProblem, SchemaError
    from baqup_schema.schema_messages import ValidationError, ValidationResult
    from baqup_schema.secret import Secret


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baqup_schema' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return list(__all__)


def validate(schema: SchemaSource | CompiledSchema, config: Mapping[str, Any]) -> ValidationResult:
    """Validate ``config`` against ``schema`` (mapping, file path or contract ``$id``).

    Draft 2020-12 with format checking and conditional rules; every error is
    returned, each with the variable's name (or JSON path), a short message and the
    failing keyword. ``Secret`` values are checked by their content but never quoted.
    """
    from baqup_schema.compiled_schema import compile_schema

    return compile_schema(schema).validate(config)


def contract_errors(name: str, instance: object, *, limit: int = 3) -> list[str]:
    """Up to ``limit`` ``"<json path>: <message>"`` errors of a document against a contract
    schema (empty when valid).

    ``name`` is a packaged schema file, optionally with a fragment: ``"manifest.json"``,
    ``"bus-message.json#/$defs/Heartbeat"``. Unlike ``validate`` (made for configs) the
    messages are jsonschema's own, so they name exactly what the published schema says;
    the validator is built once per name.
    """
    from baqup_schema.contract_schemas import contract_validator

    errors = sorted(contract_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    out = []
    for error in errors[:limit]:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append(f"{where or '(root)'}: {error.message}")
    return out
