"""``baqup-agent conformance``: run the suite from the command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from baqup_agent.conformance.suite import Suite, SuiteOptions


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{option} wants NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def options_from_args(args: argparse.Namespace) -> SuiteOptions:
    """The suite options of the parsed ``conformance`` arguments."""
    command = list(args.agent_command)
    if command and command[0] == "--":
        command = command[1:]
    return SuiteOptions(
        command=command,
        role=args.role,
        env=_pairs(args.env, "--env"),
        slow_env=_pairs(args.slow_env, "--slow-env"),
        secret_vars=list(args.secret_var),
        real_secret_vars=list(args.real_secret_var),
        fixture=Path(args.fixture) if args.fixture else None,
        strict=args.strict,
        only=list(args.only),
        timeout=args.timeout,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        no_redis=args.no_redis,
        allow_untested=list(args.allow_untested),
        jobs=args.jobs,
        keep=args.keep,
        artifact_not_tar=args.artifact_not_tar,
        compare_command=shlex.split(args.compare_command) if args.compare_command else None,
    )


def conformance_command(args: argparse.Namespace) -> int:
    """Run the suite; print text (or JSON), write JUnit XML. Exit 0 when it passed, 1 when
    a check failed, 3 when INCOMPLETE (a scenario could not be exercised), 64 on usage."""
    try:
        options = options_from_args(args)
        report = Suite(options).run()
    except (ValueError, RuntimeError) as exc:
        print(f"baqup-agent conformance: {exc}", file=sys.stderr)
        return 64
    if args.junit_xml:
        Path(args.junit_xml).write_text(report.to_junit_xml(), encoding="utf-8")
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code
