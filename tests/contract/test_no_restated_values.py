"""No hand-written code restates a value the schemas hold (issue 12).

A scan of the hand-written Python (``src/``, ``packages/*/src``, ``examples/``; the
generated ``contract`` packages excluded) for the schema values that used to be written
by hand: the wire layout's names and numbers, the id and filename patterns, the result's
error length, the log record's own field names. Such a value must come from
``contract.tables`` / ``contract.wire``. A line that holds the same number for another
reason says so with ``# not-a-schema-value: why`` (on it or on a line of its own above).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Iterator
from pathlib import Path

import pytest

from baqup_agent.contract import tables, wire
from tests.contract._schemas import ROOT

PRAGMA = "# not-a-schema-value:"
GENERATED = {
    ROOT / "src/baqup_agent/contract",
    ROOT / "packages/baqup-schema/src/baqup_schema/contract",
}


def _hand_written() -> list[Path]:
    roots = [ROOT / "src", *sorted((ROOT / "packages").glob("*/src")), ROOT / "examples"]
    return [
        p
        for root in roots
        for p in sorted(root.rglob("*.py"))
        if not any(p.is_relative_to(g) for g in GENERATED)
    ]


def _unanchored(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


NAMES = {
    wire.STREAM_FIELD,
    wire.SPOOL_SUBDIR,
    wire.SPOOL_EVENTS_FILE,
    wire.SPOOL_REPLAYED_FILE,
    wire.SPOOL_CONTROL_FILE,
    wire.STAGING_SUBDIR,
    wire.LOCKS_SUBDIR,
}
"""Strings of the wire layout (a path segment or the stream field)."""

PATTERNS = {
    _unanchored(p)
    for p in (tables.JOB_ID_PATTERN, tables.AGENT_ID_PATTERN, tables.ARTIFACT_FILENAME_PATTERN)
}
NUMBERS = {
    wire.RESULT_RETENTION_SECONDS,
    wire.EVENTS_STREAM_MAXLEN,
    wire.SPOOL_DIR_MODE,
    wire.SPOOL_FILE_MODE,
    tables.RESULT_ERROR_MAX_LENGTH,
}
KEY_PREFIX = wire.REDIS_KEYS["events"].template.split(wire.JOB_ID_PLACEHOLDER)[0]
"""``baqup:{``: the start of every key; code that builds a key restates the template."""

_FOLD = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Pow: operator.pow}


def _number(node: ast.AST) -> int | None:
    """The value of an int literal or of arithmetic on int literals (``7 * 24 * 3600``)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _FOLD:
        left, right = _number(node.left), _number(node.right)
        if left is not None and right is not None:
            return int(_FOLD[type(node.op)](left, right))
    return None


def problems(source: str) -> Iterator[tuple[int, str]]:
    """(line, what) for every schema value written as a literal in ``source``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        # the pragma on the line, or a comment line of its own just above
        if line and (PRAGMA in lines[line - 1] or lines[line - 2].strip().startswith(PRAGMA)):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if id(node) in prose:
                continue
            if text.strip("/") in NAMES:
                yield line, f"wire layout name {text!r}"
            if text.endswith(KEY_PREFIX) or text.startswith(KEY_PREFIX[:-1] + ":{"):
                yield line, f"Redis key built by hand {text!r}"
            if any(p in text for p in PATTERNS):
                yield line, f"schema pattern {text!r}"
        elif isinstance(node, (ast.BinOp, ast.Constant)) and not isinstance(
            getattr(node, "value", None), bool
        ):
            value = _number(node)
            if value in NUMBERS and not (
                isinstance(node, ast.Constant) and _inside_fold(tree, node)
            ):
                yield line, f"schema number {value}"
        elif isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if len(words & set(tables.LOG_RECORD_FIELDS)) >= len(tables.LOG_RECORD_FIELDS) - 2:
                yield line, "the log record's field names"


def _inside_fold(tree: ast.AST, node: ast.AST) -> bool:
    # a literal inside arithmetic is reported once, for the whole expression
    return any(
        isinstance(n, ast.BinOp) and node in (n.left, n.right) and _number(n) is not None
        for n in ast.walk(tree)
    )


def test_hand_written_code_restates_no_schema_value() -> None:
    files = _hand_written()
    assert len(files) > 30
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in files
        for line, what in problems(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'MESSAGE_FIELD = "msg"',
        'path = root / ".spool" / job_id',
        'work = f".staging/{job_id}/"',
        'lock = base / ".locks"',
        'EVENTS = "events.jsonl"',
        'key = f"baqup:{{{job_id}}}:events"',
        'key = "baqup:{" + job_id + "}:result"',
        'ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")',
        'ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")',
        "SUMMARY_MAX_LENGTH = 4096",
        "RESULT_TTL = 7 * 24 * 3600",
        "RESULT_TTL = 604800",
        "MAXLEN = 100_000",
        "os.mkdir(path, 0o750)",
        'RESERVED = frozenset({"timestamp", "level", "message", "job_id", "agent_id"})',
        'RESERVED = ("timestamp", "level", "message", "job_id", "agent_id", "logger")',
    ],
)
def test_scan_finds_a_restated_value(source: str) -> None:
    assert list(problems(source)), source


@pytest.mark.parametrize(
    "source",
    [
        '"""Files under .spool: events.jsonl."""',
        "BUFFER = 4096  # not-a-schema-value: a read size",
        "from baqup_agent.contract.wire import STREAM_FIELD",
        'fix = "poll baqup:{JOB_ID}:control"',
        'level = "message"',
        "SIZE = 64 * 1024",
    ],
)
def test_scan_lets_other_code_through(source: str) -> None:
    assert list(problems(source)) == [], source
