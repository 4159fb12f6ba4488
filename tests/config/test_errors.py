"""The exception taxonomy: one class per exit code, classify() with redacted summaries."""

from __future__ import annotations

import errno

import pytest

from baqup_agent import _errors as errors
from baqup_agent._errors import (
    AgentError,
    ConfigError,
    ConfigProblem,
    SchemaError,
    classify,
)
from baqup_agent._redaction import REDACTED
from baqup_agent._secret import Secret
from baqup_agent.contract import ExitCode
from baqup_agent.contract.tables import EXIT_CODES
from baqup_agent.contract.tables import RESULT_ERROR_MAX_LENGTH as SUMMARY_MAX_LENGTH

AGENT_ERRORS = [
    c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, AgentError)
]


def test_every_failure_code_has_an_exception_class() -> None:
    assert {c.exit_code for c in AGENT_ERRORS} == set(ExitCode) - {ExitCode.SUCCESS}


@pytest.mark.parametrize("cls", [c for c in AGENT_ERRORS if not issubclass(c, ConfigError)])
def test_classify_agent_errors(cls: type[AgentError]) -> None:
    exc = cls("something happened")
    summary = classify(exc)
    assert summary.exit_code == cls.exit_code
    assert summary.retryable is EXIT_CODES[cls.exit_code].retryable is exc.retryable
    assert summary.message == f"{cls.__name__}: something happened"
    assert exc.description == EXIT_CODES[cls.exit_code].meaning
    assert exc.controller_action == EXIT_CODES[cls.exit_code].controller_action


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValueError("x"), ExitCode.INTERNAL_ERROR),
        (KeyError("x"), ExitCode.INTERNAL_ERROR),
        (RecursionError(), ExitCode.INTERNAL_ERROR),
        (ConnectionRefusedError(), ExitCode.RESOURCE_UNAVAILABLE),
        (TimeoutError(), ExitCode.RESOURCE_UNAVAILABLE),
        (OSError(errno.EHOSTUNREACH, "no route"), ExitCode.RESOURCE_UNAVAILABLE),
        (OSError(errno.ENOSPC, "disk full"), ExitCode.IO_ERROR),
        (PermissionError(errno.EACCES, "denied"), ExitCode.IO_ERROR),
        (KeyboardInterrupt(), ExitCode.GENERAL_FAILURE),
    ],
)
def test_classify_other_exceptions(exc: BaseException, code: ExitCode) -> None:
    assert classify(exc).exit_code == code


def test_config_error_lists_every_problem() -> None:
    exc = ConfigError([ConfigProblem("A", "is required", "required"), ConfigProblem("B", "bad")])
    assert str(exc) == "invalid configuration (2 errors): A: is required; B: bad"
    assert classify(exc).exit_code == 64 and not classify(exc).retryable
    assert str(ConfigError("plain text")) == "invalid configuration (1 error): plain text"
    assert issubclass(SchemaError, ConfigError) and SchemaError.exit_code == 64


def test_summary_is_redacted_one_line_and_bounded() -> None:
    secret = Secret("multi\nline-canary")
    exc = RuntimeError(f"failed with {secret.reveal()} and {secret}\n  at step 2")
    summary = classify(exc).message
    assert "canary" not in summary and "\n" not in summary
    assert summary == f"RuntimeError: failed with {REDACTED} and {REDACTED} at step 2"
    long = classify(ValueError("x" * 10_000)).message
    assert len(long) == SUMMARY_MAX_LENGTH and long.endswith("...")


def test_summary_of_a_broken_exception() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert classify(Broken()).message == "Broken: <unprintable exception>"
    assert classify(ValueError()).message == "ValueError"
