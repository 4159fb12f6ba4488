"""``load_config``: the agent's configuration from the environment (contract section 2).

The base contract (``schema/config.json``, the ``BAQUP_*`` variables) is merged with
the agent's own ``agent-schema.json``; the environment is read, coerced, defaulted
and validated by ``baqup_agent.schema.load_from_env``. Secrets (``writeOnly``
properties) may come from ``NAME_FILE`` and are returned as ``Secret``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from baqup_agent.contract import BaseConfig, Role
from baqup_agent.contract.tables import SECRET_CONFIG_VARIABLES
from baqup_agent.schema import config_schema, load_from_env
from baqup_agent.secret import Secret

__all__ = ["Config", "load_config", "scrub_secrets"]


@functools.cache
def _secret_base_model() -> type[BaseConfig]:
    """``BaseConfig`` with its secret fields typed ``Secret`` (so they never leak).

    A subclass, so ``isinstance(config.base, BaseConfig)`` holds; built from the
    generated table of secret variables rather than restating their names.
    """
    from pydantic import create_model

    fields: dict[str, Any] = {
        name: (Secret | None, BaseConfig.model_fields[name].default)
        for name in sorted(SECRET_CONFIG_VARIABLES)
    }
    model: type[BaseConfig] = create_model(
        "BaseConfig", __base__=BaseConfig, __module__=__name__, **fields
    )
    return model


class Config(dict[str, Any]):
    """The validated configuration: a dict from variable name to typed value.

    ``config["BAQUP_JOB_ID"]`` works as in the preview; secrets are ``Secret``
    objects (``.reveal()`` where the value is really used). ``config.base`` is the
    generated ``contract.BaseConfig`` model of the base variables, enums included;
    its secret fields hold ``Secret`` objects too (their static type says ``str``),
    so printing or dumping the model never shows them (``model_dump_json`` writes
    ``[REDACTED]``).
    """

    @functools.cached_property
    def base(self) -> BaseConfig:
        """The base contract's variables as the generated model (built once)."""
        names = BaseConfig.model_fields.keys()
        plain = {
            k: v.reveal() if isinstance(v, Secret) else v for k, v in self.items() if k in names
        }
        # JSON input: the strict contract models take enum values from JSON, not Python
        return _secret_base_model().model_validate_json(orjson.dumps(plain))

    @property
    def job_id(self) -> str:
        """``BAQUP_JOB_ID``."""
        return str(self["BAQUP_JOB_ID"])

    @property
    def agent_id(self) -> str:
        """``BAQUP_AGENT_ID``."""
        return str(self["BAQUP_AGENT_ID"])

    @property
    def role(self) -> Role:
        """``BAQUP_ROLE`` as the contract's enum."""
        return Role(self["BAQUP_ROLE"])


def load_config(
    schema_path: str | Path | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prefix: str = "BAQUP_",
) -> Config:
    """Load and validate the agent's configuration from the environment.

    ``schema_path`` is the agent's ``agent-schema.json`` (or the schema as a
    mapping); ``None`` loads the base contract alone. ``environ`` defaults to
    ``os.environ``. Unknown variables that start with ``prefix`` are errors.

    Raises ``ConfigError`` (exit 64) listing every problem at once, each naming its
    variable and never quoting a secret; ``SchemaError`` (also 64) when the schema
    cannot be used.
    """
    values = load_from_env(config_schema(schema_path), prefix=prefix, environ=environ)
    return Config(values)


def scrub_secrets(
    schema_path: str | Path | Mapping[str, Any] | None, environ: MutableMapping[str, str]
) -> list[str]:
    """Remove the secret variables of the schema and their ``*_FILE`` variables from
    ``environ``; return the names removed.

    ``run()`` does this with ``os.environ`` once the configuration is loaded (the
    values live on in the ``Config``), so that child processes do not inherit the
    secrets unless the agent passes them on purpose (``keep_secrets_in_environ``
    opts out). Every variable that holds a ``writeOnly`` property counts.
    """
    compiled = config_schema(schema_path)
    removed: list[str] = []
    for name, var in compiled.variables.items():
        if var.holds_secret:
            for key in (name, name + "_FILE"):
                if environ.pop(key, None) is not None:
                    removed.append(key)
    return removed
