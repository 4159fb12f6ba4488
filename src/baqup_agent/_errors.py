"""The exception hierarchy of contract section 5: one class per exit code.

Raise these from an agent to end the job with a given code; ``classify`` turns any
exception into its exit code and a redacted one-line summary, unknown exceptions
into ``INTERNAL_ERROR`` (70). Meanings and the retryable flag come from the
generated exit-code table (``schema/exit-code.json``).
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from baqup_agent._redaction import redact
from baqup_agent.contract import ExitCode
from baqup_agent.contract.tables import EXIT_CODES
from baqup_agent.contract.tables import RESULT_ERROR_MAX_LENGTH as SUMMARY_MAX_LENGTH

# The config errors live with the validation that raises them (the baqup-schema
# distribution); they are part of this hierarchy and re-exported here.
from baqup_schema.errors import AgentError as AgentError
from baqup_schema.errors import ConfigError as ConfigError
from baqup_schema.errors import ConfigProblem as ConfigProblem
from baqup_schema.errors import SchemaError as SchemaError


class DataError(AgentError):
    """Input data is invalid: checksum mismatch, corrupt or unsafe archive (exit 65)."""

    exit_code = ExitCode.DATA_ERROR


class ResourceUnavailable(AgentError):
    """A resource the job needs is unreachable (exit 69)."""

    exit_code = ExitCode.RESOURCE_UNAVAILABLE


class InternalError(AgentError):
    """A bug in the agent or the SDK (exit 70)."""

    exit_code = ExitCode.INTERNAL_ERROR


class CantCreateOutput(AgentError):
    """The output could not be created or published (exit 73)."""

    exit_code = ExitCode.CANT_CREATE_OUTPUT


class IOFailure(AgentError):
    """Reading or writing data failed (exit 74)."""

    exit_code = ExitCode.IO_ERROR


class CompletedUnreported(AgentError):
    """The job finished but its result could only be spooled (exit 75)."""

    exit_code = ExitCode.COMPLETED_UNREPORTED


class PartialFailure(AgentError):
    """Some artifacts failed; the manifest lists only the good ones (exit 76)."""

    exit_code = ExitCode.PARTIAL_FAILURE


class Cancelled(AgentError):
    """The job was stopped by SIGTERM, SIGINT or a controller cancel (exit 1, status cancelled)."""

    exit_code = ExitCode.GENERAL_FAILURE


class IllegalTransition(InternalError):
    """A lifecycle transition that schema/agent-state.json does not allow."""


class ErrorSummary(NamedTuple):
    """What the result message says about a failure."""

    exit_code: ExitCode
    retryable: bool
    message: str


_RESOURCE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code an exception ends the process with."""
    if isinstance(exc, AgentError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return Cancelled.exit_code
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ExitCode.RESOURCE_UNAVAILABLE
    if isinstance(exc, OSError):
        if exc.errno in _RESOURCE_ERRNOS:
            return ExitCode.RESOURCE_UNAVAILABLE
        return ExitCode.IO_ERROR
    return ExitCode.INTERNAL_ERROR


def summarize(exc: BaseException) -> str:
    """A one-line, redacted description of ``exc``: ``Type: message``.

    Every registered secret is redacted (also one that reached the message as a
    plain string) before whitespace is folded and the line is cut to
    ``SUMMARY_MAX_LENGTH``; an exception whose ``str()`` fails is named by its type.
    """
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not turn a failure into another one
        text = "<unprintable exception>"
    # redact before folding whitespace (a secret may hold newlines) and after it (the
    # folding may join two halves into one)
    text = redact(" ".join(redact(text).split()))
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(line) > SUMMARY_MAX_LENGTH:
        line = line[: SUMMARY_MAX_LENGTH - 3] + "..."
    return line


def classify(exc: BaseException) -> ErrorSummary:
    """Turn any exception into (exit code, retryable, redacted summary).

    Exceptions the SDK does not know end with ``INTERNAL_ERROR`` (70), except
    connection failures (69), other ``OSError`` (74) and ``KeyboardInterrupt`` (1,
    cancelled).
    """
    code = exit_code_for(exc)
    return ErrorSummary(code, EXIT_CODES[code].retryable, summarize(exc))
