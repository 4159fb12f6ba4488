"""``Secret``: a value that does not leak through str, repr, format, pickle or JSON."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

from baqup_agent.redaction import REDACTED, REDACTOR


class Secret:
    """Wrap a secret string.

    ``str(s)`` and ``format(s)`` give ``[REDACTED]``, ``repr(s)`` gives
    ``Secret([REDACTED])``, and only ``s.reveal()`` returns the value. The value is
    registered with the process-wide redactor, so it is also removed from log lines
    and bus messages where it appears as a plain string. Pickling is refused;
    equality uses a constant-time comparison.
    """

    __slots__ = ("__value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret takes a str, not {type(value).__name__}")
        self.__value = value
        REDACTOR.register(value)

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value is really used."""
        return self.__value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __format__(self, format_spec: str) -> str:
        return format(REDACTED, format_spec)

    def __len__(self) -> int:
        return len(self.__value)

    def __bool__(self) -> bool:
        return bool(self.__value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other.reveal()
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.encode())

    def __hash__(self) -> int:
        return hash((Secret, self.__value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would write the value in clear)")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
