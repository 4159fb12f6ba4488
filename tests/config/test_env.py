"""Loading from the environment: coercion, defaults, unknown variables, every error at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from baqup_agent._errors import ConfigError, ConfigProblem
from baqup_agent._secret import Secret
from baqup_agent.config import load_config
from baqup_agent.schema import coerce, load_from_env


def problems(schema: Any, env: dict[str, str], **kwargs: Any) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(schema, environ=env, **kwargs)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("true", "TRUE", "1", "yes", "On", " on ")]
    + [(f, False) for f in ("false", "False", "0", "no", "OFF")],
)
def test_booleans(text: str, expected: bool) -> None:
    assert coerce(text, ["boolean"]) is expected


@pytest.mark.parametrize(
    ("text", "types", "expected"),
    [
        ("42", ["integer"], 42),
        ("-7", ["integer"], -7),
        (" +3 ", ["integer"], 3),
        ("2.5", ["number"], 2.5),
        ("10", ["number"], 10),
        ("1e3", ["number"], 1000.0),
        (".5", ["number"], 0.5),
        ('["a", 1]', ["array"], ["a", 1]),
        ('{"k": [1]}', ["object"], {"k": [1]}),
        ("null", ["null"], None),
        ("7", ["integer", "string"], 7),
        ("auto", ["integer", "string"], "auto"),
        (" padded ", ["string"], " padded "),
        ("anything", [], "anything"),
    ],
)
def test_coercion(text: str, types: list[str], expected: Any) -> None:
    value = coerce(text, types)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "types", "message"),
    [
        ("maybe", ["boolean"], "must be a boolean"),
        ("4.5", ["integer"], "must be an integer"),
        ("٣", ["integer"], "must be an integer"),  # only ASCII digits
        ("1_000", ["integer"], "must be an integer"),
        ("9" * 5000, ["integer"], "must be an integer"),  # beyond int()'s digit limit
        ("nan", ["number"], "must be a number"),
        ("1e999", ["number"], "must be a number"),
        ("[1,", ["array"], "must be a JSON array"),
        ("{}", ["array"], "must be a JSON array"),
        ("[" * 5000, ["array"], "must be a JSON array"),
        ("x", ["integer", "boolean"], "must be an integer or a boolean"),
    ],
)
def test_coercion_failures_name_the_expectation(text: str, types: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        coerce(text, types)
    assert text not in str(info.value) or len(text) < 2


def test_typed_values_defaults_and_any_of(agent_schema: Path, env: dict[str, str]) -> None:
    env |= {
        "FS_LEVEL": "7",
        "FS_RATIO": "0.25",
        "FS_VERIFY": "no",
        "FS_EXCLUDE": '["*.tmp", "cache/"]',
        "FS_OPTIONS": '{"follow": true}',
        "FS_LIMIT": "auto",
        "BAQUP_HEARTBEAT_INTERVAL": "2.5",
    }
    config = load_config(agent_schema, environ=env)
    assert config["FS_LEVEL"] == 7 and config["FS_RATIO"] == 0.25
    assert config["FS_VERIFY"] is False and config["FS_EXCLUDE"] == ["*.tmp", "cache/"]
    assert config["FS_OPTIONS"] == {"follow": True} and config["FS_LIMIT"] == "auto"
    assert config["BAQUP_HEARTBEAT_INTERVAL"] == 2.5
    assert config["BAQUP_STAGING_DIR"] == "/var/lib/baqup/staging"  # base default
    assert config["BAQUP_LOG_LEVEL"] == "INFO"
    assert "BAQUP_REDIS_URL" not in config and "FS_HOST" not in config
    env["FS_LIMIT"] = "12"
    assert load_config(agent_schema, environ=env)["FS_LIMIT"] == 12


def test_defaults_are_copies(agent_schema: Path, env: dict[str, str]) -> None:
    first = load_config(agent_schema, environ=env)
    first["FS_EXCLUDE"].append("mutated")
    assert load_config(agent_schema, environ=env)["FS_EXCLUDE"] == []


def test_no_defaults_and_no_coercion(agent_schema: Path, env: dict[str, str]) -> None:
    values = load_from_env(agent_schema, prefix="FS_", environ=env, apply_defaults=False)
    assert "FS_LEVEL" not in values and values["FS_SOURCE"] == "/data"
    with pytest.raises(ConfigError) as info:
        load_from_env(
            agent_schema, prefix="FS_", environ={**env, "FS_LEVEL": "3"}, coerce_types=False
        )
    assert info.value.problems == [
        ConfigProblem("FS_LEVEL", 'must be an integer (got "3")', "type")
    ]


def test_empty_value_counts_as_unset(agent_schema: Path, env: dict[str, str]) -> None:
    config = load_config(agent_schema, environ={**env, "FS_LEVEL": "", "FS_HOST": ""})
    assert config["FS_LEVEL"] == 3 and "FS_HOST" not in config
    (problem,) = problems(agent_schema, {**env, "FS_SOURCE": ""})
    assert problem == ConfigProblem("FS_SOURCE", "is required (it is set but empty)", "required")


def test_every_error_at_once(agent_schema: Path) -> None:
    env = {
        "BAQUP_JOB_ID": "../etc",
        "BAQUP_ROLE": "restore",
        "BAQUP_HEARTBEAT_INTERVAL": "soon",
        "BAQUP_LOG_LEVEL": "LOUD",
        "BAQUP_STAGNG_DIR": "/s",
        "FS_LEVEL": "99",
        "FS_VERIFY": "maybe",
        "FS_EXCLUDE": "*.tmp",
        "FS_HOST": "bad_host",
        "PATH": "/usr/bin",  # not the prefix: never an error
    }
    found = [(p.variable, p.keyword) for p in problems(agent_schema, env)]
    assert found == [
        ("BAQUP_JOB_ID", "pattern"),
        ("BAQUP_AGENT_ID", "required"),
        ("BAQUP_RESTORE_SOURCE", "required"),
        ("BAQUP_HEARTBEAT_INTERVAL", "type"),
        ("BAQUP_LOG_LEVEL", "enum"),
        ("FS_SOURCE", "required"),
        ("FS_EXCLUDE", "type"),
        ("FS_LEVEL", "maximum"),
        ("FS_VERIFY", "type"),
        ("FS_TOKEN", "dependentRequired"),
        ("FS_HOST", "format"),
        ("BAQUP_STAGNG_DIR", "additionalProperties"),
    ]


def test_error_message_text(agent_schema: Path) -> None:
    env = {"BAQUP_JOB_ID": "j", "BAQUP_AGENT_ID": "a", "BAQUP_ROLE": "restore", "FS_SOURCE": "/"}
    env |= {"FS_LEVEL": "abc", "BAQUP_STAGNG_DIR": "/s", "FS_HOST": "h", "FS_TOKEN": "12345678"}
    with pytest.raises(ConfigError) as info:
        load_config(agent_schema, environ=env)
    assert [f"{p.variable}: {p.message}" for p in info.value.problems] == [
        'BAQUP_RESTORE_SOURCE: is required when BAQUP_ROLE is "restore"',
        'FS_LEVEL: must be an integer (got "abc")',
        "BAQUP_STAGNG_DIR: is not a known variable (did you mean BAQUP_STAGING_DIR?)",
    ]
    assert str(info.value).startswith("invalid configuration (3 errors): BAQUP_RESTORE_SOURCE")
    assert info.value.exit_code == 64


def test_agent_conditionals_see_base_variables(agent_schema: Path, env: dict[str, str]) -> None:
    env |= {"BAQUP_ROLE": "restore", "BAQUP_RESTORE_SOURCE": "/staging/job-0"}
    (problem,) = problems(agent_schema, env)
    assert problem == ConfigProblem(
        "FS_HOST", 'is required when BAQUP_ROLE is "restore"', "required"
    )


def test_unknown_file_variant_of_a_plain_variable(agent_schema: Path, env: dict[str, str]) -> None:
    (problem,) = problems(agent_schema, {**env, "BAQUP_JOB_ID_FILE": "/run/secrets/id"})
    assert problem.variable == "BAQUP_JOB_ID_FILE"
    assert "only secret variables take a _FILE variant" in problem.message


def test_prefix_decides_what_is_unknown(agent_schema: Path, env: dict[str, str]) -> None:
    env |= {"FS_SORCE": "/x", "BAQUP_EXTRA": "1"}
    (problem,) = problems(agent_schema, env, prefix="FS_")
    assert problem.variable == "FS_SORCE" and "did you mean FS_SOURCE?" in problem.message
    (problem,) = problems(agent_schema, env)
    assert problem.variable == "BAQUP_EXTRA"


def test_open_schema_reports_no_unknown_variables(tmp_path: Path) -> None:
    schema = tmp_path / "open.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"APP_N": {"type": "integer"}}}))
    assert load_from_env(schema, prefix="APP_", environ={"APP_N": "1", "APP_X": "y"}) == {
        "APP_N": 1
    }


def test_agent_narrows_a_base_variable_and_overrides_a_default(tmp_path: Path) -> None:
    schema = tmp_path / "a.json"
    narrowing = {
        "properties": {
            "BAQUP_ROLE": {"const": "backup"},
            "BAQUP_GRACE_PERIOD": {"default": 5},
        }
    }
    schema.write_text(json.dumps(narrowing))
    env = {"BAQUP_JOB_ID": "j", "BAQUP_AGENT_ID": "a", "BAQUP_ROLE": "backup"}
    assert load_config(schema, environ=env)["BAQUP_GRACE_PERIOD"] == 5
    (problem,) = problems(schema, {**env, "BAQUP_ROLE": "restore", "BAQUP_RESTORE_SOURCE": "/r"})
    assert (problem.variable, problem.keyword) == ("BAQUP_ROLE", "const")


def test_secret_values_come_back_as_secret(agent_schema: Path, env: dict[str, str]) -> None:
    env |= {"FS_HOST": "db", "FS_TOKEN": "token-canary-1", "BAQUP_REDIS_PASSWORD": "pw-canary-2"}
    config = load_config(agent_schema, environ=env)
    assert isinstance(config["FS_TOKEN"], Secret) and config["FS_TOKEN"] == "token-canary-1"
    assert isinstance(config["BAQUP_REDIS_PASSWORD"], Secret)
    assert "canary" not in repr(config) and "canary" not in str(config)


def test_secret_with_a_bad_value_is_named_not_quoted(
    agent_schema: Path, env: dict[str, str]
) -> None:
    env |= {"FS_HOST": "db", "FS_TOKEN": "short", "BAQUP_REDIS_URL": "http://u:canary-pw@h/"}
    found = problems(agent_schema, env)
    assert [(p.variable, p.keyword) for p in found] == [
        ("BAQUP_REDIS_URL", "pattern"),
        ("FS_TOKEN", "minLength"),
    ]
    assert all("canary" not in p.message and "short" not in p.message for p in found)


def test_secret_that_fails_coercion_is_not_quoted(tmp_path: Path) -> None:
    schema = tmp_path / "pin.json"
    schema.write_text(
        json.dumps({"properties": {"APP_PIN": {"type": "integer", "writeOnly": True}}})
    )
    with pytest.raises(ConfigError) as info:
        load_from_env(schema, prefix="APP_", environ={"APP_PIN": "canary-pin"})
    assert info.value.problems == [ConfigProblem("APP_PIN", "must be an integer", "type")]
    assert load_from_env(schema, prefix="APP_", environ={"APP_PIN": "1234"}) == {"APP_PIN": 1234}
