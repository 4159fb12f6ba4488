"""What the wire must look like beyond each message's schema: seq (§3.2), the result as
the last message (§3.6), JSON integers (§0.5), the log level honoured (§6.4)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from baqup_agent.conformance.checks._base import CheckInput, must
from baqup_agent.conformance.observed import Message, Run
from baqup_agent.conformance.report import Finding
from baqup_agent.contract import LogLevel
from baqup_agent.contract.wire import MANIFEST_FILE
from baqup_schema.contract_schemas import contract_validator

_BRANCHES = {"state_change": "StateChange", "heartbeat": "Heartbeat",
             "progress": "ProgressUpdate", "result": "Result"}  # fmt: skip


def _first_per_id(run: Run, source: str) -> list[Message]:
    return [m for m in run.messages if m.source == source and m.data is not None]


def seq(inp: CheckInput) -> Iterator[Finding]:
    """The agent's messages are numbered 0, 1, 2, ... by seq: in each source (Redis
    stream, spool) each seq is the previous one plus one, and all of them together
    (de-duplicated by id: a replay keeps the original seq) are exactly 0..N-1."""
    for run in inp.runs:
        union: dict[str, int] = {}
        for source in ("spool", "redis"):
            numbers = []
            for m in _first_per_id(run, source):
                value = (m.data or {}).get("seq")
                if isinstance(value, int) and not isinstance(value, bool):
                    numbers.append(value)
                    union.setdefault(str((m.data or {}).get("id")), value)
            for a, b in itertools.pairwise(numbers):
                if b != a + 1:
                    yield must(f"{source}: seq {b} follows seq {a} (must grow by one)", run)
                    break
        values = sorted(union.values())
        if values and values != list(range(len(values))):
            missing = sorted(set(range(values[-1] + 1)) - set(values))[:5]
            yield must(
                f"the agent's messages do not number 0..{len(values) - 1} by seq "
                f"(first seq {values[0]}, missing {missing}, repeated "
                f"{len(values) - len(set(values))})",
                run,
            )


def result_last(inp: CheckInput) -> Iterator[Finding]:
    """Nothing follows the result: no heartbeat, progress or state change after it."""
    for run in inp.runs:
        for source in ("spool", "redis"):
            msgs = _first_per_id(run, source)
            kinds = [m.type for m in msgs]
            if "result" not in kinds:
                continue
            # a second result is result-once's finding; anything else may not follow
            after = [m for m in msgs[kinds.index("result") + 1 :] if m.type != "result"]
            if after:
                yield must(
                    f"{len(after)} message(s) after the result in the {source} "
                    f"(first: {after[0].type})",
                    run,
                    after[0].raw,
                )


def _integral_floats_marked(text: str) -> Any:
    # 12.0 becomes 12.5: where the schema says integer, the marked value fails its type
    # (jsonschema alone accepts 12.0 as the integer 12); elsewhere a number stays a number
    def mark(token: str) -> float:
        value = float(token)
        return value + 0.5 if value.is_integer() else value

    return json.loads(text, parse_float=mark)


def integer_errors(schema: str, text: str) -> list[str]:
    """JSON paths where ``text`` writes an integer of ``schema`` as a float (``12.0``)."""
    try:
        marked = _integral_floats_marked(text)
    except ValueError:
        return []  # not JSON: the schema checks say so
    out = []
    for error in contract_validator(schema).iter_errors(marked):
        for e in [error, *error.context]:
            expected = e.validator_value if e.validator == "type" else None
            if expected == "integer" or (isinstance(expected, list) and "integer" in expected):
                out.append("/".join(str(p) for p in e.absolute_path) or "(root)")
    return sorted(set(out))


def json_integers(inp: CheckInput) -> Iterator[Finding]:
    """Integers in bus messages and manifests are JSON integers (``12``, never ``12.0``)."""
    for run in inp.runs:
        reported = 0
        for m in run.messages:
            branch = _BRANCHES.get(m.type or "")
            if branch is None or reported >= 3:
                continue
            paths = integer_errors(f"bus-message.json#/$defs/{branch}", m.raw)
            if paths:
                reported += 1
                where = f"{m.source} {m.where}"
                yield must(f"{where}: {', '.join(paths)} written as a float", run, m.raw)
        manifest = run.output / MANIFEST_FILE
        if manifest.is_file():
            paths = integer_errors("manifest.json", manifest.read_text(encoding="utf-8"))
            if paths:
                yield must(f"manifest.json: {', '.join(paths)} written as a float", run)


def log_level(inp: CheckInput) -> Iterator[Finding]:
    """No record below BAQUP_LOG_LEVEL is written."""
    for run in inp.runs:
        threshold = run.env.get("BAQUP_LOG_LEVEL", "")
        if threshold not in LogLevel.__members__:
            continue
        for number, line in enumerate(run.stderr, 1):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # log-records reports it
            level = str(record.get("level")) if isinstance(record, dict) else ""
            if level in LogLevel.__members__ and LogLevel[level] < LogLevel[threshold]:
                yield must(
                    f"stderr line {number} at {level}, below BAQUP_LOG_LEVEL={threshold}",
                    run,
                    line,
                )
                break
