"""``Logger``: the log-record schema, levels, fields, exceptions, text format, stdlib bridge."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from baqup_agent._logger import Logger, LoggingBridge, parse_level
from baqup_agent._redaction import REDACTED
from baqup_agent._secret import Secret
from baqup_agent.contract import LogLevel
from baqup_agent.schema import validate

LOG_RECORD = "https://baqup.io/schema/agent/v1/log-record.json"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    for record in records:
        result = validate(LOG_RECORD, record)
        assert result.valid, result.errors
    return records


@pytest.fixture
def stream() -> CountingStream:
    return CountingStream()


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_line_has_required_fields_first(stream: CountingStream) -> None:
    Logger("job-1", "agent-1", stream=stream).info("started", files=3, path="/d", ok=True)
    (record,) = lines(stream)
    assert list(record)[:5] == ["timestamp", "level", "message", "job_id", "agent_id"]
    assert TIMESTAMP.fullmatch(record["timestamp"])
    assert record | {"timestamp": ""} == {
        "timestamp": "",
        "level": "INFO",
        "message": "started",
        "job_id": "job-1",
        "agent_id": "agent-1",
        "files": 3,
        "path": "/d",
        "ok": True,
    }
    assert stream.getvalue().count("\n") == 1 and stream.flushes == 1


def test_levels_and_level_names(stream: CountingStream) -> None:
    log = Logger("j", "a", level="warn", stream=stream)
    log.trace("t")
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.warning("w2")
    log.error("e")
    log.fatal("f")
    log.log("ERROR", "by name")
    log.log(LogLevel.INFO, "dropped")
    assert [r["level"] for r in lines(stream)] == ["WARN", "WARN", "ERROR", "FATAL", "ERROR"]
    assert parse_level("WARNING") is LogLevel.WARN and parse_level(0) is LogLevel.TRACE
    assert parse_level(" debug ") is LogLevel.DEBUG and parse_level("CRITICAL") is LogLevel.FATAL
    with pytest.raises(ValueError, match="unknown log level"):
        parse_level("LOUD")
    log.level = "TRACE"
    log.trace("now visible")
    assert lines(stream)[-1]["level"] == "TRACE" and log.enabled("TRACE")


def test_colliding_fields_are_prefixed(stream: CountingStream) -> None:
    log = Logger("j", "a", stream=stream).bind(job_id="bound-collision", stream="s")
    log.info("real", message="fake", level="x", timestamp=1, agent_id="b", exception="e")
    (record,) = lines(stream)
    assert (record["message"], record["level"], record["job_id"]) == ("real", "INFO", "j")
    assert record["extra_message"] == "fake" and record["extra_level"] == "x"
    assert record["extra_timestamp"] == 1 and record["extra_job_id"] == "bound-collision"
    assert record["extra_exception"] == "e" and record["extra_agent_id"] == "b"
    assert record["stream"] == "s"


def test_bound_fields_and_per_call_override(stream: CountingStream) -> None:
    log = Logger("j", "a", stream=stream).bind(step="copy", n=1)
    log.info("one")
    log.info("two", step="verify")
    first, second = lines(stream)
    assert (first["step"], first["n"]) == ("copy", 1)
    assert (second["step"], second["n"]) == ("verify", 1)
    assert stream.getvalue().splitlines()[1].count('"step"') == 1
    assert log.fields == {"step": "copy", "n": 1}


def test_values_json_cannot_hold_natively(stream: CountingStream) -> None:
    from pathlib import Path

    Logger("j", "a", stream=stream).info(
        "odd", p=Path("/x"), s={1}, b=b"\xffok", big=2**70, sur="a\udcffb", lvl=LogLevel.WARN
    )
    (record,) = lines(stream)
    assert record["p"] == "/x" and record["s"] == [1] and record["big"] == 2**70
    assert record["b"] == "\\xffok" and record["lvl"] == 3 and "sur" in record


def test_exception_object(stream: CountingStream) -> None:
    log = Logger("j", "a", stream=stream)
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        log.error("write failed", exc=exc)
        log.warn("handled", exc=True)
    first, second = lines(stream)
    assert first["exception"]["type"] == "OSError"
    assert first["exception"]["message"] == "[Errno 28] No space left on device"
    assert first["exception"]["stack"].startswith("Traceback (most recent call last):")
    assert second["exception"]["type"] == "OSError"


def test_text_format(stream: CountingStream) -> None:
    log = Logger("job-1", "agent-1", format="text", stream=stream)
    log.info("copied\nfiles", n=2, path="/a b", empty="")
    try:
        raise ValueError("bad")
    except ValueError as exc:
        log.error("failed", exc=exc)
    text = stream.getvalue().splitlines()
    assert TIMESTAMP.match(text[0])
    assert text[0].endswith(
        ' INFO  copied\\nfiles  n=2 path="/a b" empty="" job_id=job-1 agent_id=agent-1'
    )
    assert " ERROR failed  job_id=job-1" in text[1]
    assert text[2] == "    Traceback (most recent call last):" and text[-1] == "    ValueError: bad"


def test_stdlib_bridge(stream: CountingStream, root_logger: logging.Logger) -> None:
    log = Logger("j", "a", level="DEBUG", stream=stream)
    handler = log.install_logging_bridge()
    assert isinstance(handler, LoggingBridge) and root_logger.level == logging.DEBUG
    log.install_logging_bridge()  # replaces, never duplicates
    assert sum(isinstance(h, LoggingBridge) for h in root_logger.handlers) == 1
    lib = logging.getLogger("somelib.pool")
    lib.debug("opened %d connections", 3, extra={"host": "db", "message_id": 7})
    lib.log(5, "very low")
    lib.critical("down")
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        lib.exception("retrying")
    warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    records = lines(stream)
    assert [(r["level"], r["logger"]) for r in records] == [
        ("DEBUG", "somelib.pool"),
        ("FATAL", "somelib.pool"),
        ("ERROR", "somelib.pool"),
        ("WARN", "py.warnings"),
    ]
    assert records[0]["message"] == "opened 3 connections" and records[0]["host"] == "db"
    assert records[2]["exception"]["type"] == "ConnectionError"
    assert "deprecated thing" in records[3]["message"]


def test_bridge_on_one_logger_keeps_bad_arguments(stream: CountingStream) -> None:
    isolated = logging.getLogger("isolated.lib")
    isolated.propagate = False  # pytest's own capture handler would choke on the bad args
    handler = Logger("j", "a", stream=stream).install_logging_bridge(
        isolated, capture_warnings=False
    )
    try:
        isolated.warning("bad %d args", "x")
    finally:
        isolated.removeHandler(handler)
        isolated.propagate = True
    (record,) = lines(stream)
    assert record["message"] == "bad %d args (unformattable arguments)"
    assert record["logger"] == "isolated.lib"


def test_bridge_respects_the_logger_level(
    stream: CountingStream, root_logger: logging.Logger
) -> None:
    Logger("j", "a", level="ERROR", stream=stream).install_logging_bridge(capture_warnings=False)
    logging.getLogger("x").warning("dropped")
    logging.getLogger("x").error("kept")
    assert [r["message"] for r in lines(stream)] == ["kept"]


def test_default_stream_is_stderr_and_broken_streams_are_ignored() -> None:
    code = "from baqup_agent import Logger; Logger('j', 'a').info('to stderr')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "" and json.loads(done.stderr)["message"] == "to stderr"
    closed = io.StringIO()
    closed.close()
    Logger("j", "a", stream=closed).info("nowhere")  # must not raise


def test_redaction_keeps_lines_valid(stream: CountingStream) -> None:
    # secrets that look like JSON syntax, a level name, a number and a key
    for value in ("true", "INFO", "12345", '","level', "files"):
        Secret(value)
    log = Logger("j", "a", stream=stream)
    log.info("INFO true 12345", files=12345, flag=True, text='a","level')
    (record,) = lines(stream)
    assert record["level"] == "INFO" and record["message"] == f"{REDACTED} {REDACTED} {REDACTED}"
    assert record[REDACTED] == REDACTED and record["flag"] == REDACTED
    assert record["text"] == f"a{REDACTED}"


def test_short_secret_does_not_blank_lines(stream: CountingStream) -> None:
    Secret("")
    Secret("a")
    Logger("j", "a", stream=stream).info("a perfectly normal line")
    assert lines(stream)[0]["message"] == "a perfectly normal line"
