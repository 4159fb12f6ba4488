"""``Secret``: a value that does not leak through str, repr, format, pickle or JSON."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any, NoReturn

from baqup_schema.redaction import REDACTED, REDACTOR

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema


class Secret:
    """Wrap a secret string.

    ``str(s)``, ``format(s)`` and f-strings give ``[REDACTED]``, ``repr(s)`` gives
    ``Secret([REDACTED])`` (so do containers holding it, and tracebacks that show
    locals), and only ``s.reveal()`` returns the value. The value is registered with
    the process-wide redactor, so it is also removed from log lines and error
    summaries where it appears as a plain string.

    Pickling is refused (it would write the value in clear); ``copy``/``deepcopy``
    return the same object. ``json.dumps`` raises ``TypeError`` as for any unknown
    type; with ``default=str`` (or orjson's ``default=str``) it writes ``[REDACTED]``.
    As a pydantic field type, a ``Secret`` validates from a string and serialises to
    ``[REDACTED]`` in JSON mode. Equality with a ``Secret`` or a ``str`` compares
    SHA-256 digests with ``hmac.compare_digest``: constant time, length included.
    """

    __slots__ = ("__value",)

    def __init__(self, value: str | Secret) -> None:
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
        # digests of equal length: compare_digest alone returns early on a length mismatch
        mine = hashlib.sha256(self.__value.encode("utf-8", "surrogatepass")).digest()
        theirs = hashlib.sha256(other.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(mine, theirs)

    def __hash__(self) -> int:
        return hash((Secret, self.__value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would write the value in clear)")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Pydantic support: a str (or Secret) in, ``[REDACTED]`` out in JSON mode."""
        from pydantic_core import core_schema

        def validate(value: object) -> Secret:
            if isinstance(value, (str, Secret)):
                return cls(value)
            raise ValueError("a secret must be a string")  # the input is not echoed

        def serialize(value: Secret, info: core_schema.SerializationInfo) -> Secret | str:
            return REDACTED if info.mode_is_json() else value

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                serialize, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The JSON Schema of a secret: a string marked ``writeOnly``, as in schema/."""
        return {"type": "string", "writeOnly": True}
