"""The "baqup-schema" role: validate configs against JSON Schema, load them from the environment.

- ``validate(schema, config)`` checks a mapping against a Draft 2020-12 schema, with
  format checking (the standard formats plus ``path`` and ``hostname``), and returns
  every error, each naming its variable (or JSON path) in a short message that never
  echoes a secret (``writeOnly``) value and never dumps the schema.
- ``load_from_env(schema_path, ...)`` reads each declared property from the
  environment by its exact name, coerces the strings to the schema's types, applies
  defaults, reads ``NAME_FILE`` for secrets, reports unknown prefixed variables and
  raises one ``ConfigError`` listing every problem.
- ``config_schema(agent_schema)`` merges an agent's ``agent-schema.json`` with the
  base contract (``schema/config.json``); ``load_config`` and the ``validate-config``
  command use it.
- ``contract_errors(name, document)`` checks a document against a packaged contract
  schema.

This module is the public face; the work is done in ``compiled_schema`` (compiling
and caching schemas, merging), ``contract_schemas`` (the packaged schemas, the
``$ref`` registry, never the network, and the custom formats), ``schema_messages``
(the wording of errors) and ``env`` (the environment). jsonschema is imported on
first use only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from baqup_agent.compiled_schema import (
    CompiledSchema,
    SchemaSource,
    Variable,
    compile_schema,
    config_schema,
)
from baqup_agent.contract_schemas import contract_validator, is_hostname, is_path
from baqup_agent.env import coerce, load_from_env, read_secret_file
from baqup_agent.errors import ConfigError
from baqup_agent.redaction import REDACTOR
from baqup_agent.schema_messages import ValidationError, ValidationResult

if TYPE_CHECKING:
    import argparse

__all__ = [
    "CompiledSchema",
    "SchemaSource",
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
    "validate_config_command",
]


def validate(schema: SchemaSource | CompiledSchema, config: Mapping[str, Any]) -> ValidationResult:
    """Validate ``config`` against ``schema`` (mapping, file path or contract ``$id``).

    Draft 2020-12 with format checking and conditional rules; every error is
    returned, each with the variable's name (or JSON path), a short message and the
    failing keyword. ``Secret`` values are checked by their content but never quoted.
    """
    return compile_schema(schema).validate(config)


def contract_errors(name: str, instance: object, *, limit: int = 3) -> list[str]:
    """Up to ``limit`` ``"<json path>: <message>"`` errors of a document against a contract
    schema (empty when valid).

    ``name`` is a packaged schema file, optionally with a fragment: ``"manifest.json"``,
    ``"bus-message.json#/$defs/Heartbeat"``. Unlike ``validate`` (made for configs) the
    messages are jsonschema's own, so they name exactly what the published schema says;
    the validator is built once per name.
    """
    errors = sorted(contract_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    out = []
    for error in errors[:limit]:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append(f"{where or '(root)'}: {error.message}")
    return out


# -- the validate-config command -------------------------------------------------------


def validate_config_command(args: argparse.Namespace) -> int:
    """``baqup-agent validate-config --schema FILE [--prefix P] [--json]``.

    Loads the environment as ``load_config`` does (base contract + agent schema);
    prints ``ok: N variables`` and returns 0 when valid, one ``VARIABLE: message``
    line per error and 64 when not. ``--json`` prints one JSON document instead.
    """
    from baqup_agent.config import load_config

    try:
        config = load_config(args.schema, prefix=args.prefix)
    except ConfigError as exc:
        problems = exc.problems
        if args.json:
            errors = [p._asdict() for p in problems]
            _print(json.dumps({"valid": False, "errors": errors}))
        else:
            for p in problems:
                _print(f"{p.variable}: {p.message}" if p.variable else p.message)
        return int(ConfigError.exit_code)
    if args.json:
        _print(json.dumps({"valid": True, "variables": len(config)}))
    else:
        _print(f"ok: {len(config)} variables")
    return 0


def _print(line: str) -> None:
    # names from the environment may hold undecodable bytes (surrogates): escape them
    sys.stdout.write(REDACTOR.redact(line).encode("utf-8", "backslashreplace").decode() + "\n")
