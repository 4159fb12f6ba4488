"""The suite: set up the sandbox, run the scenarios (in parallel), judge every check."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baqup_agent.conformance.canary import make_canary
from baqup_agent.conformance.checks import BY_NAME, CHECKS, Check, CheckInput, NotApplicable
from baqup_agent.conformance.fixture import make_default_fixture
from baqup_agent.conformance.observed import Run, SuiteContext
from baqup_agent.conformance.redis_server import LocalRedis, free_port
from baqup_agent.conformance.report import (
    CheckResult,
    Finding,
    Level,
    Report,
    ScenarioSummary,
    Status,
)
from baqup_agent.conformance.runner import execute, new_run
from baqup_agent.conformance.scenarios import BY_NAME as SCENARIOS_BY_NAME
from baqup_agent.conformance.scenarios import SCENARIOS, Scenario
from baqup_agent.conformance.schemas import warm_up

SUITE_VARIABLES = frozenset(
    {"BAQUP_JOB_ID", "BAQUP_AGENT_ID", "BAQUP_ROLE", "BAQUP_STAGING_DIR", "BAQUP_RESTORE_SOURCE",
     "BAQUP_REDIS_URL", "BAQUP_REDIS_PASSWORD", "BAQUP_HEARTBEAT_INTERVAL", "BAQUP_GRACE_PERIOD",
     "BAQUP_LOG_FORMAT"}
)  # fmt: skip
"""Variables each scenario sets itself; --env may not override them."""


@dataclass
class SuiteOptions:
    """How to run the suite; every field has the CLI option of the same name."""

    command: list[str]
    role: str = "both"  # backup, restore or both
    env: Mapping[str, str] = field(default_factory=dict)
    slow_env: Mapping[str, str] = field(default_factory=dict)
    secret_vars: Sequence[str] = ()
    fixture: Path | None = None
    strict: bool = False
    only: Sequence[str] = ()
    timeout: float = 30.0  # per scenario, and per check evaluation
    heartbeat_interval: float = 0.3
    grace_period: float = 2.0
    redis: bool | None = None  # None: use redis-server when it is installed
    redis_server: str | None = None  # path of the binary
    jobs: int = 4  # scenarios run at the same time
    workdir: Path | None = None  # parent of the sandbox (default: the system temp dir)
    keep: bool = False  # keep the sandbox for inspection
    cwd: str | None = None  # working directory of the agent
    agent_id: str = "conformance-agent"
    compare_command: Sequence[str] | None = None  # round trip: exit 0 when data matches


def run_suite(command: Sequence[str], **options: Any) -> Report:
    """Run the conformance suite against ``command`` and return the report.

    ``options`` are the fields of ``SuiteOptions``; for example
    ``run_suite([sys.executable, "agent.py"], env={"MY_SOURCE": "{fixture}"})``.
    """
    return Suite(SuiteOptions(list(command), **options)).run()


class Suite:
    """One run of the suite with its sandbox and (optionally) its redis-server."""

    def __init__(self, options: SuiteOptions) -> None:
        if not options.command:
            raise ValueError("no agent command given (baqup-agent conformance -- COMMAND ...)")
        if options.role not in ("backup", "restore", "both"):
            raise ValueError(f"role must be backup, restore or both, not {options.role!r}")
        unknown = [name for name in options.only if name not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(BY_NAME)}")
        taken = SUITE_VARIABLES & set(options.env) | SUITE_VARIABLES & set(options.slow_env)
        if taken:
            raise ValueError(
                f"{', '.join(sorted(taken))}: set by the suite for each scenario "
                "(see --heartbeat-interval and --grace-period)"
            )
        if options.fixture is not None and not Path(options.fixture).is_dir():
            raise ValueError(f"--fixture {options.fixture}: not a directory")
        self.options = options
        roles = {"backup", "restore"} if options.role == "both" else {options.role}
        self.checks = [
            c for c in CHECKS if (not options.only or c.name in options.only) and c.roles & roles
        ]
        self.roles = roles
        if not self.checks:
            raise ValueError(f"no check selected for role {options.role} (see --only)")

    def scenarios_of(self, check: Check) -> list[Scenario]:
        """The scenarios ``check`` judges under the selected roles."""
        names = check.scenarios or [s.name for s in SCENARIOS]
        return [SCENARIOS_BY_NAME[n] for n in names if SCENARIOS_BY_NAME[n].role in self.roles]

    def run(self) -> Report:
        """Run everything and build the report."""
        started = time.monotonic()
        opts = self.options
        parent = opts.workdir or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="baqup-conformance-", dir=parent))
        redis: LocalRedis | None = None
        threading.Thread(target=warm_up, daemon=True).start()
        try:
            ctx, redis_note = self._context(root)
            redis = ctx.redis
            runs = self._run_scenarios(ctx)
            dump = _dump_redis(redis) if redis is not None else []
            results = [self._judge(check, runs, ctx, dump) for check in self.checks]
            summaries = [_summary(r) for r in runs.values()]
        finally:
            if redis is not None:
                redis.stop()
            if not opts.keep:
                shutil.rmtree(root, ignore_errors=True)
        return Report(
            command=list(opts.command),
            role=opts.role,
            strict=opts.strict,
            redis=redis_note,
            checks=results,
            scenarios=summaries,
            duration_seconds=time.monotonic() - started,
            sandbox=str(root) if opts.keep else "",
        )

    def _context(self, root: Path) -> tuple[SuiteContext, str]:
        opts = self.options
        canaries = {"BAQUP_REDIS_PASSWORD": make_canary("redis")}
        for var in opts.secret_vars:
            canaries[var] = make_canary(var.lower().replace("_", "-"))
        fixture = opts.fixture or make_default_fixture(root / "fixture")
        redis: LocalRedis | None = None
        binary = LocalRedis.find(opts.redis_server)
        if opts.redis is False:
            note = "spool only (--no-redis): Redis scenarios not applicable"
        elif binary is None:
            if opts.redis:
                raise RuntimeError("redis-server not found and Redis was required")
            note = "spool only (redis-server not installed): Redis scenarios not applicable"
        else:
            redis = LocalRedis(binary, root / "redis", canaries["BAQUP_REDIS_PASSWORD"])
            redis.start()
            note = f"redis-server {redis.version} on 127.0.0.1:{redis.port}, and the spool"
        ctx = SuiteContext(
            command=list(opts.command),
            root=root,
            fixture=Path(fixture).resolve(),
            agent_id=opts.agent_id,
            heartbeat_interval=opts.heartbeat_interval,
            grace_period=opts.grace_period,
            timeout=opts.timeout,
            env=dict(opts.env),
            slow_env=dict(opts.slow_env),
            canaries=canaries,
            redis=redis,
            closed_port=free_port(),
            cwd=opts.cwd,
            compare_command=list(opts.compare_command) if opts.compare_command else None,
        )
        return ctx, note

    def _run_scenarios(self, ctx: SuiteContext) -> dict[str, Run]:
        wanted = {s.name for c in self.checks for s in self.scenarios_of(c)}
        if wanted & {"restore", "restore-corrupt"}:
            wanted.add("backup")  # the restores read its output
        chosen = [s for s in SCENARIOS if s.name in wanted]
        runs: dict[str, Run] = {}
        with cf.ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures: dict[str, cf.Future[Run]] = {}
            for sc in chosen:  # in SCENARIOS order: "backup" is submitted before the restores
                futures[sc.name] = pool.submit(self._scenario, sc, ctx, futures)
            for name, future in futures.items():
                runs[name] = future.result()
        return runs

    def _scenario(self, sc: Scenario, ctx: SuiteContext, futures: dict[str, cf.Future[Run]]) -> Run:
        source = None
        skipped = ""
        if sc.needs_redis and ctx.redis is None:
            skipped = "needs Redis, which this suite run does not have"
        elif sc.source is not None:
            backup = futures["backup"].result()
            source, skipped = _restore_source(backup, sc, ctx)
        run = new_run(sc, ctx, source)
        if skipped:
            run.skipped = skipped
            return run
        return execute(run, ctx)

    def _judge(
        self, check: Check, runs: dict[str, Run], ctx: SuiteContext, dump: list[tuple[str, str]]
    ) -> CheckResult:
        names = [s.name for s in self.scenarios_of(check)]
        observed = [runs[n] for n in names if n in runs and not runs[n].skipped]
        result = CheckResult(check.name, check.section, check.title, Status.PASS)
        result.scenarios = [r.scenario.name for r in observed]
        result.scenario_seconds = sum(r.duration for r in observed)
        skipped = [f"{n}: {runs[n].skipped}" for n in names if n in runs and runs[n].skipped]
        if not observed:
            result.status = Status.NOT_APPLICABLE
            result.reason = "; ".join(skipped) or "no scenario of the selected role"
            return result
        inp = CheckInput(observed, ctx, runs, dump)
        t0 = time.monotonic()
        # each check is evaluated in its own thread so that one that hangs is cut off
        pool = cf.ThreadPoolExecutor(max_workers=1)
        try:
            result.findings = pool.submit(lambda: list(check.evaluate(inp))).result(
                timeout=self.options.timeout
            )
        except NotApplicable as exc:
            result.status = Status.NOT_APPLICABLE
            result.reason = str(exc)
        except cf.TimeoutError:
            timeout = self.options.timeout
            result.findings = [
                Finding(Level.MUST, f"the check did not finish within {timeout:g} s")
            ]
        finally:
            pool.shutdown(wait=False)
        result.duration_seconds = time.monotonic() - t0
        if result.status is not Status.NOT_APPLICABLE:
            result.status = _status(result, self.options.strict)
            if skipped:
                result.reason = "; ".join(skipped)
        return result


def _status(result: CheckResult, strict: bool) -> Status:
    levels = {f.level for f in result.findings}
    if Level.MUST in levels or (strict and Level.SHOULD in levels):
        return Status.FAIL
    return Status.WARN if Level.SHOULD in levels else Status.PASS


def _restore_source(backup: Run, sc: Scenario, ctx: SuiteContext) -> tuple[Path | None, str]:
    """The directory a restore scenario reads: the backup's output or a corrupted copy."""
    out = backup.output
    if not (out / "manifest.json").is_file():
        return None, "the backup scenario published no output to restore"
    if sc.source == "backup":
        return out, ""
    copy = ctx.root / sc.name / "corrupt-source" / backup.job_id
    shutil.copytree(out, copy)
    files = [p for p in copy.rglob("*") if p.is_file() and p.name != "manifest.json"]
    if not files:
        return None, "the backup's output holds no artifact to corrupt"
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    if not data:
        return None, "the backup's artifacts are empty"
    data[len(data) // 2] ^= 0xFF  # same size, different checksum
    victim.write_bytes(bytes(data))
    return copy, ""


def _dump_redis(redis: LocalRedis) -> list[tuple[str, str]]:
    """Every key of the suite's Redis with its content as text (for the secrets check)."""
    client = redis.client()
    out: list[tuple[str, str]] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            if kind == "string":
                value = str(client.get(key))
            elif kind == "stream":
                entries = client.xrange(key)
                value = "\n".join(f"{k}={v}" for _, f in entries for k, v in f.items())
            else:
                value = f"({kind})"
            out.append((key, value))
    finally:
        client.close()
    return out


def _summary(run: Run) -> ScenarioSummary:
    note = run.skipped or run.action_note.strip("; ")
    return ScenarioSummary(
        name=run.scenario.name,
        description=run.scenario.description,
        job_id=run.job_id,
        exit_code=run.exit_code,
        duration_seconds=run.duration,
        timed_out=run.timed_out,
        note=note,
    )
