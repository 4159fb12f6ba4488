"""Configuration from the environment: reading, coercion and ``NAME_FILE`` secrets.

``load_from_env(schema_path, ...)`` reads each variable a config schema declares by
its exact name, coerces the strings to the schema's types (``coerce``), applies
defaults, reads ``NAME_FILE`` for secrets (``read_secret_file``), reports unknown
prefixed variables and validates the result, raising one ``ConfigError`` that lists
every problem.
"""

from __future__ import annotations

import copy
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import orjson

from baqup_schema.compiled_schema import CompiledSchema, SchemaSource, compile_schema
from baqup_schema.errors import ConfigError, ConfigProblem
from baqup_schema.redaction import REDACTOR
from baqup_schema.schema_messages import echo, top_variable
from baqup_schema.secret import Secret

__all__ = ["coerce", "load_from_env", "read_secret_file"]

_MISSING: Final[Any] = object()
_SECRET_FILE_MAX = 1 << 20
_FILE_SUFFIX = "_FILE"

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
                shown = "" if var.holds_secret else echo(raw[name])
                problems.append(ConfigProblem(name, f"{exc}{shown}", "type"))
                failed.add(name)
        elif apply_defaults and var.has_default:
            values[name] = copy.deepcopy(var.default)
        if var.holds_secret and name in values:  # before any message is phrased
            for text in compiled.secret_strings(name, values[name]):
                REDACTOR.register(text)
    for error in compiled.errors(values):
        top = top_variable(error.path)
        if top in failed:
            continue  # the coercion or file problem already says what is wrong
        message = error.message
        if top in empty and error.keyword == "required":
            message += " (it is set but empty)"
        problems.append(ConfigProblem(error.path, message, error.keyword))
    if problems:
        problems.sort(key=lambda p: (compiled.rank(p.variable), p.variable))
        raise ConfigError(problems)
    return {
        name: Secret(value) if compiled.variables[name].secret and isinstance(value, str) else value
        for name, value in values.items()
    }
