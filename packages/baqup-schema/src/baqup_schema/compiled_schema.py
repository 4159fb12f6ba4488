"""Compiling a config schema: ``CompiledSchema``, its cache, and the merged config schema.

``compile_schema`` checks a schema (a mapping, a file or a contract ``$id``) against
Draft 2020-12, resolves its ``$ref``s through the contract registry (a schema without
``$id`` resolves relative references against the contract's base URI, so
``common.json#/$defs/JobId`` works from an agent schema) and caches the result: a
controller validating many configs pays the compilation once. ``config_schema``
merges an agent's ``agent-schema.json`` with the base contract (``config.json``).
A ``CompiledSchema`` knows its top-level ``variables`` (the environment variables,
with their types, defaults and secrecy) and what it needs to phrase errors.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from baqup_schema.contract_schemas import (
    base_config,
    contract_base_uri,
    contract_registry,
    contract_schemas,
    format_checker,
    resource,
)
from baqup_schema.errors import ConfigProblem, SchemaError
from baqup_schema.schema_messages import (
    ValidationError,
    ValidationResult,
    choices,
    did_you_mean,
    join_path,
    phrase,
    short,
    top_variable,
)
from baqup_schema.secret import Secret

if TYPE_CHECKING:
    from referencing import Registry
    from referencing._core import Resolver

__all__ = [
    "CompiledSchema",
    "SchemaSource",
    "Variable",
    "compile_schema",
    "config_schema",
]

SchemaSource = Mapping[str, Any] | str | Path

_MISSING: Final[Any] = object()

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
    holds_secret: bool = False
    """Whether a ``writeOnly`` property sits inside it (an object or array variable)."""


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


def _holds_secret(schema: Any, resolver: Resolver, seen: set[int]) -> bool:
    """Whether a ``writeOnly`` subschema can be reached from ``schema`` (through
    properties, items, ``$ref``, combinators and conditionals)."""
    if not isinstance(schema, dict) or id(schema) in seen:
        return False
    seen.add(id(schema))
    if schema.get("writeOnly") is True:
        return True
    subs: list[tuple[Any, Resolver]] = []
    if isinstance(schema.get("$ref"), str):
        subs.append(_resolve(schema["$ref"], resolver))
    for key in ("properties", "patternProperties"):
        subs += [(sub, resolver) for sub in (schema.get(key) or {}).values()]
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        subs += [(sub, resolver) for sub in schema.get(key) or ()]
    for key in ("items", "additionalProperties", "then", "else", "unevaluatedProperties"):
        subs.append((schema.get(key), resolver))
    return any(_holds_secret(sub, r, seen) for sub, r in subs)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _secret_strings(schema: Any, resolver: Resolver, value: Any, depth: int = 0) -> Iterator[str]:
    """The strings of ``value`` that sit where ``schema`` says ``writeOnly``."""
    if not isinstance(schema, dict) or depth > 32:
        return
    if schema.get("writeOnly") is True:
        yield from _strings(value)
        return
    branches: list[tuple[Any, Resolver]] = []
    if isinstance(schema.get("$ref"), str):
        branches.append(_resolve(schema["$ref"], resolver))
    for key in ("allOf", "anyOf", "oneOf"):
        branches += [(sub, resolver) for sub in schema.get(key) or ()]
    branches += [(schema.get(key), resolver) for key in ("then", "else")]
    for sub, sub_resolver in branches:
        yield from _secret_strings(sub, sub_resolver, value, depth + 1)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        for key, item in value.items():
            subs = [properties[key]] if key in properties else []
            subs += [sub for p, sub in patterns.items() if re.search(p, key)]
            if not subs and key not in properties:
                subs.append(schema.get("additionalProperties"))
            for sub in subs:
                yield from _secret_strings(sub, resolver, item, depth + 1)
    elif isinstance(value, list):
        prefix = schema.get("prefixItems") or []
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            yield from _secret_strings(sub, resolver, item, depth + 1)


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
    seen: set[int] = set()
    return Variable(
        name,
        tuple(ordered),
        None if default is _MISSING else default,
        default is not _MISSING,
        secret,
        secret or any(_holds_secret(sub, resolver, seen) for sub, resolver in parts),
    )


class CompiledSchema:
    """A checked schema ready to validate many instances (build it with ``compile_schema``).

    Holds the jsonschema validator, the top-level ``variables`` in declaration
    order, whether the schema is ``closed`` (``additionalProperties: false``), and
    what it knows to phrase errors: the conditions of ``then``/``else`` branches and
    the names of ``writeOnly`` properties, whose values are never quoted.
    ``checked=True`` skips the Draft 2020-12 metaschema check, for a schema built here
    from parts already checked.
    """

    def __init__(
        self, root: dict[str, Any], registry: Registry, source: str, *, checked: bool = False
    ) -> None:
        from jsonschema import Draft202012Validator

        self.source = source
        self.root = root
        if not checked:
            _check_schema(root)
        self.registry = registry.with_resource(root["$id"], resource(root)).crawl()
        resolver = self.registry.resolver(base_uri=root["$id"])
        self._validator = Draft202012Validator(
            root, registry=self.registry, format_checker=format_checker()
        )
        found: dict[str, list[tuple[Any, Resolver]]] = {}
        _collect_properties(root, resolver, found)
        self.variables: dict[str, Variable] = {n: _variable(n, p) for n, p in found.items()}
        self._parts = found
        self.closed = (
            root.get("additionalProperties") is False or root.get("unevaluatedProperties") is False
        )
        # a variable holding a secret somewhere inside is never quoted, at any depth
        self._secret_names = {n for n, v in self.variables.items() if v.holds_secret}
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

    def secret_strings(self, name: str, value: Any) -> Iterator[str]:
        """The strings of variable ``name``'s ``value`` that its schema marks ``writeOnly``
        (at any depth: a password inside an object variable)."""
        for sub, resolver in self._parts.get(name, ()):
            yield from _secret_strings(sub, resolver, value)

    def _walk(
        self, schema: Any, resolver: Resolver, seen: set[int], ifs: list[dict[str, Any]]
    ) -> None:
        """Visit every subschema once (following $refs, which also proves they resolve)."""
        if not isinstance(schema, dict) or id(schema) in seen:
            return
        seen.add(id(schema))
        if isinstance(schema.get("$id"), str) and schema is not self.root:
            resolver = resolver.in_subresource(resource(schema))
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
                parts.append(f"{name} is {short(sub['const'])}")
            elif isinstance(sub, dict) and name not in self._secret_names and "enum" in sub:
                parts.append(f"{name} is one of {choices(sub['enum'])}")
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
                yield from phrase(error, self._conditions.get(id(error.schema)), self._secret_names)
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

    def rank(self, name: str) -> int:
        """Where top-level variable ``name`` is declared (unknown names come last)."""
        return self._order.get(name, len(self._order))

    def _sort_key(self, error: ValidationError) -> tuple[int, str]:
        return (self.rank(top_variable(error.path)), error.path)

    def suggest(self, name: str, candidates: Sequence[str] | None = None) -> str:
        """`` (did you mean X?)`` for the closest known name, or an empty string."""
        return did_you_mean(name, list(self.variables) if candidates is None else list(candidates))


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
        where = join_path(list(error.path), None) or "(root)"
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
    root = _with_id(_read_schema_file(path), contract_base_uri() + path.name)
    return CompiledSchema(root, contract_registry(), str(path))


@functools.lru_cache(maxsize=128)
def _compile_json(text: bytes) -> CompiledSchema:
    root = _with_id(orjson.loads(text), contract_base_uri() + "schema.json")
    return CompiledSchema(root, contract_registry(), "schema")


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
        for contract in contract_schemas().values():
            if contract["$id"] == schema:
                return _compile_json(_schema_bytes(contract))
        raise SchemaError([ConfigProblem("schema", f"unknown schema id {schema!r}", "schema")])
    if isinstance(schema, (str, Path)):
        return _compile_file(_file_key(schema))
    return _compile_json(_schema_bytes(schema))


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
    base = base_config()
    if agent is None:
        return _compile_json(_schema_bytes(base))
    base_uri = contract_base_uri()
    agent_root = _with_id(_open_copy(agent), base_uri + _AGENT_NAME)
    contract_ids = {s["$id"] for s in contract_schemas().values()}
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
    registry = contract_registry().with_resources(
        [(base["$id"], resource(_open_copy(base))), (agent_root["$id"], resource(agent_root))]
    )
    # valid by construction from the checked parts: a metaschema pass costs milliseconds
    # of every agent's start
    return CompiledSchema(merged, registry, source, checked=True)


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
