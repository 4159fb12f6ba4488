"""Hypothesis: for any environment, load_config returns a valid Config or raises ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent._errors import ConfigError
from baqup_agent._redaction import REDACTOR
from baqup_agent.config import Config, load_config
from baqup_agent.schema import config_schema

from .conftest import AGENT_SCHEMA, BASE_ENV

MARK = "§canary"  # every generated secret value carries it: it must never come back
SECRETS = ["BAQUP_REDIS_URL", "BAQUP_REDIS_PASSWORD", "FS_TOKEN"]
KNOWN = list(config_schema(AGENT_SCHEMA).variables)

any_char = st.characters(codec=None, exclude_categories=())  # surrogates and NUL included
plain_values = st.one_of(
    st.text(max_size=30),
    st.text(any_char, max_size=30),
    st.sampled_from(
        [
            "",
            "true",
            "off",
            "0",
            "-1",
            "2.5",
            "1e999",
            "nan",
            "[1, 2]",
            '{"a": 1}',
            "null",
            "backup",
            "restore",
            "/data",
            "../x",
            "redis://r:6379/0",
            "TRACE",
            "text",
            "sha512",
            "auto",
            "host.example",
            "job-1",
            "[" * 2000,
            "9" * 5000,
        ]
    ),
    st.text(min_size=1, max_size=8).map(lambda s: s * 20_000),  # huge
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),  # NUL and control bytes
)
secret_values = st.text(any_char, max_size=20).map(lambda s: MARK + s)
names = st.one_of(
    st.sampled_from(KNOWN + [n + "_FILE" for n in KNOWN]),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12).map(
        lambda s: "BAQUP_" + s
    ),
    st.text(max_size=12),
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = dict(BASE_ENV) if draw(st.booleans()) else {}
    env |= draw(st.dictionaries(names, plain_values, max_size=12))
    for name in draw(st.lists(st.sampled_from(SECRETS), max_size=3, unique=True)):
        env[name] = draw(secret_values)
    for name in draw(st.lists(st.sampled_from(list(BASE_ENV)), max_size=2, unique=True)):
        env.pop(name, None)  # missing variables
    return env


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "agent-schema.json"
    path.write_text(json.dumps(AGENT_SCHEMA))
    return path


def check(schema_file: Path, env: dict[str, str]) -> None:
    REDACTOR.clear()  # one example's secrets must not slow down the next
    try:
        config = load_config(schema_file, environ=env)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError lists its problems"
        for problem in exc.problems:
            assert problem.message and isinstance(problem.variable, str)
            assert MARK not in problem.message
        assert MARK not in str(exc)
    else:
        assert isinstance(config, Config)
        assert config_schema(schema_file).validate(config).valid
        assert MARK not in repr(config)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(env=environments())
def test_any_environment_gives_config_or_config_error(
    schema_file: Path, env: dict[str, str]
) -> None:
    check(schema_file, env)


def test_the_base_environment_is_valid(schema_file: Path) -> None:
    """The fuzzer starts from it half the time, so the happy path is exercised too."""
    assert load_config(schema_file, environ=dict(BASE_ENV)).job_id == "job-1"
