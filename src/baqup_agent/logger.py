"""Structured logging (contract section 6). PROVISIONAL: to be completed (issue 3).

One JSON object per line on standard error, flushed per line, with the required
fields of schema/log-record.json; every known secret is redacted.
"""

from __future__ import annotations

import sys
import traceback
from datetime import datetime, timezone
from typing import IO, Any

import orjson

from baqup_agent.contract import LogLevel
from baqup_agent.redaction import REDACTOR, Redactor


def _default(obj: Any) -> str:
    return str(obj)  # Secret -> [REDACTED], enums -> value, paths -> str


class Logger:
    """Write structured log lines for one job and agent."""

    def __init__(
        self,
        job_id: str,
        agent_id: str,
        level: LogLevel | str = LogLevel.INFO,
        format: str = "json",
        *,
        stream: IO[str] | None = None,
        redactor: Redactor | None = None,
        **fields: Any,
    ) -> None:
        self.job_id = job_id
        self.agent_id = agent_id
        self.level = LogLevel[level] if isinstance(level, str) else LogLevel(level)
        self.format = format
        self._stream = stream
        self._redactor = redactor or REDACTOR
        self._fields = fields

    def bind(self, **fields: Any) -> Logger:
        """A logger that adds ``fields`` to every line."""
        return Logger(
            self.job_id,
            self.agent_id,
            self.level,
            self.format,
            stream=self._stream,
            redactor=self._redactor,
            **{**self._fields, **fields},
        )

    def log(
        self, level: LogLevel, message: str, /, *, exc: BaseException | None = None, **fields: Any
    ) -> None:
        """Write one line at ``level`` with structured ``fields``."""
        if level < self.level:
            return
        record: dict[str, Any] = {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace(
                "+00:00", "Z"
            ),
            "level": level.name,
            "message": message,
            "job_id": self.job_id,
            "agent_id": self.agent_id,
            **self._fields,
            **fields,
        }
        if exc is not None:
            record["exception"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "stack": "".join(traceback.format_exception(exc)),
            }
        line = orjson.dumps(record, default=_default).decode()
        line = self._redactor.redact(line)
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def trace(self, message: str, /, **fields: Any) -> None:
        """Log at TRACE."""
        self.log(LogLevel.TRACE, message, **fields)

    def debug(self, message: str, /, **fields: Any) -> None:
        """Log at DEBUG."""
        self.log(LogLevel.DEBUG, message, **fields)

    def info(self, message: str, /, **fields: Any) -> None:
        """Log at INFO."""
        self.log(LogLevel.INFO, message, **fields)

    def warn(self, message: str, /, **fields: Any) -> None:
        """Log at WARN."""
        self.log(LogLevel.WARN, message, **fields)

    warning = warn

    def error(self, message: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        """Log at ERROR, with an exception when given."""
        self.log(LogLevel.ERROR, message, exc=exc, **fields)

    def fatal(self, message: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        """Log at FATAL, with an exception when given."""
        self.log(LogLevel.FATAL, message, exc=exc, **fields)
