"""How validation problems are reported: ``ValidationError``, ``ValidationResult`` and
the wording of jsonschema's errors.

Every message names the variable (or JSON path), is short, is built from the schema's
values rather than the instance's, and never quotes a secret (``writeOnly``) value:
``phrase`` turns one jsonschema error into the problems a reader can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from baqup_schema.redaction import REDACTOR

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError as JsonSchemaError

__all__ = [
    "ValidationError",
    "ValidationResult",
    "choices",
    "did_you_mean",
    "echo",
    "join_path",
    "phrase",
    "short",
    "top_variable",
]

_ECHO_MAX = 40  # characters of a bad (non-secret) value quoted back in a message


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


def short(value: Any) -> str:
    """``value`` as JSON, cut to a few dozen characters."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= _ECHO_MAX else text[: _ECHO_MAX - 3] + "..."


def choices(values: Any) -> str:
    """The allowed values of an enum, the first ten of them."""
    items = list(values) if isinstance(values, list) else [values]
    shown = ", ".join(short(v) for v in items[:10])
    return shown + (", ..." if len(items) > 10 else "")


def echo(value: Any) -> str:
    """`` (got "value")``, redacted and cut short: the value of a non-secret property."""
    if isinstance(value, str):
        value = REDACTOR.redact(value)[: _ECHO_MAX * 4]  # cut after: a cut secret is not found
    return f" (got {short(value)})"


def join_path(path: Sequence[Any], last: str | None) -> str:
    """A JSON path as ``NAME.key[0].other`` (``last`` appended when given)."""
    text = ""
    for part in [*path, last] if last is not None else path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def top_variable(path: str) -> str:
    """The top-level variable a ``join_path`` path starts with."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``known``, or an empty string."""
    import difflib  # only for a misspelt variable: most starts never need it

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def phrase(
    error: JsonSchemaError, when: str | None, secret_names: Collection[str]
) -> Iterator[ValidationError]:
    """The problems one jsonschema ``error`` stands for, phrased safely.

    ``when`` is the condition under which the failing subschema applies (``"when X
    is set"``), if any; the values of ``secret_names`` properties are never quoted.
    """
    keyword = error.validator if isinstance(error.validator, str) else "false"
    path = list(error.path)
    expected = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    suffix = f" {when}" if when else ""
    if keyword == "required" and isinstance(instance, dict):
        for name in expected:
            if name not in instance:
                yield ValidationError(join_path(path, name), "is required" + suffix, keyword)
        return
    if keyword == "dependentRequired" and isinstance(instance, dict):
        for name, needed in expected.items():
            if name in instance:
                for missing in needed:
                    if missing not in instance:
                        message = f"is required when {name} is set"
                        yield ValidationError(join_path(path, missing), message, keyword)
        return
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties") or {})
        patterns = list(schema.get("patternProperties") or {})
        for name in instance:
            if name not in known and not any(re.search(p, name) for p in patterns):
                hint = did_you_mean(name, known)
                yield ValidationError(join_path(path, name), "is not allowed" + hint, keyword)
        return
    if keyword in ("anyOf", "oneOf") and _only_required(expected):
        names = [n for branch in expected for n in branch["required"]]
        where = " or ".join(names)
        if keyword == "oneOf" and not error.context:
            yield ValidationError(join_path(path, where), "only one of these may be set", keyword)
        else:
            yield ValidationError(join_path(path, where), "one of these must be set", keyword)
        return
    hide = (
        schema.get("writeOnly") is True
        or any(p in secret_names for p in path if isinstance(p, str))
        or isinstance(instance, (dict, list))
    )
    message = _keyword_message(keyword, expected, error)
    if not hide:
        message += echo(instance)
    yield ValidationError(join_path(path, None), message + suffix, keyword)


def _only_required(branches: Any) -> bool:
    return (
        isinstance(branches, list)
        and bool(branches)
        and all(isinstance(b, dict) and set(b) == {"required"} for b in branches)
    )


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
        return f"must be one of {choices(expected)}"
    if keyword == "oneOf":
        if error.context:
            return "must match exactly one of the allowed forms"
        return "matches more than one of the allowed forms"
    template = _TEMPLATES.get(keyword)
    if template is None:
        return f"fails the {keyword!r} rule"
    return template.format(expected=short(expected).strip('"'), short=short(expected))
