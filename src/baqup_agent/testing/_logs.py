"""Log capture: the agent's log stream in memory, as lines or as parsed JSON records."""

from __future__ import annotations

import io
import json
from typing import Any


class LogCapture(io.StringIO):
    """A text stream to pass as ``log_stream`` (``run_job``) or a ``Logger``'s ``stream``.

    ``records()`` parses the JSON lines (the default ``BAQUP_LOG_FORMAT``); text lines are
    left out of it and kept by ``lines()``.
    """

    def lines(self) -> list[str]:
        """Every line written so far, without line ends."""
        return self.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far, parsed, in order."""
        return parse_records(self.getvalue())

    def count(self, text: str) -> int:
        """How many lines contain ``text``."""
        return sum(text in line for line in self.lines())


def parse_records(text: str) -> list[dict[str, Any]]:
    """The JSON log records of a captured stderr (lines that are not JSON are skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
