"""``JobSettings``: the base variables typed once, defaults applied once, secrets kept
``Secret``; what the runtime is given instead of ``config["BAQUP_..."]`` look-ups."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baqup_agent._bus import BusClient
from baqup_agent._config import (
    Config,
    JobSettings,
    bus_environment,
    fallback_identity,
    job_settings,
    load_config,
)
from baqup_agent._errors import ConfigError
from baqup_agent._logger import Logger
from baqup_agent._secret import Secret
from baqup_agent.contract import BaseConfig, ChecksumAlgorithm, LogFormat, LogLevelName, Role
from baqup_agent.contract.wire import HEARTBEAT_TTL_INTERVALS, SPOOL_SUBDIR

ROOT = Path(__file__).resolve().parents[2]
BASE = {"BAQUP_JOB_ID": "job-7", "BAQUP_AGENT_ID": "agent-7", "BAQUP_ROLE": "backup"}
CANARY = "pw-canary-4711"


def test_settings_are_typed_defaulted_frozen_and_built_once() -> None:
    env = {**BASE, "BAQUP_REDIS_URL": f"redis://:{CANARY}@r:6379/0"}
    config = load_config(environ=env)
    settings = config.settings
    assert settings is config.settings  # built once
    defaults = BaseConfig.model_fields
    assert settings.staging_dir == Path(defaults["BAQUP_STAGING_DIR"].default)
    assert settings.spool_dir == settings.staging_dir / SPOOL_SUBDIR
    assert settings.heartbeat_interval == defaults["BAQUP_HEARTBEAT_INTERVAL"].default
    assert settings.heartbeat_ttl() == HEARTBEAT_TTL_INTERVALS * settings.heartbeat_interval
    assert settings.role is Role.BACKUP and settings.restore_source is None
    assert settings.log_level is LogLevelName.INFO and settings.log_format is LogFormat.JSON
    assert settings.checksum_algorithm is ChecksumAlgorithm.SHA256
    assert isinstance(settings.redis_url, Secret) and CANARY not in repr(settings)
    assert settings.redis_password is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.job_id = "other"  # type: ignore[misc]


@given(
    interval=st.floats(min_value=0.001, max_value=3600, allow_nan=False),
    ttl=st.none() | st.floats(min_value=0.001, max_value=86400, allow_nan=False),
    spool=st.none() | st.sampled_from(["/spool", "rel/spool"]),
)
def test_defaults_are_applied_once_for_any_setting(
    interval: float, ttl: float | None, spool: str | None
) -> None:
    env = {**BASE, "BAQUP_STAGING_DIR": "/st", "BAQUP_HEARTBEAT_INTERVAL": repr(interval)}
    if ttl is not None:
        env["BAQUP_HEARTBEAT_TTL"] = repr(ttl)
    if spool is not None:
        env["BAQUP_SPOOL_DIR"] = spool
    settings = load_config(environ=env).settings
    assert settings.heartbeat_interval == interval
    assert settings.heartbeat_ttl() == (ttl if ttl is not None else 3 * interval)
    assert settings.heartbeat_ttl(2.0) == (ttl if ttl is not None else 6.0)
    assert settings.spool_dir == Path(spool or "/st/.spool")


def test_bus_takes_settings_a_config_or_a_mapping(tmp_path: Path) -> None:
    env = {**BASE, "BAQUP_STAGING_DIR": str(tmp_path), "BAQUP_HEARTBEAT_INTERVAL": "4"}
    config = load_config(environ=env)
    logger = Logger("job-7", "agent-7", stream=io.StringIO())
    typed = {**env, "BAQUP_HEARTBEAT_INTERVAL": 4.0}  # a mapping of typed values
    for given_config in (config.settings, config, typed):
        bus = BusClient(given_config, logger)
        try:
            assert bus.settings == config.settings
            assert bus.spool.events_path.parent == tmp_path / SPOOL_SUBDIR / "job-7"
            assert bus.heartbeat_ttl == 12.0
        finally:
            bus.close()
    assert job_settings(config.settings) is config.settings


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"BAQUP_JOB_ID": "../x"}, "BAQUP_JOB_ID"),
        ({"BAQUP_ROLE": "copy"}, "BAQUP_ROLE"),
        ({"BAQUP_HEARTBEAT_INTERVAL": -1}, "BAQUP_HEARTBEAT_INTERVAL"),
        ({"BAQUP_LOG_LEVEL": CANARY}, "BAQUP_LOG_LEVEL"),
    ],
)
def test_an_unvalidated_mapping_that_does_not_fit_is_a_config_error(
    change: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        job_settings({**BASE, **change})
    assert [p.variable for p in info.value.problems] == [variable]
    assert CANARY not in str(info.value)


def test_operator_commands_and_failure_reports_read_the_environment_here() -> None:
    env = bus_environment({"BAQUP_REDIS_URL": "", "BAQUP_STAGING_DIR": "/st"})
    assert env.redis_url is None and env.spool_dir == Path("/st") / SPOOL_SUBDIR
    assert bus_environment({}).spool_dir is None
    assert fallback_identity({"BAQUP_JOB_ID": "j-1", "BAQUP_LOG_FORMAT": "text"}) == (
        "j-1",
        "unknown",
        LogFormat.TEXT,
    )
    assert fallback_identity({"BAQUP_AGENT_ID": "../a", "BAQUP_LOG_FORMAT": "xml"})[1:] == (
        "unknown",
        LogFormat.JSON,
    )


# _config.py loads the config; conformance/ and testing/ drive the environment of the
# agent they run (they build it, as a controller does, rather than read a job's settings);
# _scaffold.py writes a new agent's schema
_LOADER = {Path("src/baqup_agent/_config.py"), Path("src/baqup_agent/_scaffold.py")}
_DRIVERS = (Path("src/baqup_agent/conformance"), Path("src/baqup_agent/testing"))
_LOOKUP = re.compile(r"""(\[|\.get\(|model_fields\[)\s*["']BAQUP_""")


def test_no_base_variable_is_looked_up_outside_config_loading() -> None:
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        rel = path.relative_to(ROOT)
        driver = any(rel.is_relative_to(d) for d in _DRIVERS)
        if rel in _LOADER or driver or "contract" in rel.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _LOOKUP.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
    assert _LOOKUP.search('x = config["BAQUP_GRACE_PERIOD"]')
    assert _LOOKUP.search("env.get('BAQUP_SPOOL_DIR')")


def test_settings_fields_cover_the_base_contract() -> None:
    # one field per base variable (BAQUP_X -> x; the TTL keeps what was set apart)
    names = {f.name for f in dataclasses.fields(JobSettings)}
    expected = {n.removeprefix("BAQUP_").lower() for n in BaseConfig.model_fields}
    assert names - {"heartbeat_ttl_setting"} | {"heartbeat_ttl"} == expected | {"spool_dir"}
    assert isinstance(Config(BASE).settings, JobSettings)
