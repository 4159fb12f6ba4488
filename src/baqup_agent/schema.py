"""The "baqup-schema" role: validate configs against JSON Schema, load them from the environment.

- ``validate(schema, config)`` checks a mapping against a Draft 2020-12 schema, with
  format checking (the standard formats plus ``path`` and ``hostname``), and returns
  every error, each naming its variable (or JSON path) in a short message that never
  echoes a secret (``writeOnly``) value and never dumps the schema.
- ``load_from_env(schema_path, ...)`` reads each declared property from the
  environment by its exact name, coerces the strings to the schema's types, applies
  defaults, reads ``NAME_FILE`` for secrets, reports unknown prefixed variables and
  raises one ``ConfigError`` listing every problem.
- ``config_schema(agent_schema)`` merges an agent's ``agent-schema.json`` with the
  base contract (``schema/config.json``); ``load_config`` and the ``validate-config``
  command use it.

``$ref``s resolve through a registry of the packaged contract schemas, never the
network; a schema without ``$id`` resolves relative references against the
contract's base URI, so ``common.json#/$defs/JobId`` works from an agent schema.
Compiled schemas are cached, so a controller validating many configs pays the
compilation once. jsonschema is imported on first use only.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from baqup_agent.errors import ConfigError, ConfigProblem, SchemaError
from baqup_agent.redaction import REDACTOR
from baqup_agent.secret import Secret

if TYPE_CHECKING:
    import argparse

    from jsonschema import FormatChecker
    from jsonschema.exceptions import ValidationError as JsonSchemaError
    from referencing import Registry
    from referencing._core import Resolver

__all__ = [
    "CompiledSchema",
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
    "validate_config_command",
]

SchemaSource = Mapping[str, Any] | str | Path

_MISSING: Final[Any] = object()
_ECHO_MAX = 40  # characters of a bad (non-secret) value quoted back in a message
_SECRET_FILE_MAX = 1 << 20
_FILE_SUFFIX = "_FILE"


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationError:
    """One problem: where (variable name or JSON path), what, and the failing keyword."""

    path: str
    message: str
    keyword: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of ``validate``: ``valid`` and every error (empty when valid)."""

    valid: bool
    errors: list[ValidationError] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.valid


# -- formats ---------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_path(value: object) -> bool:
    """Format ``path``: an absolute or relative POSIX path, not empty, no NUL, <= 4096 chars."""
    if not isinstance(value, str):
        return True  # formats constrain strings only
    return 0 < len(value) <= 4096 and "\x00" not in value


def is_hostname(value: object) -> bool:
    """Format ``hostname``: RFC 1123 labels of letters, digits and inner dashes, <= 253 chars."""
    if not isinstance(value, str):
        return True
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


@functools.cache
def _format_checker() -> FormatChecker:
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("path")(is_path)
    checker.checks("hostname")(is_hostname)
    return checker


# -- the contract's schemas and the registry -------------------------------------------


@functools.cache
def _contract_schemas() -> dict[str, dict[str, Any]]:
    """The packaged contract schemas by file name (shared: never mutate them)."""
    folder = resources.files("baqup_agent.contract").joinpath("schemas")
    schemas: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            schemas[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    return schemas


def _base_config() -> dict[str, Any]:
    return _contract_schemas()["config.json"]


def _contract_base_uri() -> str:
    """The URI the contract's ``$id``s share, e.g. ``https://baqup.io/schema/agent/v1/``."""
    base_id: str = _base_config()["$id"]
    return base_id.rsplit("/", 1)[0] + "/"


def _resource(schema: Mapping[str, Any]) -> Any:
    from referencing import Resource
    from referencing.jsonschema import DRAFT202012

    return Resource.from_contents(schema, default_specification=DRAFT202012)


@functools.cache
def _contract_registry() -> Registry:
    from referencing import Registry

    resources_ = [(s["$id"], _resource(s)) for s in _contract_schemas().values()]
    return Registry().with_resources(resources_).crawl()


# -- compiling a schema ----------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "contentSchema",
)
_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True)
class Variable:
    """A top-level property of a config schema: an environment variable.

    ``types`` are the JSON types an environment string is coerced to, in the order
    tried; ``default`` is ``None`` with ``has_default`` False when there is none.
    """

    name: str
    types: tuple[str, ...] = ()
    default: Any = None
    has_default: bool = False
    secret: bool = False


@dataclass
class _Facets:
    types: list[str] = field(default_factory=list)
    default: Any = _MISSING
    secret: bool = False


def _resolve(ref: str, resolver: Resolver) -> tuple[Any, Resolver]:
    from referencing.exceptions import Unresolvable

    try:
        resolved = resolver.lookup(ref)
    except Unresolvable:
        raise SchemaError(
            [ConfigProblem("$ref", f"{ref[:100]!r} cannot be resolved", "$ref")]
        ) from None
    return resolved.contents, resolved.resolver


def _facets(schema: Any, resolver: Resolver, depth: int = 0) -> _Facets:
    """Types, default and secrecy of a property, following $ref, allOf, anyOf, oneOf."""
    facets = _Facets()
    if not isinstance(schema, dict) or depth > 32:
        return facets
    facets.secret = schema.get("writeOnly") is True
    if "default" in schema:
        facets.default = schema["default"]
    declared = schema.get("type")
    if isinstance(declared, str):
        facets.types = [declared]
    elif isinstance(declared, list):
        facets.types = [t for t in declared if isinstance(t, str)]
    parts: list[tuple[Any, Resolver]] = []
    if isinstance(schema.get("$ref"), str):
        parts.append(_resolve(schema["$ref"], resolver))
    parts += [(s, resolver) for s in schema.get("allOf", ())]
    for sub, sub_resolver in parts:  # the outer schema's own keywords win
        inner = _facets(sub, sub_resolver, depth + 1)
        facets.secret |= inner.secret
        if facets.default is _MISSING:
            facets.default = inner.default
        facets.types = facets.types or inner.types
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            inner = _facets(sub, resolver, depth + 1)
            facets.secret |= inner.secret
            if not declared:
                facets.types += [t for t in inner.types if t not in facets.types]
    if not facets.types:
        values = schema.get("enum", [schema["const"]] if "const" in schema else [])
        for value in values:
            name = _JSON_TYPES.get(type(value))
            if name and name not in facets.types:
                facets.types.append(name)
    return facets


def _collect_properties(
    schema: Any, resolver: Resolver, out: dict[str, list[tuple[Any, Resolver]]], depth: int = 0
) -> None:
    """Top-level properties, including those of allOf branches and $ref targets."""
    if not isinstance(schema, dict) or depth > 32:
        return
    for name, sub in schema.get("properties", {}).items():
        out.setdefault(name, []).append((sub, resolver))
    for sub in schema.get("allOf", ()):
        _collect_properties(sub, resolver, out, depth + 1)
    if isinstance(schema.get("$ref"), str):
        sub, sub_resolver = _resolve(schema["$ref"], resolver)
        _collect_properties(sub, sub_resolver, out, depth + 1)


def _variable(name: str, parts: list[tuple[Any, Resolver]]) -> Variable:
    types: list[str] = []
    default: Any = _MISSING
    secret = False
    for sub, resolver in parts:  # base contract first, then the agent: the agent's default wins
        facets = _facets(sub, resolver)
        types = types or facets.types
        secret |= facets.secret
        if facets.default is not _MISSING:
            default = facets.default
    # any environment value is a string: a string alternative tried first would take them all
    ordered = [t for t in types if t != "string"] + [t for t in types if t == "string"]
    return Variable(
        name,
        tuple(ordered),
        None if default is _MISSING else default,
        default is not _MISSING,
        secret,
    )


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= _ECHO_MAX else text[: _ECHO_MAX - 3] + "..."


def _choices(values: Any) -> str:
    """The allowed values of an enum, the first ten of them."""
    items = list(values) if isinstance(values, list) else [values]
    shown = ", ".join(_short(v) for v in items[:10])
    return shown + (", ..." if len(items) > 10 else "")


class CompiledSchema:
    """A checked schema ready to validate many instances (build it with ``compile_schema``).

    Holds the jsonschema validator, the top-level ``variables`` in declaration
    order, whether the schema is ``closed`` (``additionalProperties: false``), and
    what it knows to phrase errors: the conditions of ``then``/``else`` branches and
    the names of ``writeOnly`` properties, whose values are never quoted.
    """

    def __init__(self, root: dict[str, Any], registry: Registry, source: str) -> None:
        from jsonschema import Draft202012Validator

        self.source = source
        self.root = root
        _check_schema(root)
        self.registry = registry.with_resource(root["$id"], _resource(root)).crawl()
        resolver = self.registry.resolver(base_uri=root["$id"])
        self._validator = Draft202012Validator(
            root, registry=self.registry, format_checker=_format_checker()
        )
        found: dict[str, list[tuple[Any, Resolver]]] = {}
        _collect_properties(root, resolver, found)
        self.variables: dict[str, Variable] = {n: _variable(n, p) for n, p in found.items()}
        self.closed = (
            root.get("additionalProperties") is False or root.get("unevaluatedProperties") is False
        )
        self._secret_names = {n for n, v in self.variables.items() if v.secret}
        self._conditions: dict[int, str] = {}
        ifs: list[dict[str, Any]] = []
        self._walk(root, resolver, set(), ifs)
        for schema in ifs:
            when = self._describe_condition(schema["if"])
            if isinstance(schema.get("then"), dict):
                self._conditions[id(schema["then"])] = f"when {when}"
            if isinstance(schema.get("else"), dict):
                self._conditions[id(schema["else"])] = f"unless {when}"
        self._order = {name: i for i, name in enumerate(self.variables)}

    def _walk(
        self, schema: Any, resolver: Resolver, seen: set[int], ifs: list[dict[str, Any]]
    ) -> None:
        """Visit every subschema once (following $refs, which also proves they resolve)."""
        if not isinstance(schema, dict) or id(schema) in seen:
            return
        seen.add(id(schema))
        if isinstance(schema.get("$id"), str) and schema is not self.root:
            resolver = resolver.in_subresource(_resource(schema))
        if "if" in schema:
            ifs.append(schema)
        for name, sub in (schema.get("dependentSchemas") or {}).items():
            if isinstance(sub, dict):
                self._conditions[id(sub)] = f"when {name} is set"
        for name, sub in (schema.get("properties") or {}).items():
            if _facets(sub, resolver).secret:
                self._secret_names.add(name)
        if isinstance(schema.get("$ref"), str):
            sub, sub_resolver = _resolve(schema["$ref"], resolver)
            self._walk(sub, sub_resolver, seen, ifs)
        for key in _SCHEMA_MAPS:
            for sub in (schema.get(key) or {}).values():
                self._walk(sub, resolver, seen, ifs)
        for key in _SCHEMA_LISTS:
            for sub in schema.get(key) or ():
                self._walk(sub, resolver, seen, ifs)
        for key in _SCHEMA_ONE:
            self._walk(schema.get(key), resolver, seen, ifs)

    def _describe_condition(self, condition: Any) -> str:
        if not isinstance(condition, dict):
            return "its condition holds"
        parts: list[str] = []
        properties = condition.get("properties") or {}
        for name, sub in properties.items():
            # a const on a secret would tell what the secret is when the branch applies
            if isinstance(sub, dict) and name not in self._secret_names and "const" in sub:
                parts.append(f"{name} is {_short(sub['const'])}")
            elif isinstance(sub, dict) and name not in self._secret_names and "enum" in sub:
                parts.append(f"{name} is one of {_choices(sub['enum'])}")
            else:
                parts.append(f"{name} matches a condition")
        parts += [f"{n} is set" for n in condition.get("required") or () if n not in properties]
        return " and ".join(parts) or "a conditional rule applies"

    # -- errors ------------------------------------------------------------------------

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every problem of ``instance``, phrased safely (may repeat; ``errors`` dedupes)."""
        from referencing.exceptions import Unresolvable

        try:
            for error in self._validator.iter_errors(instance):
                yield from self._phrase(error)
        except Unresolvable as exc:  # a $ref reached only through a rarely taken branch
            raise SchemaError(
                [ConfigProblem("$ref", f"{str(exc)[:100]} cannot be resolved", "$ref")]
            ) from None

    def errors(self, instance: Any) -> list[ValidationError]:
        """Every problem of ``instance``, deduplicated, in declaration order of variables."""
        unique = dict.fromkeys(self.iter_errors(_reveal(instance)))
        return sorted(unique, key=self._sort_key)

    def validate(self, instance: Mapping[str, Any]) -> ValidationResult:
        """``instance`` checked against this schema."""
        errors = self.errors(instance)
        return ValidationResult(not errors, errors)

    def _sort_key(self, error: ValidationError) -> tuple[int, str]:
        top = re.split(r"[.\[]", error.path, maxsplit=1)[0]
        return (self._order.get(top, len(self._order)), error.path)

    def suggest(self, name: str, candidates: Sequence[str] | None = None) -> str:
        """`` (did you mean X?)`` for the closest known name, or an empty string."""
        known = list(self.variables) if candidates is None else list(candidates)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        return f" (did you mean {close[0]}?)" if close else ""

    def _phrase(self, error: JsonSchemaError) -> Iterator[ValidationError]:
        keyword = error.validator if isinstance(error.validator, str) else "false"
        path = list(error.path)
        expected = error.validator_value
        instance = error.instance
        schema = error.schema if isinstance(error.schema, dict) else {}
        when = self._conditions.get(id(error.schema))
        suffix = f" {when}" if when else ""
        if keyword == "required" and isinstance(instance, dict):
            for name in expected:
                if name not in instance:
                    yield ValidationError(_join(path, name), "is required" + suffix, keyword)
            return
        if keyword == "dependentRequired" and isinstance(instance, dict):
            for name, needed in expected.items():
                if name in instance:
                    for missing in needed:
                        if missing not in instance:
                            message = f"is required when {name} is set"
                            yield ValidationError(_join(path, missing), message, keyword)
            return
        if keyword == "additionalProperties" and isinstance(instance, dict):
            known = list(schema.get("properties") or {})
            patterns = list(schema.get("patternProperties") or {})
            for name in instance:
                if name not in known and not any(re.search(p, name) for p in patterns):
                    hint = self.suggest(name, known)
                    yield ValidationError(_join(path, name), "is not allowed" + hint, keyword)
            return
        if keyword in ("anyOf", "oneOf") and _only_required(expected):
            names = [n for branch in expected for n in branch["required"]]
            where = " or ".join(names)
            if keyword == "oneOf" and not error.context:
                yield ValidationError(_join(path, where), "only one of these may be set", keyword)
            else:
                yield ValidationError(_join(path, where), "one of these must be set", keyword)
            return
        hide = (
            schema.get("writeOnly") is True
            or any(p in self._secret_names for p in path if isinstance(p, str))
            or isinstance(instance, (dict, list))
        )
        message = _keyword_message(keyword, expected, error)
        if not hide:
            message += _echo(instance)
        yield ValidationError(_join(path, None), message + suffix, keyword)


def _only_required(branches: Any) -> bool:
    return (
        isinstance(branches, list)
        and bool(branches)
        and all(isinstance(b, dict) and set(b) == {"required"} for b in branches)
    )


def _join(path: Sequence[Any], last: str | None) -> str:
    text = ""
    for part in [*path, last] if last is not None else path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _echo(value: Any) -> str:
    """`` (got "value")``, redacted and cut short: the value of a non-secret property."""
    if isinstance(value, str):
        value = REDACTOR.redact(value[: _ECHO_MAX * 4])
    return f" (got {_short(value)})"


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _type_phrase(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in names)


_TEMPLATES: Final = {
    "pattern": "must match the pattern {short}",
    "format": "must be a valid {expected}",
    "const": "must be {short}",
    "minLength": "must be at least {expected} characters long",
    "maxLength": "must be at most {expected} characters long",
    "minimum": "must be >= {expected}",
    "maximum": "must be <= {expected}",
    "exclusiveMinimum": "must be > {expected}",
    "exclusiveMaximum": "must be < {expected}",
    "multipleOf": "must be a multiple of {expected}",
    "minItems": "must have at least {expected} items",
    "maxItems": "must have at most {expected} items",
    "uniqueItems": "must not hold duplicate items",
    "minProperties": "must have at least {expected} properties",
    "maxProperties": "must have at most {expected} properties",
    "anyOf": "does not match any of the allowed forms",
    "not": "must not match the excluded form",
    "contains": "must contain a matching item",
    "minContains": "must contain at least {expected} matching items",
    "maxContains": "must contain at most {expected} matching items",
    "unevaluatedProperties": "has properties the schema does not allow",
    "unevaluatedItems": "has items the schema does not allow",
    "false": "is not allowed",
}


def _keyword_message(keyword: str, expected: Any, error: JsonSchemaError) -> str:
    """A short message for a failed keyword, built from the schema value, not the instance."""
    if keyword == "type":
        return f"must be {_type_phrase(expected)}"
    if keyword == "enum":
        return f"must be one of {_choices(expected)}"
    if keyword == "oneOf":
        if error.context:
            return "must match exactly one of the allowed forms"
        return "matches more than one of the allowed forms"
    template = _TEMPLATES.get(keyword)
    if template is None:
        return f"fails the {keyword!r} rule"
    return template.format(expected=_short(expected).strip('"'), short=_short(expected))


def _reveal(value: Any) -> Any:
    """``value`` with Secrets replaced by their values (validation must see them)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


def _check_schema(root: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(root))
    if error is not None:
        where = _join(list(error.path), None) or "(root)"
        raise SchemaError(
            [ConfigProblem(where, f"invalid schema ({error.validator} rule)", "schema")]
        )


def _read_schema_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        problem = ConfigProblem("schema", f"cannot read {path}: {exc.strerror or exc}", "schema")
        raise SchemaError([problem]) from None
    except ValueError as exc:
        problem = ConfigProblem("schema", f"{path} is not valid JSON: {exc}", "schema")
        raise SchemaError([problem]) from None
    if not isinstance(data, dict):
        raise SchemaError([ConfigProblem("schema", f"{path} is not a JSON object", "schema")])
    return data


def _file_key(path: str | Path) -> tuple[str, int, int]:
    """Cache key of a schema file: its path and version (a changed file recompiles)."""
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError:
        return (str(resolved), -1, -1)
    return (str(resolved), st.st_mtime_ns, st.st_size)


def _with_id(schema: Mapping[str, Any], default_id: str) -> dict[str, Any]:
    """A private copy of ``schema`` with an ``$id`` (relative refs resolve against it)."""
    own = copy.deepcopy(dict(schema))
    own.setdefault("$id", default_id)
    if not isinstance(own["$id"], str):
        raise SchemaError([ConfigProblem("$id", "must be a string", "schema")])
    return own


@functools.lru_cache(maxsize=128)
def _compile_file(key: tuple[str, int, int]) -> CompiledSchema:
    path = Path(key[0])
    root = _with_id(_read_schema_file(path), _contract_base_uri() + path.name)
    return CompiledSchema(root, _contract_registry(), str(path))


@functools.lru_cache(maxsize=128)
def _compile_json(text: bytes) -> CompiledSchema:
    root = _with_id(orjson.loads(text), _contract_base_uri() + "schema.json")
    return CompiledSchema(root, _contract_registry(), "schema")


def _schema_bytes(schema: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(schema)  # not sorted: declaration order is the order of errors
    except TypeError:
        raise SchemaError([ConfigProblem("schema", "is not JSON data", "schema")]) from None


def compile_schema(schema: SchemaSource | CompiledSchema) -> CompiledSchema:
    """A cached ``CompiledSchema`` for a mapping, a file path or a contract ``$id``.

    A path is recompiled when the file changes; a mapping is keyed by its content.
    Raises ``SchemaError`` (exit 64) when the schema cannot be read, is not a valid
    Draft 2020-12 schema, or holds a ``$ref`` that does not resolve.
    """
    if isinstance(schema, CompiledSchema):
        return schema
    if isinstance(schema, str) and "://" in schema:
        for contract in _contract_schemas().values():
            if contract["$id"] == schema:
                return _compile_json(_schema_bytes(contract))
        raise SchemaError([ConfigProblem("schema", f"unknown schema id {schema!r}", "schema")])
    if isinstance(schema, (str, Path)):
        return _compile_file(_file_key(schema))
    return _compile_json(_schema_bytes(schema))


def validate(schema: SchemaSource | CompiledSchema, config: Mapping[str, Any]) -> ValidationResult:
    """Validate ``config`` against ``schema`` (mapping, file path or contract ``$id``).

    Draft 2020-12 with format checking and conditional rules; every error is
    returned, each with the variable's name (or JSON path), a short message and the
    failing keyword. ``Secret`` values are checked by their content but never quoted.
    """
    return compile_schema(schema).validate(config)


@functools.cache
def _contract_validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    # a $ref reaches a $defs branch ("bus-message.json#/$defs/Heartbeat") as easily as a file
    root = {"$schema": _base_config()["$schema"], "$ref": _contract_base_uri() + name}
    return Draft202012Validator(
        root, registry=_contract_registry(), format_checker=_format_checker()
    )


def contract_errors(name: str, instance: object, *, limit: int = 3) -> list[str]:
    """Up to ``limit`` ``"<json path>: <message>"`` errors of a document against a contract
    schema (empty when valid).

    ``name`` is a packaged schema file, optionally with a fragment: ``"manifest.json"``,
    ``"bus-message.json#/$defs/Heartbeat"``. Unlike ``validate`` (made for configs) the
    messages are jsonschema's own, so they name exactly what the published schema says;
    the validator is built once per name.
    """
    errors = sorted(_contract_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    out = []
    for error in errors[:limit]:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append(f"{where or '(root)'}: {error.message}")
    return out


# -- merging an agent schema with the base contract ------------------------------------

_MERGED_NAME = "agent-config.json"
_AGENT_NAME = "agent-schema.json"


def _open_copy(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` without its closing keywords, so that it composes under allOf."""
    own = {
        k: v
        for k, v in schema.items()
        if k not in ("additionalProperties", "unevaluatedProperties")
    }
    return copy.deepcopy(own)


def _merge(agent: Mapping[str, Any] | None, source: str) -> CompiledSchema:
    base = _base_config()
    if agent is None:
        return _compile_json(_schema_bytes(base))
    base_uri = _contract_base_uri()
    agent_root = _with_id(_open_copy(agent), base_uri + _AGENT_NAME)
    contract_ids = {s["$id"] for s in _contract_schemas().values()}
    if agent_root["$id"] in contract_ids | {base_uri + _MERGED_NAME}:
        problem = ConfigProblem("$id", f"{agent_root['$id']!r} is a contract schema's id", "$id")
        raise SchemaError([problem])
    _check_schema(agent_root)
    names = list(base["properties"])
    names += [n for n in agent_root.get("properties") or {} if n not in names]
    merged = {
        "$schema": base["$schema"],
        "$id": base_uri + _MERGED_NAME,
        "title": "AgentConfig",
        "type": "object",
        "allOf": [{"$ref": base["$id"]}, {"$ref": agent_root["$id"]}],
        "properties": dict.fromkeys(names, True),
        "additionalProperties": False,
    }
    registry = _contract_registry().with_resources(
        [(base["$id"], _resource(_open_copy(base))), (agent_root["$id"], _resource(agent_root))]
    )
    return CompiledSchema(merged, registry, source)


@functools.lru_cache(maxsize=64)
def _merge_file(key: tuple[str, int, int]) -> CompiledSchema:
    return _merge(_read_schema_file(Path(key[0])), key[0])


@functools.lru_cache(maxsize=64)
def _merge_json(text: bytes | None) -> CompiledSchema:
    return _merge(None if text is None else orjson.loads(text), "agent schema")


def config_schema(agent_schema: SchemaSource | None = None) -> CompiledSchema:
    """The base contract merged with an agent's schema (cached), closed over its variables.

    The agent schema declares only its own variables (``properties``, ``required``,
    its own ``if``/``then``, ``allOf``, ``dependentRequired``...); it may also narrow
    a base variable (an ``enum`` on ``BAQUP_ROLE``) or give it another default. Both
    schemas apply to the whole config, so the agent's conditional rules can test base
    variables. ``None`` gives the base contract alone.
    """
    if isinstance(agent_schema, (str, Path)):
        return _merge_file(_file_key(agent_schema))
    return _merge_json(None if agent_schema is None else _schema_bytes(agent_schema))


# -- the environment -------------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EXPECTED = {
    "boolean": "a boolean (true/false, yes/no, on/off, 1/0)",
    "integer": "an integer",
    "number": "a number",
    "array": "a JSON array",
    "object": "a JSON object",
    "null": "null",
    "string": "a string",
}


def _coerce_one(text: str, kind: str) -> Any:
    """``text`` as JSON type ``kind``; ``_MISSING`` when it does not parse as one."""
    token = text.strip()
    if kind == "boolean":
        lowered = token.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else _MISSING
    if kind in ("integer", "number") and _INTEGER.fullmatch(token):
        try:
            return int(token)
        except ValueError:  # more digits than int() accepts from a string
            return _MISSING
    if kind == "number" and _NUMBER.fullmatch(token):
        number = float(token)
        return number if math.isfinite(number) else _MISSING
    if kind in ("array", "object"):
        try:
            value = orjson.loads(token)
        except (ValueError, RecursionError):
            return _MISSING
        wanted = list if kind == "array" else dict
        return value if isinstance(value, wanted) else _MISSING
    if kind == "null":
        return None if token.lower() == "null" else _MISSING
    if kind == "string":
        return text
    return _MISSING


def coerce(text: str, types: Sequence[str]) -> Any:
    """An environment string as the first of ``types`` it parses as.

    Booleans: true/false, yes/no, on/off, 1/0 (any case); integers and numbers in
    decimal (numbers also with a fraction or exponent, finite only); arrays and
    objects as JSON; ``null`` as the word null. No types: the string itself.
    Raises ``ValueError`` naming what was expected (never the value).
    """
    if not types:
        return text
    for kind in types:
        value = _coerce_one(text, kind)
        if value is not _MISSING:
            return value
    raise ValueError("must be " + " or ".join(_EXPECTED.get(t, t) for t in types))


def read_secret_file(variable: str, path: str) -> str:
    """The content of a secret file named by ``variable`` (a ``NAME_FILE``).

    The file must be a regular file (symlinks are followed: Kubernetes mounts are
    links), readable, not world-writable and at most 1 MiB of UTF-8; one trailing
    newline (``\\n`` or ``\\r\\n``) is stripped. Raises ``ConfigError`` naming
    ``variable``; the message never holds the path (a secret pasted into ``NAME_FILE``
    by mistake would leak) nor the content.
    """

    def fail(message: str, keyword: str = "file") -> ConfigError:
        return ConfigError([ConfigProblem(variable, message, keyword)])

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise fail("does not name a regular file")
        if st.st_mode & stat.S_IWOTH:
            raise fail("names a world-writable file; anyone could replace the secret (chmod o-w)")

    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        check(os.stat(path))  # before open: opening a FIFO would block
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid path"
        raise fail(f"cannot read the file it names: {reason}") from None
    with os.fdopen(fd, "rb") as handle:
        check(os.fstat(handle.fileno()))  # the file opened is the file checked
        try:
            data = handle.read(_SECRET_FILE_MAX + 1)
        except OSError as exc:
            raise fail(f"cannot read the file it names: {exc.strerror or 'I/O error'}") from None
    if len(data) > _SECRET_FILE_MAX:
        raise fail("names a file larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("names a file that is not UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _raw_values(
    compiled: CompiledSchema, env: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[dict[str, str], set[str], set[str]]:
    """The declared variables' strings (secret files read), the names set but empty and
    the names whose problem is already recorded."""
    raw: dict[str, str] = {}
    empty: set[str] = set()
    failed: set[str] = set()
    for var in compiled.variables.values():
        value = env.get(var.name)
        file_var = var.name + _FILE_SUFFIX
        file_path = env.get(file_var) if var.secret else None
        if file_path:
            if value:
                message = f"is set together with {var.name}; set only one of them"
                problems.append(ConfigProblem(file_var, message, "file"))
                REDACTOR.register(value)
                failed.add(var.name)
                continue
            try:
                value = read_secret_file(file_var, file_path)
            except ConfigError as exc:
                problems.extend(exc.problems)
                failed.add(var.name)
                continue
        if value is None:
            continue
        if var.secret:
            REDACTOR.register(value)  # before any message is phrased
        if value == "":
            empty.add(var.name)
            continue
        raw[var.name] = value
    return raw, empty, failed


def _unknown(
    compiled: CompiledSchema, env: Mapping[str, str], prefix: str
) -> Iterator[ConfigProblem]:
    secrets = [n for n, v in compiled.variables.items() if v.secret]
    allowed = set(compiled.variables) | {n + _FILE_SUFFIX for n in secrets}
    for name in env:
        if not name.startswith(prefix) or name in allowed:
            continue
        base = name[: -len(_FILE_SUFFIX)] if name.endswith(_FILE_SUFFIX) else None
        if base in compiled.variables:
            message = f"is not allowed: only secret variables take a {_FILE_SUFFIX} variant"
        else:
            message = "is not a known variable" + compiled.suggest(name, sorted(allowed))
        yield ConfigProblem(name, message, "additionalProperties")


def load_from_env(
    schema_path: SchemaSource | CompiledSchema,
    *,
    prefix: str = "BAQUP_",
    apply_defaults: bool = True,
    coerce_types: bool = True,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Read, coerce and validate the variables ``schema_path`` declares; return them.

    Each top-level property is read from the environment by its exact name; an empty
    value counts as unset. With ``coerce_types`` the strings become the schema's
    types (see ``coerce``); with ``apply_defaults`` missing variables take their
    ``default``. For a secret (``writeOnly``) property ``NAME``, ``NAME_FILE`` may
    name a file holding the value instead (see ``read_secret_file``). When the
    schema is closed, variables that start with ``prefix`` but are not declared are
    errors (with the closest known name as a hint). Secret string values come back
    as ``Secret``.

    Raises ``ConfigError`` listing every problem at once (``SchemaError`` when the
    schema itself is unusable); messages name the variable and never quote a secret.
    """
    compiled = compile_schema(schema_path)
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    raw, empty, failed = _raw_values(compiled, env, problems)
    if compiled.closed and prefix:
        problems.extend(_unknown(compiled, env, prefix))
    values: dict[str, Any] = {}
    for name, var in compiled.variables.items():
        if name in raw:
            try:
                values[name] = coerce(raw[name], var.types) if coerce_types else raw[name]
            except ValueError as exc:
                shown = "" if var.secret else _echo(raw[name])
                problems.append(ConfigProblem(name, f"{exc}{shown}", "type"))
                failed.add(name)
        elif apply_defaults and var.has_default:
            values[name] = copy.deepcopy(var.default)
    for error in compiled.errors(values):
        top = re.split(r"[.\[]", error.path, maxsplit=1)[0]
        if top in failed:
            continue  # the coercion or file problem already says what is wrong
        message = error.message
        if top in empty and error.keyword == "required":
            message += " (it is set but empty)"
        problems.append(ConfigProblem(error.path, message, error.keyword))
    if problems:
        order = compiled._order
        problems.sort(key=lambda p: (order.get(p.variable, len(order)), p.variable))
        raise ConfigError(problems)
    return {
        name: Secret(value) if compiled.variables[name].secret and isinstance(value, str) else value
        for name, value in values.items()
    }


# -- the validate-config command -------------------------------------------------------


def validate_config_command(args: argparse.Namespace) -> int:
    """``baqup-agent validate-config --schema FILE [--prefix P] [--json]``.

    Loads the environment as ``load_config`` does (base contract + agent schema);
    prints ``ok: N variables`` and returns 0 when valid, one ``VARIABLE: message``
    line per error and 64 when not. ``--json`` prints one JSON document instead.
    """
    from baqup_agent.config import load_config

    try:
        config = load_config(args.schema, prefix=args.prefix)
    except ConfigError as exc:
        problems = exc.problems
        if args.json:
            errors = [p._asdict() for p in problems]
            _print(json.dumps({"valid": False, "errors": errors}))
        else:
            for p in problems:
                _print(f"{p.variable}: {p.message}" if p.variable else p.message)
        return int(ConfigError.exit_code)
    if args.json:
        _print(json.dumps({"valid": True, "variables": len(config)}))
    else:
        _print(f"ok: {len(config)} variables")
    return 0


def _print(line: str) -> None:
    # names from the environment may hold undecodable bytes (surrogates): escape them
    sys.stdout.write(REDACTOR.redact(line).encode("utf-8", "backslashreplace").decode() + "\n")
