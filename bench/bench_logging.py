"""Logging and config benchmarks (issue 3).

- One JSON log line (required fields + three extra fields) written to /dev/null by
  ``baqup_agent.Logger``, against structlog's JSON renderer with the same fields,
  measured in the same run: target at most 0.5x.
- The same line with two secrets registered (the redaction search runs): reported.
- ``load_config`` for a 30-property agent schema: reported (no target), warm (cached
  schema) and cold (a fresh process, jsonschema import included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bench._report import best_of, row

LINES = 20_000
TARGET = 0.5
FIELDS = {"files": 12, "bytes_done": 1_048_576, "path": "/data/photos/2026"}


def _per_line(*emitters: Callable[[], None], rounds: int = 7) -> list[float]:
    """Best seconds per call of each emitter, the emitters measured in turn each round.

    Interleaving keeps a change of machine load from favouring one of them.
    """
    best = [float("inf")] * len(emitters)
    for _ in range(rounds):
        for i, emit in enumerate(emitters):
            t0 = time.perf_counter()
            for _ in range(LINES):
                emit()
            best[i] = min(best[i], (time.perf_counter() - t0) / LINES)
    return best


def _structlog_emit(devnull: TextIO) -> Callable[[], None]:
    import structlog

    log = structlog.wrap_logger(
        structlog.PrintLogger(devnull),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        cache_logger_on_first_use=True,
    ).bind(job_id="job-2026-11-27.001", agent_id="fs-agent-7f3c")
    return lambda: log.info("chunk written", **FIELDS)


def _baqup_emit(devnull: TextIO) -> Callable[[], None]:
    from baqup_agent._logger import Logger

    log = Logger("job-2026-11-27.001", "fs-agent-7f3c", stream=devnull)
    return lambda: log.info("chunk written", **FIELDS)


def _orjson_floor(devnull: TextIO) -> Callable[[], None]:
    import orjson

    record: dict[str, object] = {"timestamp": "2026-11-27T10:00:00.123456Z", "level": "INFO"}
    record |= {"message": "chunk written", "job_id": "job-1", "agent_id": "fs-1", **FIELDS}
    write, flush = devnull.write, devnull.flush

    def emit() -> None:
        write(orjson.dumps(record).decode() + "\n")
        flush()

    return emit


def _agent_schema(n: int) -> dict[str, object]:
    kinds: list[dict[str, object]] = [
        {"type": "string", "minLength": 1},
        {"type": "integer", "minimum": 0, "default": 5},
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "boolean", "default": False},
        {"type": "string", "format": "path"},
        {"type": "string", "enum": ["a", "b", "c"]},
        {"type": "array", "items": {"type": "string"}},
        {"type": "string", "format": "hostname"},
        {"type": "string", "writeOnly": True},
        {"$ref": "common.json#/$defs/ChecksumAlgorithm"},
    ]
    props = {f"AGENT_VAR_{i:02d}": kinds[i % len(kinds)] for i in range(n)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Bench",
        "type": "object",
        "properties": props,
        "required": list(props)[:10],
    }


_VALUES = [
    "text",
    "7",
    "2.5",
    "yes",
    "/data",
    "b",
    '["x", "y"]',
    "db.local",
    "s3cr3t-value",
    "sha512",
]


def _environment(n: int) -> dict[str, str]:
    env = {"BAQUP_JOB_ID": "job-1", "BAQUP_AGENT_ID": "agent-1", "BAQUP_ROLE": "backup"}
    env |= {f"AGENT_VAR_{i:02d}": _VALUES[i % len(_VALUES)] for i in range(n)}
    return env


def _bench_load_config(workdir: Path) -> None:
    from baqup_agent.config import load_config

    schema = workdir / "agent-schema.json"
    schema.write_text(json.dumps(_agent_schema(30)))
    env = _environment(30)
    t0 = time.perf_counter()
    load_config(schema, environ=env)  # jsonschema may already be imported: see cold below
    first = time.perf_counter() - t0
    calls = 200
    warm = best_of(lambda: [load_config(schema, environ=env) for _ in range(calls)]) / calls
    code = (
        "import json,sys,time;t=time.perf_counter();from baqup_agent.config import load_config;"
        "load_config(sys.argv[1], environ=json.loads(sys.argv[2]));"
        "print(time.perf_counter()-t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(schema), json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
    )
    cold = float(out.stdout)
    note = (
        f"warm {warm * 1e3:.2f} ms/call; first call in this process {first * 1e3:.0f} ms; "
        f"fresh process incl. imports {cold * 1e3:.0f} ms"
    )
    row("load_config 30-property agent schema", None, "report", None, note)


def main() -> int:
    """Print the rows; return the number of missed targets."""
    from baqup_agent._redaction import REDACTOR
    from baqup_agent._secret import Secret

    missed = 0
    with open(os.devnull, "w") as devnull:
        peer, ours, floor = _per_line(
            _structlog_emit(devnull), _baqup_emit(devnull), _orjson_floor(devnull)
        )
        ratio = ours / peer
        passed = ratio <= TARGET
        missed += not passed
        note = f"{ours * 1e6:.2f} us vs structlog {peer * 1e6:.2f} us"
        note += f" (orjson dump+write+flush floor {floor * 1e6:.2f} us)"
        row("log line json, 3 fields vs structlog", ratio, f"<= {TARGET}", passed, note)

        secrets = [Secret("hunter2-bench-password"), Secret("redis://:pw-bench-123@redis:6379/0")]
        peer, with_secrets = _per_line(_structlog_emit(devnull), _baqup_emit(devnull))
        note = f"{with_secrets * 1e6:.2f} us with {len(secrets)} secrets registered"
        row("log line json + redaction vs structlog", with_secrets / peer, "report", None, note)
        REDACTOR.clear()

    with tempfile.TemporaryDirectory() as tmp:
        _bench_load_config(Path(tmp))
    return missed
