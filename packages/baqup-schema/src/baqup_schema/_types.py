"""String formats checked as strictly as JSON Schema checks them (schema/common.json).

Hand-written (the generator cannot express these checks): the schemas name these types
with ``customTypePath``, so the generated models import them from here.

pydantic's UUID also takes hex without dashes, braces and ``urn:uuid:`` forms, and its
datetime takes a space for the ``T``, lower-case letters and unix timestamps in strings;
the schemas' formats (RFC 9562 and RFC 3339) do not. These types keep the Python objects
(``UUID``, aware ``datetime``) and first require the text form the format allows.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Strict

from baqup_schema.contract_schemas import is_path


def _text_or(python_type: type, pattern: str, what: str) -> BeforeValidator:
    """Let ``python_type`` objects through; require other input to be matching text."""
    regex = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, python_type):
            return value
        if isinstance(value, str) and regex.match(value):
            return value
        raise ValueError(f"Input should be {what}")

    return BeforeValidator(check)


# Strict(False): the text reaches the parser as a Python str once checked here, and
# strict mode would refuse any str; this check is stricter than strict mode was.
MessageId = Annotated[
    UUID,
    Strict(False),
    _text_or(
        UUID,
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z",
        "a UUID in 8-4-4-4-12 form",
    ),
]
"""common.json#/$defs/MessageId: format uuid."""

Timestamp = Annotated[
    AwareDatetime,
    Strict(False),
    _text_or(
        datetime,
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\Z",
        "an RFC 3339 date-time",
    ),
]
"""common.json#/$defs/Timestamp: format date-time."""


def _utc(value: datetime) -> datetime:
    if value.utcoffset() != timedelta(0):
        raise ValueError("Input should be a date-time in UTC")
    return value


UtcTimestamp = Annotated[
    AwareDatetime,
    Strict(False),
    _text_or(
        datetime,
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z\Z",
        "an RFC 3339 date-time in UTC with Z",
    ),
    AfterValidator(_utc),
]
"""common.json#/$defs/UtcTimestamp: format date-time ending in Z (bus messages)."""


def _path(value: str) -> str:
    if not is_path(value):
        raise ValueError("Input should be a path: not empty, no NUL, at most 4096 characters")
    return value


PathText = Annotated[str, AfterValidator(_path)]
"""format path (config.json): the text of a path, checked as the runtime checks it."""
