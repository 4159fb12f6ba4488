"""The baqup-agent command: pre-flight config validation, job watching, conformance,
new projects.

Each subcommand's code lives in the module it belongs to and is imported only when
that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from baqup_agent import __version__
from baqup_agent._usage import UsageParser

# subcommand -> (module, function taking the parsed arguments and returning an exit code)
_COMMANDS = {
    "validate-config": ("baqup_agent._cli", "validate_config_command"),
    "watch": ("baqup_agent._reader", "watch_command"),
    "replay": ("baqup_agent._bus", "replay_command"),
    "conformance": ("baqup_agent.conformance.cli", "conformance_command"),
    "new": ("baqup_agent._scaffold", "new_command"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = UsageParser(prog="baqup-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"baqup-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate-config",
        help="validate the environment against an agent's config schema (exit 0 or 64)",
    )
    p.add_argument("--schema", required=True, help="the agent's agent-schema.json")
    p.add_argument("--prefix", default="BAQUP_", help="prefix of the contract's variables")
    p.add_argument("--json", action="store_true", help="print the errors as JSON")

    p = sub.add_parser("watch", help="follow a job's events and print one line per event")
    p.add_argument("job_id", help="the job to follow (its BAQUP_JOB_ID)")
    p.add_argument("--redis-url", help="Redis URL (default: $BAQUP_REDIS_URL)")
    p.add_argument("--spool-dir", help="spool directory to read as well")
    p.add_argument("--no-follow", action="store_true", help="print what is there and exit")
    p.add_argument("--json", action="store_true", help="print each event as JSON")

    p = sub.add_parser(
        "replay",
        help="deliver a job's spool to Redis once, without running the agent "
        "(exit 0, 64, 69 Redis unreachable, 74 spool unusable)",
    )
    p.add_argument("job_id", help="the job whose spool to replay")
    p.add_argument("--spool-dir", required=True, help="the spool directory (BAQUP_SPOOL_DIR)")
    p.add_argument("--redis-url", help="Redis URL (default: $BAQUP_REDIS_URL)")

    p = sub.add_parser("conformance", help="check an agent against the contract")
    p.add_argument(
        "--role",
        choices=["backup", "restore", "both"],
        default="both",
        help="which role's scenarios to run (default: both)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    p.add_argument("--strict", action="store_true", help="SHOULD rules fail too")
    p.add_argument("--fixture", help="directory of test data the agent backs up")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for every run of the agent (repeatable)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CHECK",
        help="run only this check (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per scenario")
    p.add_argument(
        "--slow-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment that makes a job last (SIGTERM, cancel, heartbeats)",
    )
    p.add_argument(
        "--secret-var",
        action="append",
        default=[],
        metavar="NAME",
        help="an agent secret variable to inject a canary into (also NAME_FILE)",
    )
    p.add_argument(
        "--real-secret-var",
        action="append",
        default=[],
        metavar="NAME",
        help="a secret the agent really needs: its value (from --env, the environment or "
        "NAME_FILE) is passed on unchanged and searched for in every output",
    )
    p.add_argument(
        "--artifact-not-tar",
        action="store_true",
        help="no artifact is a tar stream: the hostile restore does not apply (checked)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=0.3,
        metavar="S",
        help="BAQUP_HEARTBEAT_INTERVAL of the scenarios, in seconds",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=2.0,
        metavar="S",
        help="BAQUP_GRACE_PERIOD of the scenarios, in seconds",
    )
    p.add_argument(
        "--no-redis", action="store_true", help="spool-only scenarios (a waiver of Redis)"
    )
    p.add_argument(
        "--allow-untested",
        action="append",
        default=[],
        metavar="CHECK",
        help="waive CHECK's scenarios that could not be exercised (else: INCOMPLETE, exit 3)",
    )
    p.add_argument("--jobs", type=int, default=4, help="scenarios run at the same time")
    p.add_argument("--keep", action="store_true", help="keep the sandbox for inspection")
    p.add_argument(
        "--compare-command",
        metavar="CMD",
        help="judges the round trip (exit 0: {fixture} and {target} hold the same "
        "data) instead of a byte-for-byte comparison of the trees",
    )
    p.add_argument(
        "agent_command",
        nargs=argparse.REMAINDER,
        help="the command that runs the agent, after --: -- COMMAND [ARGS...]",
    )

    p = sub.add_parser(
        "new",
        help="create a ready project for a new agent (exit 0, 64 bad NAME, 73 it exists)",
    )
    p.add_argument("name", metavar="NAME", help="the agent's name, e.g. mysql-agent")
    p.add_argument(
        "--role",
        choices=["backup", "restore", "both"],
        default="both",
        help="which methods the agent implements (default: both)",
    )
    p.add_argument(
        "--kind",
        choices=["directory", "command"],
        default="directory",
        help="directory: back up files; command: wrap a command-line tool (ctx.run_child)",
    )
    p.add_argument("--directory", help="where to create the project (default: ./NAME)")
    return parser


def validate_config_command(args: argparse.Namespace) -> int:
    """``baqup-agent validate-config --schema FILE [--prefix P] [--json]``.

    Loads the environment as ``load_config`` does (base contract + agent schema);
    prints ``ok: N variables`` and returns 0 when valid, one ``VARIABLE: message``
    line per error and 64 when not. ``--json`` prints one JSON document instead.
    """
    from baqup_agent._config import load_config
    from baqup_agent._errors import ConfigError

    try:
        config = load_config(args.schema, prefix=args.prefix)
    except ConfigError as exc:
        problems = exc.problems
        if args.json:
            errors = [p._asdict() for p in problems]
            _print(json.dumps({"valid": False, "errors": errors}))
        else:
            for p in problems:
                _print(f"{p.variable}: {p.message}" if p.variable else p.message)
        return int(ConfigError.exit_code)
    if args.json:
        _print(json.dumps({"valid": True, "variables": len(config)}))
    else:
        _print(f"ok: {len(config)} variables")
    return 0


def _print(line: str) -> None:
    from baqup_agent._redaction import REDACTOR

    # names from the environment may hold undecodable bytes (surrogates): escape them
    sys.stdout.write(REDACTOR.redact(line).encode("utf-8", "backslashreplace").decode() + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``baqup-agent``."""
    args = build_parser().parse_args(argv)
    module, func = _COMMANDS[args.command]
    command = getattr(importlib.import_module(module), func)
    code: int = command(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
