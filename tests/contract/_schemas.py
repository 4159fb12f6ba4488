"""The schemas, their validators and the generated type each one maps to.

Shared by the contract tests: jsonschema with a real format checker over a registry of
every file in schema/, schemas with cross-file ``$ref``s inlined (hypothesis-jsonschema
does not follow them), and one :class:`Target` per schema file and per ``$defs`` entry
that the generated package turns into a type.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from jsonschema import Draft202012Validator
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, create_model
from referencing import Registry, Resource

from baqup_agent import contract
from baqup_agent.contract.common import Common
from baqup_agent.contract.wire import STREAM_FIELD
from baqup_schema import _types
from baqup_schema.contract_schemas import format_checker

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schema"
SCHEMAS: dict[str, dict[str, Any]] = {
    p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMA_DIR.glob("*.json"))
}
REGISTRY: Registry = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values()
)
# the runtime's own checker (jsonschema's formats plus path and hostname), so that the
# reference validator judges as load_config does
FORMAT_CHECKER = format_checker()

# keywords that annotate and do not validate; hypothesis-jsonschema need not see them
_ANNOTATIONS = {"$id", "$schema", "$defs", "title", "description", "examples", "default"}
_ANNOTATIONS |= {"discriminator", "customTypePath", "writeOnly"}


_VALIDATORS: dict[str, Draft202012Validator] = {}


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A draft 2020-12 validator over the registry, asserting formats (one per schema)."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = Draft202012Validator(
            schema, registry=REGISTRY, format_checker=FORMAT_CHECKER
        )
    return _VALIDATORS[key]


def ref(file: str, name: str | None = None) -> dict[str, Any]:
    """A schema that is a reference to a file's root or to one of its ``$defs``."""
    uri = SCHEMAS[file]["$id"]
    return {"$ref": uri if name is None else f"{uri}#/$defs/{name}"}


def inline(schema: Any, resolver: Any = None) -> Any:
    """``schema`` with every ``$ref`` replaced by what it points to, annotations dropped."""
    resolver = resolver or REGISTRY.resolver()
    if isinstance(schema, list):
        return [inline(s, resolver) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        out.update(inline(resolved.contents, resolved.resolver))
    if "$id" in schema:
        resolver = resolver.in_subresource(Resource.from_contents(schema))
    for key, value in schema.items():
        if key == "$ref" or key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: inline(s, resolver) for name, s in value.items()}
        else:
            out[key] = inline(value, resolver)
    return out


_STRICT = ConfigDict(strict=True, regex_engine="python-re")


@dataclass(frozen=True, eq=False)
class Target:
    """A schema (file root or ``$defs`` entry) and the generated type that encodes it."""

    file: str
    name: str | None
    type: Any
    schema: dict[str, Any] = field(init=False)
    inlined: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", ref(self.file, self.name))
        object.__setattr__(self, "inlined", inline(self.schema))

    @property
    def id(self) -> str:
        return self.file if self.name is None else f"{self.file}#{self.name}"

    @property
    def is_model(self) -> bool:
        return isinstance(self.type, type) and issubclass(self.type, BaseModel)

    @property
    def enum(self) -> list[Any] | None:
        """The values of an enum schema (its whole instance space), else None."""
        return self.inlined.get("enum")

    def validate_json(self, text: str) -> Any:
        """Validate JSON text with the generated type (strict, as the runtime does)."""
        if self.is_model:
            return self.type.model_validate_json(text)
        return _adapter(self.type).validate_json(text)

    def dump(self, value: Any, **options: Any) -> Any:
        """The JSON form of a validated value (``model_dump(mode="json")``)."""
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", **options)
        return _adapter(self.type).dump_python(value, mode="json")


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    # TypeAdapter construction builds a validator: once per type
    key = id(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp, config=_STRICT)
    return _ADAPTERS[key]


def _field(model: type[BaseModel], name: str) -> Any:
    """The generated type of one model field, constraints included."""
    info = model.model_fields[name]
    return Annotated[info.annotation, info]


# wire.json generates constants, not a model; its one validating part (a stream entry)
# is checked against a model made of the generated field name
# Any: create_model's field definitions share its **kwargs with __config__ and its other
# options, so a dict of narrower values matches none of its overloads
_STREAM_FIELDS: dict[str, Any] = {STREAM_FIELD: str}
StreamEntry = create_model(
    "StreamEntry", __config__=ConfigDict(extra="forbid", strict=True), **_STREAM_FIELDS
)

C = contract
TARGETS: list[Target] = [
    Target("agent-state.json", None, C.AgentState),
    Target("artifact.json", None, C.Artifact),
    Target("bus-message.json", None, C.BusMessage),
    Target("bus-message.json", "StateChange", C.StateChange),
    Target("bus-message.json", "Heartbeat", C.Heartbeat),
    Target("bus-message.json", "HeartbeatIntent", C.HeartbeatIntent),
    Target("bus-message.json", "ProgressUpdate", C.ProgressUpdate),
    Target("bus-message.json", "ResultStatus", C.ResultStatus),
    Target("bus-message.json", "Result", C.Result),
    Target("bus-message.json", "Cancel", C.Cancel),
    Target("common.json", None, Common),
    Target("common.json", "JobId", _field(C.BaseConfig, "BAQUP_JOB_ID")),
    Target("common.json", "AgentId", _field(C.BaseConfig, "BAQUP_AGENT_ID")),
    Target("common.json", "MessageId", _types.MessageId),
    Target("common.json", "Timestamp", _types.Timestamp),
    Target("common.json", "UtcTimestamp", _types.UtcTimestamp),
    Target("common.json", "Role", C.Role),
    Target("common.json", "ChecksumAlgorithm", C.ChecksumAlgorithm),
    Target("common.json", "Compression", C.Compression),
    Target("common.json", "ByteCount", _field(C.Progress, "bytes_done")),
    Target("common.json", "Progress", C.Progress),
    Target("common.json", "LogFormat", C.LogFormat),
    Target("conformance-report.json", None, C.ConformanceReport),
    Target("conformance-report.json", "ConformanceVerdict", C.ConformanceVerdict),
    Target("conformance-report.json", "ConformanceRuleId", C.ConformanceRuleId),
    Target("conformance-report.json", "ConformanceRole", C.ConformanceRole),
    Target("conformance-report.json", "ConformanceCheckStatus", C.ConformanceCheckStatus),
    Target("conformance-report.json", "ConformanceFindingLevel", C.ConformanceFindingLevel),
    Target("conformance-report.json", "ConformanceCounts", C.ConformanceCounts),
    Target("conformance-report.json", "ConformanceFinding", C.ConformanceFinding),
    Target("conformance-report.json", "ConformanceUntested", C.ConformanceUntested),
    Target("conformance-report.json", "ConformanceCheck", C.ConformanceCheck),
    Target("conformance-report.json", "ConformanceScenario", C.ConformanceScenario),
    Target("config.json", None, C.BaseConfig),
    Target("exit-code.json", None, C.ExitCode),
    Target("log-level.json", None, C.LogLevel),
    Target("log-level.json", "LogLevelName", C.LogLevelName),
    Target("log-record.json", None, C.LogRecord),
    Target("log-record.json", "ExceptionInfo", C.ExceptionInfo),
    Target("manifest.json", None, C.Manifest),
    Target("wire.json", None, StreamEntry),
]
"""Every schema file's root and every ``$defs`` entry, with its generated type."""


# -- what the generated models cannot express (config is validated by jsonschema) --

CONFIG_ONLY_JSONSCHEMA = {
    "if/then": "BAQUP_RESTORE_SOURCE is required when BAQUP_ROLE is restore",
    "format uri": "BAQUP_REDIS_URL must be a URI (the model checks only ^rediss?://)",
}
"""Rules of config.json that BaseConfig does not check: config.py validates the merged
schema with jsonschema at load time; BaseConfig is for typed access."""


# -- normalisation for round trips ------------------------------------------------

_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\Z")
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")
_DATETIME_ADAPTER: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def normalise(value: Any) -> Any:
    """Compare JSON values as the contract means them: UUIDs case-free, date-times
    as instants with their offset (pydantic writes ``Z`` for ``+00:00``)."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        if _UUID.match(value):
            return UUID(value)
        if _DATETIME.match(value):
            parsed = _DATETIME_ADAPTER.validate_python(value)
            return (parsed, parsed.utcoffset())
    return value


# -- invalid instances: one edit that the schema forbids --------------------------

DROP = object()
"""An edit value: remove the key at the path."""

_WRONG_TYPE: dict[str, list[Any]] = {
    "string": [12345, None, ["x"]],
    "integer": ["12", True, 1.5, None],
    "number": ["1.5", True, None],
    "boolean": [1, "true", None],
    "object": [[], "x", None],
    "array": [{}, "x", None],
}
# text forms that pydantic's own parsers accept and the formats do not
_BAD_FORMAT: dict[str, list[str]] = {
    "date-time": ["not-a-date", "2026-11-27 10:00:00Z", "1700000000", "2026-11-27T10:00:00"],
    "uuid": [
        "not-a-uuid",
        "0b6a3f0e8d7e4a539a4c2a1e5f0c9d11",
        "{0b6a3f0e-8d7e-4a53-9a4c-2a1e5f0c9d11}",
    ],
    # what the runtime refuses and a plain str would take
    "path": ["", "a\x00b", "/" + "a" * 4096],
}

Edit = tuple[str, tuple[Any, ...], Any]
"""(kind, path, new value or DROP)."""


def _outside(values: list[Any]) -> Any:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return max(values) + 1
    return "zz-not-a-member"


def edits(schema: dict[str, Any], value: Any, path: tuple[Any, ...] = ()) -> Iterator[Edit]:
    """Every single edit of ``value`` (valid against inlined ``schema``) that makes it
    invalid: required field dropped, wrong type, unknown field, enum or const value
    outside the set, numeric or length bound crossed, pattern or format broken."""
    for key in ("oneOf", "anyOf"):
        if key in schema:
            for branch in schema[key]:
                if validator(branch).is_valid(value):
                    yield from edits(branch, value, path)
    if "const" in schema:
        const = schema["const"]
        yield ("enum", path, f"{const}-x" if isinstance(const, str) else "x")
    if "enum" in schema:
        yield ("enum", path, _outside(schema["enum"]))
    kind = schema.get("type")
    if kind is None:
        return
    yield from (("type", path, wrong) for wrong in _WRONG_TYPE[kind])
    if kind in ("integer", "number"):
        if "minimum" in schema:
            yield ("bound", path, schema["minimum"] - 1)
        if "exclusiveMinimum" in schema:
            yield ("bound", path, schema["exclusiveMinimum"])
        if "maximum" in schema:
            yield ("bound", path, schema["maximum"] + 1)
    elif kind == "string":
        if "maxLength" in schema:
            yield ("bound", path, "a" * (schema["maxLength"] + 1))
        if schema.get("minLength", 0) > 0:
            yield ("bound", path, "")
        if "pattern" in schema:
            yield ("pattern", path, "!")
        for bad in _BAD_FORMAT.get(schema.get("format", ""), []):
            yield ("format", path, bad)
    elif kind == "object" and isinstance(value, dict):
        for name in schema.get("required", []):
            yield ("required", (*path, name), DROP)
        if schema.get("additionalProperties") is False:
            yield ("unknown field", (*path, "x_unknown_field"), "x")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                yield from edits(properties[name], item, (*path, name))
    elif kind == "array" and isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from edits(schema["items"], item, (*path, i))


def apply(value: Any, edit: Edit) -> Any:
    """A deep copy of ``value`` with ``edit`` applied."""
    _, path, new = edit
    if not path:
        return new
    out = copy.deepcopy(value)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if new is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return out


def examples_of(schema: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
    """(``$defs`` name or None, example) for every example of a schema file."""
    for example in schema.get("examples", []):
        yield None, example
    for name, sub in schema.get("$defs", {}).items():
        for example in sub.get("examples", []):
            yield name, example


def target(file: str, name: str | None) -> Target:
    """The target of a schema file root or ``$defs`` entry."""
    return next(t for t in TARGETS if (t.file, t.name) == (file, name))
