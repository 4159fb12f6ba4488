"""Secrets beyond top-level variables, non-UTF-8 text, and secrets leaving ``os.environ``."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baqup_agent._config import load_config, scrub_secrets
from baqup_agent._errors import ConfigError
from baqup_agent._logger import Logger
from baqup_agent._redaction import REDACTOR, Redactor, escape_surrogates, unescape_surrogates
from tests.config.conftest import BASE_ENV

PW = 'n3sted-"pw"\\x'
SECRET: dict[str, Any] = {"type": "string", "writeOnly": True, "minLength": 40}

# Each shape puts a writeOnly string somewhere inside an object or array variable;
# ``value`` is a JSON value of it holding PW where the secret goes.
SHAPES: dict[str, tuple[dict[str, Any], Any]] = {
    "property": ({"type": "object", "properties": {"password": SECRET}}, {"password": PW}),
    "ref": (
        {"type": "object", "properties": {"password": {"$ref": "#/$defs/secret"}}},
        {"password": PW},
    ),
    "items": ({"type": "array", "items": SECRET}, [PW]),
    "prefix-items": ({"type": "array", "prefixItems": [{"type": "string"}, SECRET]}, ["u", PW]),
    "items-of-objects": (
        {"type": "array", "items": {"type": "object", "properties": {"token": SECRET}}},
        [{"token": PW}],
    ),
    "additional": ({"type": "object", "additionalProperties": SECRET}, {"any": PW}),
    "pattern": ({"type": "object", "patternProperties": {"^k": SECRET}}, {"key": PW}),
    "all-of": ({"allOf": [{"type": "object"}, {"properties": {"pw": SECRET}}]}, {"pw": PW}),
    "any-of": ({"anyOf": [{"type": "object", "properties": {"pw": SECRET}}]}, {"pw": PW}),
    "deep": (
        {
            "type": "object",
            "properties": {"a": {"type": "object", "properties": {"b": {"items": SECRET}}}},
        },
        {"a": {"b": [PW]}},
    ),
}


def schema(variable: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "$defs": {"secret": SECRET},
        "properties": {"OPT_X": variable, "OPT_PLAIN": {"type": "integer"}},
    }


@pytest.fixture(autouse=True)
def clean_redactor() -> None:
    REDACTOR.clear()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_nested_write_only_value_is_a_secret(shape: str) -> None:
    variable, value = SHAPES[shape]
    env = {**BASE_ENV, "OPT_X": json.dumps(value), "OPT_PLAIN": "many"}
    with pytest.raises(ConfigError) as exc:  # too short, and OPT_PLAIN is no integer
        load_config(schema(variable), environ=env)
    text = str(exc.value)
    assert "OPT_PLAIN" in text and '(got "many")' in text  # a plain value is quoted
    assert "OPT_X" in text and "got" not in text.split("OPT_PLAIN")[0]
    assert PW not in text and json.dumps(PW)[1:-1] not in text
    assert PW in REDACTOR  # registered: a log line that carries it is redacted


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_unparsable_json_holding_a_secret_is_not_echoed(shape: str) -> None:
    variable, value = SHAPES[shape]
    env = {**BASE_ENV, "OPT_X": json.dumps(value)[:-1]}  # cut: not JSON any more
    with pytest.raises(ConfigError) as exc:
        load_config(schema(variable), environ=env)
    assert "OPT_X" in str(exc.value) and "got" not in str(exc.value)
    assert "n3sted" not in str(exc.value)


def test_scrub_secrets_removes_secrets_and_their_file_variables() -> None:
    variable, _ = SHAPES["property"]
    full = {
        **schema(variable),
        "properties": {**schema(variable)["properties"], "OPT_TOKEN": {"writeOnly": True}},
    }
    environ = {**BASE_ENV, "OPT_X": "{}", "OPT_TOKEN_FILE": "/run/s", "OPT_PLAIN": "1"}
    environ["BAQUP_REDIS_PASSWORD"] = "pw-pw-pw"  # a secret of the base contract
    removed = scrub_secrets(full, environ)
    assert sorted(removed) == ["BAQUP_REDIS_PASSWORD", "OPT_TOKEN_FILE", "OPT_X"]
    assert environ == {**BASE_ENV, "OPT_PLAIN": "1"}


# -- text that is not UTF-8 ---------------------------------------------------------------

non_utf8 = st.binary(max_size=30).map(os.fsdecode) | st.text(max_size=30)


@settings(max_examples=300)
@given(non_utf8)
def test_escaping_is_reversible_and_encodable(text: str) -> None:
    escaped = escape_surrogates(text)
    escaped.encode("utf-8")  # never raises
    if escaped != text:
        assert unescape_surrogates(escaped) == text


@settings(max_examples=100)
@given(st.binary(max_size=20))
def test_a_log_line_carries_a_non_utf8_path(raw: bytes) -> None:
    name = b"/data/" + raw + b"\xff"  # never UTF-8
    path = os.fsdecode(name)
    for fmt in ("json", "text"):
        stream = io.StringIO()
        log = Logger("j", "a", format=fmt, stream=stream, redactor=Redactor())
        log.error(f"cannot read {path}", path=path, exc=OSError(5, "I/O error", path))
        out = stream.getvalue()
        assert "cannot read" in out
        if fmt == "json":
            record = json.loads(out)
            assert os.fsencode(unescape_surrogates(record["path"])) == name
            assert os.fsencode(unescape_surrogates(record["message"])) == b"cannot read " + name


def test_a_long_secret_in_a_plain_variable_is_not_quoted_in_part() -> None:
    long_secret = "Lk9" + "q" * 300
    REDACTOR.register(long_secret)
    env = {**BASE_ENV, "OPT_PLAIN": "ab" + long_secret}  # pasted into the wrong variable
    with pytest.raises(ConfigError) as exc:
        load_config(schema({"type": "string"}), environ=env)
    assert "OPT_PLAIN" in str(exc.value) and "Lk9" not in str(exc.value)
