"""The base of the SDK's exceptions and the configuration errors.

``AgentError`` carries the exit code a failure ends the process with (its meaning and
retryable flag come from the generated exit-code table); ``ConfigError`` (exit 64)
lists every problem a config has. baqup-agent builds its one-class-per-exit-code
hierarchy (``baqup_agent.DataError``, ...) on ``AgentError``, so these are the same classes
there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple

from baqup_schema.contract import ExitCode
from baqup_schema.contract.tables import EXIT_CODES

__all__ = ["AgentError", "ConfigError", "ConfigProblem", "SchemaError"]


class AgentError(Exception):
    """Base of the SDK's exceptions; ``exit_code`` says how the process ends."""

    exit_code: ClassVar[ExitCode] = ExitCode.GENERAL_FAILURE

    @property
    def retryable(self) -> bool:
        """Whether the controller may retry the job (from the exit-code table)."""
        return EXIT_CODES[self.exit_code].retryable

    @property
    def description(self) -> str:
        """What the exit code means (from the exit-code table)."""
        return EXIT_CODES[self.exit_code].meaning

    @property
    def controller_action(self) -> str:
        """What the controller is expected to do with the exit code."""
        return EXIT_CODES[self.exit_code].controller_action


class ConfigProblem(NamedTuple):
    """One configuration error: the variable (or JSON path) and what is wrong with it."""

    variable: str
    message: str
    keyword: str = ""


class ConfigError(AgentError):
    """The configuration is missing or invalid (exit 64). ``problems`` lists every error."""

    exit_code = ExitCode.USAGE_CONFIG_ERROR

    def __init__(self, problems: Sequence[ConfigProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        self.problems: list[ConfigProblem] = list(problems)
        lines = [f"{p.variable}: {p.message}" if p.variable else p.message for p in self.problems]
        super().__init__(
            f"invalid configuration ({len(lines)} error{'s' if len(lines) != 1 else ''}): "
            + "; ".join(lines)
        )


class SchemaError(ConfigError):
    """The config schema itself is missing, unreadable or invalid (exit 64).

    Raised by ``baqup_schema`` when a schema cannot be loaded or compiled: the
    agent cannot be configured, so it is a usage error like any other config error.
    """
