"""The "baqup-schema" role inside the SDK: ``baqup_schema`` re-exported.

Validation and environment loading live in the ``baqup-schema`` distribution
(``baqup_schema``), which a controller can install without the agent runtime; this
module keeps the names the SDK has always had here (``validate``, ``load_from_env``,
``contract_errors``, ``ValidationResult``, ...). The ``validate-config`` command,
which loads an agent's config as ``load_config`` does, is the CLI's (``_cli.py``).
"""

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
]
