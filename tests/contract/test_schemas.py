"""Every schema is a well-formed draft 2020-12 document whose examples are valid, both
for jsonschema (formats asserted) and for the generated pydantic type."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from tests.contract._schemas import (
    FORMAT_CHECKER,
    SCHEMAS,
    TARGETS,
    examples_of,
    ref,
    target,
    validator,
)

FILES = sorted(SCHEMAS)
EXAMPLES = [(f, name, ex) for f in FILES for name, ex in examples_of(SCHEMAS[f])]


def test_every_file_and_def_has_a_target() -> None:
    expected = {(f, None) for f in FILES}
    expected |= {(f, d) for f in FILES for d in SCHEMAS[f].get("$defs", {})}
    assert {(t.file, t.name) for t in TARGETS} == expected


@pytest.mark.parametrize("file", FILES)
def test_schema_is_valid_draft_2020_12(file: str) -> None:
    schema = SCHEMAS[file]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://baqup.io/schema/agent/v1/{file}"
    assert schema["title"] and schema["description"]
    assert schema["examples"], "every schema carries at least one example"


@pytest.mark.parametrize("file", FILES)
def test_objects_state_additional_properties(file: str) -> None:
    """An absent additionalProperties makes pydantic ignore extras that JSON Schema
    allows: every object says what it means."""

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert "additionalProperties" in node, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMAS[file])


@pytest.mark.parametrize(
    ("file", "name", "example"),
    EXAMPLES,
    ids=[f"{f}#{n or ''}-{i}" for i, (f, n, _) in enumerate(EXAMPLES)],
)
def test_example_is_valid(file: str, name: str | None, example: object) -> None:
    validator(ref(file, name)).validate(example)
    t = target(file, name)
    value = t.validate_json(json.dumps(example))
    # and the model writes it back as a valid instance
    validator(ref(file, name)).validate(
        t.dump(value, exclude_unset=True) if t.is_model else t.dump(value)
    )


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date-time", "2026-11-27T10:00:00Z", "2026-11-27T25:00:00Z"),
        ("date-time", "2026-11-27T10:00:00+01:00", "2026-11-27 10:00:00"),
        ("uri", "redis://redis:6379/0", "redis://bad host/0"),
        ("uuid", "0b6a3f0e-8d7e-4a53-9a4c-2a1e5f0c9d11", "0b6a3f0e-8d7e-4a53-9a4c"),
    ],
)
def test_format_checking_is_really_active(fmt: str, good: str, bad: str) -> None:
    """jsonschema skips date-time and uri silently without format-nongpl: prove it runs."""
    assert FORMAT_CHECKER.conforms(good, fmt)
    assert not FORMAT_CHECKER.conforms(bad, fmt)
    assert not validator({"type": "string", "format": fmt}).is_valid(bad)


def test_format_checking_applies_through_refs() -> None:
    message = dict(SCHEMAS["bus-message.json"]["examples"][0])
    for key, bad in [("timestamp", "yesterday"), ("id", "not-a-uuid")]:
        broken = {**message, key: bad}
        assert not validator(ref("bus-message.json")).is_valid(broken)
        with pytest.raises(ValidationError):
            target("bus-message.json", None).validate_json(json.dumps(broken))
