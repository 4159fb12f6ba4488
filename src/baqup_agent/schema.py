"""The "baqup-schema" role inside the SDK: ``baqup_schema`` re-exported, plus its command.

Validation and environment loading live in the ``baqup-schema`` distribution
(``baqup_schema``), which a controller can install without the agent runtime; this
module keeps the names the SDK has always had here (``validate``, ``load_from_env``,
``contract_errors``, ``ValidationResult``, ...) and adds the ``validate-config``
command, which loads an agent's config as ``load_config`` does.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from baqup_agent.errors import ConfigError
from baqup_agent.redaction import REDACTOR
from baqup_schema import (
    CompiledSchema,
    SchemaSource,
    ValidationError,
    ValidationResult,
    Variable,
    coerce,
    compile_schema,
    config_schema,
    contract_errors,
    is_hostname,
    is_path,
    load_from_env,
    read_secret_file,
    validate,
)

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
