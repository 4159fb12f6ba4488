"""The conformance suite: check any agent, in any language, against the contract.

From the command line: ``baqup-agent conformance [options] -- COMMAND [ARGS...]``.
From pytest, in an agent's own test suite::

    from baqup_agent.conformance import run_suite

    def test_agent_conforms():
        report = run_suite(["python", "agent.py"], env={"MY_SOURCE": "{fixture}",
                                                        "MY_TARGET": "{target}"})
        report.assert_passed()  # AssertionError with the text report when a check failed

See docs/conformance.md for every check, its contract section and how to fix it.
"""

from __future__ import annotations

from baqup_agent.conformance.report import (
    EXIT_INCOMPLETE,
    CheckResult,
    Finding,
    Level,
    Report,
    Status,
    Untested,
    Verdict,
)
from baqup_agent.conformance.suite import Suite, SuiteOptions, run_suite

__all__ = [
    "EXIT_INCOMPLETE",
    "CheckResult",
    "Finding",
    "Level",
    "Report",
    "Status",
    "Suite",
    "SuiteOptions",
    "Untested",
    "Verdict",
    "run_suite",
]
