"""``load_config``: the agent's configuration from the environment (contract section 2).

The base contract (``schema/config.json``, the ``BAQUP_*`` variables) is merged with
the agent's own ``agent-schema.json``; the environment is read, coerced, defaulted
and validated by ``baqup_schema.load_from_env``. Secrets (``writeOnly``
properties) may come from ``NAME_FILE`` and are returned as ``Secret``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

from baqup_agent._errors import ConfigError, ConfigProblem
from baqup_agent._keys import default_spool_dir
from baqup_agent._secret import Secret
from baqup_agent.contract import BaseConfig, ChecksumAlgorithm, LogFormat, LogLevelName, Role
from baqup_agent.contract.tables import AGENT_ID_PATTERN, JOB_ID_PATTERN, SECRET_CONFIG_VARIABLES
from baqup_agent.contract.wire import HEARTBEAT_TTL_INTERVALS
from baqup_schema import config_schema, load_from_env

__all__ = [
    "BusEnvironment",
    "Config",
    "JobSettings",
    "bus_environment",
    "fallback_identity",
    "job_settings",
    "load_config",
    "scrub_secrets",
]


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


@dataclass(frozen=True)
class JobSettings:
    """The base contract's variables of one job, typed, with their defaults applied.

    Built once from the validated configuration (``Config.settings``, from the
    generated ``BaseConfig``), and what the logger, bus, heartbeat, cancellation,
    progress log and staging are given: nothing outside config loading looks a
    ``BAQUP_*`` variable up or casts it. Secrets stay ``Secret``. An agent's own
    variables are in the ``Config`` (``ctx.config``).
    """

    job_id: str
    agent_id: str
    role: Role
    staging_dir: Path
    spool_dir: Path
    """``BAQUP_SPOOL_DIR``, else the spool directory inside ``BAQUP_STAGING_DIR``."""
    restore_source: Path | None
    redis_url: Secret | None
    redis_password: Secret | None
    heartbeat_interval: float
    heartbeat_ttl_setting: float | None
    """``BAQUP_HEARTBEAT_TTL`` as set (None: a number of intervals, see ``heartbeat_ttl``)."""
    grace_period: float
    progress_log_interval: float
    log_level: LogLevelName
    log_format: LogFormat
    checksum_algorithm: ChecksumAlgorithm

    def heartbeat_ttl(self, interval: float | None = None) -> float:
        """Seconds the heartbeat key lives: ``BAQUP_HEARTBEAT_TTL``, or when unset
        ``HEARTBEAT_TTL_INTERVALS`` (schema/wire.json) times ``interval`` (by default
        ``BAQUP_HEARTBEAT_INTERVAL``)."""
        if self.heartbeat_ttl_setting is not None:
            return self.heartbeat_ttl_setting
        return HEARTBEAT_TTL_INTERVALS * (interval or self.heartbeat_interval)

    @classmethod
    def from_base(cls, base: BaseConfig) -> JobSettings:
        """The settings of a validated ``BaseConfig`` (secret fields holding ``Secret``)."""

        def path(value: str | None) -> Path | None:
            return None if value is None else Path(value)

        spool_dir = default_spool_dir(base.BAQUP_SPOOL_DIR, base.BAQUP_STAGING_DIR)
        assert spool_dir is not None  # BAQUP_STAGING_DIR always has a value
        return cls(
            job_id=base.BAQUP_JOB_ID,
            agent_id=base.BAQUP_AGENT_ID,
            role=base.BAQUP_ROLE,
            staging_dir=Path(base.BAQUP_STAGING_DIR),
            spool_dir=spool_dir,
            restore_source=path(base.BAQUP_RESTORE_SOURCE),
            # the secret model holds Secret objects (its static type says str)
            redis_url=cast("Secret | None", base.BAQUP_REDIS_URL),
            redis_password=cast("Secret | None", base.BAQUP_REDIS_PASSWORD),
            heartbeat_interval=base.BAQUP_HEARTBEAT_INTERVAL,
            heartbeat_ttl_setting=base.BAQUP_HEARTBEAT_TTL,
            grace_period=base.BAQUP_GRACE_PERIOD,
            progress_log_interval=base.BAQUP_PROGRESS_LOG_INTERVAL,
            log_level=base.BAQUP_LOG_LEVEL,
            log_format=base.BAQUP_LOG_FORMAT,
            checksum_algorithm=base.BAQUP_CHECKSUM_ALGORITHM,
        )


def job_settings(config: JobSettings | Mapping[str, Any]) -> JobSettings:
    """``config`` as ``JobSettings``: settings as they are, a ``Config`` its settings, any
    other mapping of the base variables validated first (``ConfigError`` naming each
    variable that is wrong)."""
    if isinstance(config, JobSettings):
        return config
    return (config if isinstance(config, Config) else Config(config)).settings


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
        """The base contract's variables as the generated model (built once).

        Raises ``ConfigError`` naming each wrong variable (never quoting a value) when
        the mapping was not validated by ``load_config``.
        """
        from pydantic import ValidationError

        names = BaseConfig.model_fields.keys()
        plain = {
            k: v.reveal() if isinstance(v, Secret) else v for k, v in self.items() if k in names
        }
        try:
            # JSON input: the strict contract models take enum values from JSON, not Python
            return _secret_base_model().model_validate_json(orjson.dumps(plain))
        except ValidationError as exc:
            # pydantic's message names the rule, never the input (which may be a secret)
            problems = [
                # not-a-schema-value: pydantic's error text
                ConfigProblem(".".join(map(str, e["loc"])), e["msg"])
                for e in exc.errors(include_input=False)
            ]
            raise ConfigError(problems) from exc

    @functools.cached_property
    def settings(self) -> JobSettings:
        """The base variables as ``JobSettings`` (built once, defaults applied)."""
        return JobSettings.from_base(self.base)

    @property
    def job_id(self) -> str:
        """``BAQUP_JOB_ID``."""
        return self.settings.job_id

    @property
    def agent_id(self) -> str:
        """``BAQUP_AGENT_ID``."""
        return self.settings.agent_id

    @property
    def role(self) -> Role:
        """``BAQUP_ROLE`` as the contract's enum."""
        return self.settings.role


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


class BusEnvironment(NamedTuple):
    """The bus variables of the environment, unvalidated: the defaults of the operator's
    commands (``watch``, ``replay``), which run outside a job and its whole config."""

    redis_url: str | None
    redis_password: str | None
    spool_dir: Path | None
    """``BAQUP_SPOOL_DIR``, else the spool inside ``BAQUP_STAGING_DIR``, else None."""


def bus_environment(environ: Mapping[str, str] | None = None) -> BusEnvironment:
    """``BAQUP_REDIS_URL``, ``BAQUP_REDIS_PASSWORD`` and the spool directory from
    ``environ`` (default ``os.environ``); empty counts as unset."""
    env = os.environ if environ is None else environ
    return BusEnvironment(
        env.get("BAQUP_REDIS_URL") or None,
        env.get("BAQUP_REDIS_PASSWORD") or None,
        default_spool_dir(env.get("BAQUP_SPOOL_DIR"), env.get("BAQUP_STAGING_DIR")),
    )


def early_restore_source(environ: Mapping[str, str]) -> str | None:
    """The restore source ``environ`` names for a restore job, read before the
    configuration is loaded (to hash the artifacts early, docs/architecture.md); None
    for any other job. The configuration, once loaded, still decides."""
    source = environ.get("BAQUP_RESTORE_SOURCE")
    return source if source and environ.get("BAQUP_ROLE") == Role.RESTORE.value else None


def fallback_identity(environ: Mapping[str, str]) -> tuple[str, str, LogFormat]:
    """Job id, agent id and log format for reporting a configuration that did not load:
    what the environment gives where it fits the schema, else ``unknown`` and json."""

    def ident(name: str, pattern: str) -> str:
        value = environ.get(name, "")
        return value if re.fullmatch(pattern, value) else "unknown"

    fmt = environ.get("BAQUP_LOG_FORMAT", "")
    return (
        ident("BAQUP_JOB_ID", JOB_ID_PATTERN),
        ident("BAQUP_AGENT_ID", AGENT_ID_PATTERN),
        LogFormat(fmt) if fmt in set(LogFormat) else LogFormat.JSON,
    )
