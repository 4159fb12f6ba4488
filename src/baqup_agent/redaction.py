"""The registry of known secret values and the redaction of text that may hold them.

Every ``Secret`` registers its value here, so a secret that reaches a log line or a
bus message as a plain string is still caught: in its raw form and in the forms it
takes on the way (JSON-escaped, URL-encoded, base64). Values shorter than
``MIN_SECRET_LENGTH`` are not searched for: replacing every "a" would destroy the
output without protecting anything (an empty secret turned a peer's logs into
asterisks).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 3


def _forms(value: str) -> set[str]:
    """The spellings of ``value`` that may appear in output."""
    raw = value.encode("utf-8")
    forms = {
        value,
        json.dumps(value)[1:-1],  # JSON-escaped (quotes, backslashes, control chars)
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),  # URL path form keeps "/"
    }
    # base64 of the value alone: the encoder's alignment decides the spelling, so a value
    # embedded mid-stream is out of reach; canary tests use this same encoding.
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        token = enc(raw).decode("ascii")
        forms.add(token)
        forms.add(token.rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """A set of secret values and one compiled pattern that finds any of their forms.

    Thread-safe; ``redact`` is the hot path (every log line goes through it) and costs
    one ``str.__contains__`` check per line when nothing is registered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str) -> None:
        """Remember ``value`` as a secret (ignored when shorter than MIN_SECRET_LENGTH)."""
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            forms: set[str] = set()
            for v in self._values:
                forms |= _forms(v)
            # longest first, so a form that contains another one is replaced whole
            alternatives = sorted(forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile("|".join(re.escape(f) for f in alternatives))

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        """``text`` with every known secret form replaced by ``[REDACTED]``."""
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def clear(self) -> None:
        """Forget every value (for tests)."""
        with self._lock:
            self._values.clear()
            self._pattern = None


REDACTOR = Redactor()
"""The process-wide registry: Secrets register here and the logger, bus and error
summaries redact with it."""


def redact(text: str) -> str:
    """Redact ``text`` with the process-wide registry."""
    return REDACTOR.redact(text)
