"""``baqup_agent.schema.validate``: formats, conditionals, $refs, safe messages, caching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from baqup_agent._errors import SchemaError
from baqup_agent._secret import Secret
from baqup_agent.schema import (
    ValidationError,
    compile_schema,
    config_schema,
    is_hostname,
    is_path,
    validate,
)

CONFIG_ID = "https://baqup.io/schema/agent/v1/config.json"
MANIFEST_ID = "https://baqup.io/schema/agent/v1/manifest.json"
VALID_BASE = {"BAQUP_JOB_ID": "job-1", "BAQUP_AGENT_ID": "a-1", "BAQUP_ROLE": "backup"}


def paths(result: Any) -> dict[str, str]:
    return {e.path: e.keyword for e in result.errors}


def test_valid_config_against_contract_id() -> None:
    result = validate(CONFIG_ID, VALID_BASE)
    assert result.valid and result.errors == [] and bool(result)


def test_every_error_at_once_with_variable_names() -> None:
    config = {
        "BAQUP_JOB_ID": "-bad",
        "BAQUP_ROLE": "archive",
        "BAQUP_HEARTBEAT_INTERVAL": 0,
        "BAQUP_LOG_FORMAT": 3,
        "BAQUP_JOBID": "x",
    }
    result = validate(CONFIG_ID, config)
    assert not result.valid
    assert all(isinstance(e, ValidationError) for e in result.errors)
    assert [(e.path, e.keyword) for e in result.errors] == [
        ("BAQUP_JOB_ID", "pattern"),
        ("BAQUP_AGENT_ID", "required"),
        ("BAQUP_ROLE", "enum"),
        ("BAQUP_HEARTBEAT_INTERVAL", "exclusiveMinimum"),
        ("BAQUP_LOG_FORMAT", "type"),
        ("BAQUP_LOG_FORMAT", "enum"),
        ("BAQUP_JOBID", "additionalProperties"),
    ]
    typo = result.errors[-1]
    assert typo.message == "is not allowed (did you mean BAQUP_JOB_ID?)"
    assert str(typo) == "BAQUP_JOBID: is not allowed (did you mean BAQUP_JOB_ID?)"


def test_messages_are_short_and_never_dump_the_schema() -> None:
    result = validate(CONFIG_ID, {"BAQUP_LOG_LEVEL": "LOUD", "BAQUP_ROLE": 7})
    for error in result.errors:
        assert len(error.message) < 160, error.message
        assert "$schema" not in error.message and "properties" not in error.message
    level = next(e for e in result.errors if e.path == "BAQUP_LOG_LEVEL")
    assert level.message.startswith('must be one of "TRACE", "DEBUG"')
    assert '(got "LOUD")' in level.message


def test_secret_value_is_never_echoed() -> None:
    secret = "http://user:canary-hunter2@example.org/"
    result = validate(CONFIG_ID, {**VALID_BASE, "BAQUP_REDIS_URL": secret})
    (error,) = result.errors
    assert error.path == "BAQUP_REDIS_URL" and error.keyword == "pattern"
    assert "canary" not in error.message and "example.org" not in error.message


def test_nested_write_only_value_is_not_echoed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "DB": {
                "type": "object",
                "properties": {"password": {"type": "string", "writeOnly": True, "minLength": 50}},
            }
        },
    }
    result = validate(schema, {"DB": {"password": "canary-nested-1"}})
    (error,) = result.errors
    assert error.path == "DB.password" and "canary" not in error.message


def test_secret_objects_are_validated_by_content() -> None:
    result = validate(CONFIG_ID, {**VALID_BASE, "BAQUP_REDIS_URL": Secret("ftp://canary-x1")})
    assert [e.path for e in result.errors] == ["BAQUP_REDIS_URL"]
    assert validate(CONFIG_ID, {**VALID_BASE, "BAQUP_REDIS_URL": Secret("redis://r:6379/0")})


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("uuid", "0b7f9e4e-64c5-4f5f-9a4c-8f2f3a7f2b11", "not-a-uuid"),
        ("date-time", "2026-11-27T10:00:00Z", "2026-13-27 10:00"),
        ("uri", "redis://h:6379/0", "not a uri"),
        ("path", "relative/dir", "bad\x00path"),
        ("hostname", "db-1.example.org", "-bad-.example"),
        ("email", "a@example.org", "nobody"),
    ],
)
def test_formats_are_checked(fmt: str, good: str, bad: str) -> None:
    schema = {"type": "object", "properties": {"V": {"type": "string", "format": fmt}}}
    assert validate(schema, {"V": good}).valid
    (error,) = validate(schema, {"V": bad}).errors
    assert (error.path, error.keyword) == ("V", "format")
    assert error.message.startswith(f"must be a valid {fmt}")


def test_custom_format_functions() -> None:
    assert is_path("/abs") and is_path("rel/x") and is_path("./x")
    assert not is_path("") and not is_path("a\x00b") and not is_path("x" * 4097)
    assert is_hostname("localhost") and is_hostname("a.b.c.") and is_hostname("10.0.0.1")
    assert not is_hostname("a_b") and not is_hostname("a..b") and not is_hostname("x" * 64)
    assert not is_hostname("") and not is_hostname("é.org")


def test_if_then_else_names_the_condition() -> None:
    result = validate(CONFIG_ID, {**VALID_BASE, "BAQUP_ROLE": "restore"})
    (error,) = result.errors
    assert error.path == "BAQUP_RESTORE_SOURCE"
    assert error.message == 'is required when BAQUP_ROLE is "restore"'
    schema = {
        "type": "object",
        "if": {"properties": {"MODE": {"enum": ["a", "b"]}}},
        "then": {"required": ["A"]},
        "else": {"required": ["B"]},
    }
    assert validate(schema, {"MODE": "a"}).errors[0].message.startswith("is required when MODE")
    (error,) = validate(schema, {"MODE": "z"}).errors
    assert (error.path, error.message) == ("B", 'is required unless MODE is one of "a", "b"')


def test_condition_on_a_secret_does_not_reveal_it() -> None:
    schema = {
        "type": "object",
        "properties": {"PW": {"type": "string", "writeOnly": True}},
        "if": {"properties": {"PW": {"const": "canary-admin"}}},
        "then": {"required": ["MFA"]},
    }
    (error,) = validate(schema, {"PW": "canary-admin"}).errors
    assert error.path == "MFA" and "canary" not in error.message


def test_dependent_required_and_one_of_required() -> None:
    schema = {
        "type": "object",
        "dependentRequired": {"USER": ["PASSWORD"]},
        "oneOf": [{"required": ["KEY"]}, {"required": ["KEY_FILE"]}],
    }
    errors = validate(schema, {"USER": "u"}).errors
    assert [(e.path, e.message) for e in errors] == [
        ("KEY or KEY_FILE", "one of these must be set"),
        ("PASSWORD", "is required when USER is set"),
    ]
    (error,) = validate(schema, {"KEY": "k", "KEY_FILE": "f"}).errors
    assert (error.path, error.message) == ("KEY or KEY_FILE", "only one of these may be set")


def test_json_paths_for_nested_errors() -> None:
    artifact = {"filename": "a.tar", "size_bytes": -1, "checksum_algorithm": "sha256"}
    manifest = {"version": "1", "artifacts": [artifact]}
    result = validate(MANIFEST_ID, manifest)
    assert "artifacts[0].size_bytes" in paths(result)
    assert "artifacts[0].checksum_value" in paths(result)


def test_relative_refs_resolve_against_the_contract(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"J": {"$ref": "common.json#/$defs/JobId"}}}
    file = tmp_path / "s.json"
    file.write_text(json.dumps(schema))
    for source in (schema, file, str(file)):
        assert validate(source, {"J": "job-1"}).valid
        assert paths(validate(source, {"J": "../escape"})) == {"J": "pattern"}


def test_unresolvable_ref_and_invalid_schema_raise_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        compile_schema({"properties": {"X": {"$ref": "nowhere.json"}}})
    assert info.value.problems[0].variable == "$ref"
    with pytest.raises(SchemaError):
        compile_schema({"type": "strin"})
    with pytest.raises(SchemaError, match="cannot read"):
        compile_schema(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        compile_schema(bad)
    with pytest.raises(SchemaError, match="unknown schema id"):
        compile_schema("https://baqup.io/schema/agent/v1/nope.json")


def test_compiled_schemas_are_cached_and_files_recompile_on_change(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"N": {"type": "integer"}}}
    assert compile_schema(schema) is compile_schema(json.loads(json.dumps(schema)))
    file = tmp_path / "s.json"
    file.write_text(json.dumps(schema))
    first = compile_schema(file)
    assert compile_schema(file) is first
    file.write_text(json.dumps({**schema, "required": ["N", "M"]}))
    assert compile_schema(file) is not first
    assert paths(validate(file, {"N": 1})) == {"M": "required"}


def test_merged_schema_is_closed_and_composes(agent_schema: Path) -> None:
    merged = config_schema(agent_schema)
    assert merged.closed
    names = list(merged.variables)
    assert names[0] == "BAQUP_JOB_ID" and names[-1] == "FS_LIMIT"
    assert merged.variables["FS_TOKEN"].secret and merged.variables["BAQUP_REDIS_URL"].secret
    assert merged.variables["FS_PEER"].types == ("string",)  # through a cross-file $ref
    assert merged.variables["BAQUP_LOG_LEVEL"].default == "INFO"
    result = merged.validate({"BAQUP_JOB_ID": "j", "BAQUP_AGENT_ID": "a", "BAQUP_ROLE": "restore"})
    assert paths(result) == {
        "BAQUP_RESTORE_SOURCE": "required",
        "FS_SOURCE": "required",
        "FS_HOST": "required",
    }


def test_agent_schema_cannot_take_a_contract_id() -> None:
    with pytest.raises(SchemaError, match="contract schema"):
        config_schema({"$id": CONFIG_ID, "properties": {}})


def test_import_baqup_agent_does_not_import_jsonschema() -> None:
    code = (
        "import sys, baqup_agent, baqup_agent.config, baqup_agent.schema, baqup_agent._logger;"
        "print(sorted(m for m in ('jsonschema', 'referencing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
