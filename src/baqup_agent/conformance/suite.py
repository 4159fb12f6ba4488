"""The suite: set up the sandbox, run the scenarios (in parallel), judge every check."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import shlex
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
from baqup_agent.conformance.checks.lifecycle import RACE
from baqup_agent.conformance.fixture import (
    MAX_FIXTURE_BYTES,
    SCALE_STEP,
    make_default_fixture,
    scaled_fixture,
)
from baqup_agent.conformance.hostile import NotTar, hostile_copy, make_outside
from baqup_agent.conformance.observed import Run, SuiteContext
from baqup_agent.conformance.report import (
    CheckResult,
    Finding,
    Level,
    Report,
    ScenarioSummary,
    Status,
    Untested,
)
from baqup_agent.conformance.runner import execute, new_run
from baqup_agent.conformance.scenarios import BY_NAME as SCENARIOS_BY_NAME
from baqup_agent.conformance.scenarios import SCENARIOS, Scenario
from baqup_agent.conformance.schemas import warm_up
from baqup_agent.contract.wire import MANIFEST_FILE
from baqup_agent.testing import RedisServer, free_port

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
    secret_vars: Sequence[str] = ()  # replaced by canaries, searched everywhere
    real_secret_vars: Sequence[str] = ()  # kept as configured (env or NAME_FILE), searched
    fixture: Path | None = None
    strict: bool = False
    only: Sequence[str] = ()
    timeout: float = 30.0  # per scenario, and per check evaluation
    heartbeat_interval: float = 0.3
    grace_period: float = 2.0
    redis: bool | None = None  # None: use redis-server when it is installed; False: no_redis
    no_redis: bool = False  # spool only: a waiver of every Redis scenario (--no-redis)
    allow_untested: Sequence[str] = ()  # checks whose unexercised scenarios are waived
    redis_server: str | None = None  # path of the binary
    jobs: int = 4  # scenarios run at the same time
    workdir: Path | str | None = None  # parent of the sandbox (default: the system temp dir)
    keep: bool = False  # keep the sandbox for inspection
    cwd: str | None = None  # working directory of the agent
    agent_id: str = "conformance-agent"
    # round trip: exit 0 when data matches; a string is split like a shell would
    compare_command: Sequence[str] | str | None = None
    scale_fixture: bool = True  # calibrate and enlarge the fixture of SIGTERM and cancel
    artifact_not_tar: bool = False  # declared: no artifact is a tar stream (restore-hostile)

    def __post_init__(self) -> None:
        # the library takes what the CLI and the docs show: strings or paths, both spellings
        if self.no_redis:
            self.redis = False
        self.no_redis = self.redis is False
        if isinstance(self.workdir, str):
            self.workdir = Path(self.workdir)
        if isinstance(self.fixture, str):
            self.fixture = Path(self.fixture)
        if isinstance(self.compare_command, str):
            self.compare_command = shlex.split(self.compare_command)
        for name in ("only", "allow_untested", "secret_vars", "real_secret_vars"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])


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
        unknown = [n for n in [*options.only, *options.allow_untested] if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(BY_NAME)}")
        taken = SUITE_VARIABLES & set(options.env) | SUITE_VARIABLES & set(options.slow_env)
        if taken:
            raise ValueError(
                f"{', '.join(sorted(taken))}: set by the suite for each scenario "
                "(see --heartbeat-interval and --grace-period)"
            )
        both = set(options.secret_vars) & set(options.real_secret_vars)
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: a canary or the real value, not both")
        self.real_secrets = {v: _real_secret(v, options.env) for v in options.real_secret_vars}
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
        chosen = {c.name for c in self.checks}
        self.not_run = [c.name for c in CHECKS if c.name not in chosen]
        self.waivers = [f"--allow-untested {n}" for n in options.allow_untested]
        if options.no_redis:
            self.waivers.append("--no-redis")
        self._scaled: dict[int, Path] = {}
        self._scale_lock = threading.Lock()

    def scenarios_of(self, check: Check) -> list[Scenario]:
        """The scenarios ``check`` judges under the selected roles."""
        names = check.scenarios or [s.name for s in SCENARIOS]
        return [SCENARIOS_BY_NAME[n] for n in names if SCENARIOS_BY_NAME[n].role in self.roles]

    def run(self) -> Report:
        """Run everything and build the report."""
        started = time.monotonic()
        opts = self.options
        parent = Path(opts.workdir or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="baqup-conformance-", dir=parent))
        redis: RedisServer | None = None
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
            not_run=self.not_run,
            waivers=self.waivers,
        )

    def _context(self, root: Path) -> tuple[SuiteContext, str]:
        opts = self.options
        canaries = {"BAQUP_REDIS_PASSWORD": make_canary("redis")}
        for var in opts.secret_vars:
            canaries[var] = make_canary(var.lower().replace("_", "-"))
        fixture = opts.fixture or make_default_fixture(root / "fixture")
        redis: RedisServer | None = None
        binary = RedisServer.find(opts.redis_server)
        if opts.redis is False:
            note = "spool only (--no-redis): Redis scenarios waived"
        elif binary is None:
            if opts.redis:
                raise RuntimeError("redis-server not found and Redis was required")
            note = "spool only (redis-server not installed): Redis scenarios untested"
        else:
            redis = RedisServer(
                root / "redis", password=canaries["BAQUP_REDIS_PASSWORD"], binary=binary
            )
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
            real_secrets=self.real_secrets,
            redis=redis,
            closed_port=free_port(),
            cwd=opts.cwd,
            compare_command=list(opts.compare_command) if opts.compare_command else None,
        )
        return ctx, note

    def _redis_untested(self, what: str) -> Untested:
        """Why a Redis part did not run, how to run it, and the waiver that covers it."""
        if self.options.no_redis:
            why, waived = "--no-redis", "--no-redis"
        else:
            why, waived = "no redis-server on this machine", ""
        return Untested(
            "redis",
            f"{what} not observed: {why}",
            "install redis-server (on PATH, or SuiteOptions.redis_server); --no-redis waives",
            waived,
        )

    def _run_scenarios(self, ctx: SuiteContext) -> dict[str, Run]:
        wanted = {s.name for c in self.checks for s in self.scenarios_of(c)}
        if any(SCENARIOS_BY_NAME[n].source for n in wanted):
            wanted.add("backup")  # the restores read its output
        if self.options.scale_fixture and any(SCENARIOS_BY_NAME[n].action for n in wanted):
            wanted.add(CALIBRATION)  # its job length sizes the interrupted jobs' fixture
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
        skipped = how = ""
        if sc.needs_redis and ctx.redis is None:
            skipped = "needs Redis, which this suite run does not have"
        elif sc.source is not None:
            backup = futures["backup"].result()
            source, skipped, how = _restore_source(backup, sc, ctx)
        if sc.action is None or not self.options.scale_fixture or skipped:
            run = new_run(sc, ctx, source)
            run.skipped, run.skip_how = skipped, how
            if sc.source == "hostile" and how == _HOW_NOT_TAR and self.options.artifact_not_tar:
                # declared, and true: had an artifact been a tar stream, it would have run
                run.skipped = f"{skipped} (declared with --artifact-not-tar)"
                run.declared_na = True
            return run if skipped else execute(run, ctx)
        return self._interrupted(sc, ctx, futures[CALIBRATION].result())

    def _interrupted(self, sc: Scenario, ctx: SuiteContext, calibration: Run) -> Run:
        """Run a SIGTERM or cancel scenario over a fixture enlarged so that the job is
        still running when the interrupt lands; if it ended first anyway, enlarge the
        fixture again and run once more (a busy machine stretches the start-up)."""
        copies = _copies_for(calibration)
        attempts = 0
        while True:
            attempts += 1
            run = new_run(sc, ctx, None)
            run.fixture = self._scaled_fixture(ctx, copies)
            execute(run, ctx)
            run.action_note += f"fixture x{copies}, attempt {attempts}; "
            if not run.missed_action(RACE) or attempts > SCALE_RETRIES or copies == MAX_COPIES:
                return run
            # at least SCALE_STEP times more; more when this run says the job is still far
            # from TARGET_JOB_SECONDS (the calibration's small job is mostly start-up)
            copies = min(MAX_COPIES, max(copies * SCALE_STEP, _copies_for(run, copies)))
            shutil.rmtree(run.workdir, ignore_errors=True)

    def _scaled_fixture(self, ctx: SuiteContext, copies: int) -> Path:
        """The fixture with ``copies - 1`` more copies of itself, made once per size."""
        if copies <= 1:
            return ctx.fixture
        with self._scale_lock:
            if copies not in self._scaled:
                self._scaled[copies] = scaled_fixture(
                    ctx.fixture, ctx.root / f"fixture-x{copies}", copies, MAX_FIXTURE_BYTES
                )
            return self._scaled[copies]

    def _judge(
        self, check: Check, runs: dict[str, Run], ctx: SuiteContext, dump: list[tuple[str, str]]
    ) -> CheckResult:
        names = [s.name for s in self.scenarios_of(check)]
        observed = [runs[n] for n in names if n in runs and not runs[n].skipped]
        result = CheckResult(check.name, check.section, check.title, Status.PASS, rules=check.rules)
        result.scenarios = [r.scenario.name for r in observed]
        result.scenario_seconds = sum(r.duration for r in observed)
        declared = [runs[n] for n in names if n in runs and runs[n].declared_na]
        # a skipped scenario leaves untested the checks made for it; the checks of every
        # scenario (exit codes, log lines...) judge those that ran
        explicit = names if check.scenarios else []
        for n in explicit:
            if n in runs and runs[n].skipped and not runs[n].declared_na:
                if SCENARIOS_BY_NAME[n].needs_redis and ctx.redis is None:
                    result.untested.append(self._redis_untested(f"scenario {n}"))
                else:
                    how = runs[n].skip_how or check.fix
                    result.untested.append(Untested(n, runs[n].skipped, how))
        if check.redis_part and ctx.redis is None:
            result.untested.append(self._redis_untested(check.redis_part))
        if not observed and declared and not result.untested:
            result.status = Status.NOT_APPLICABLE
            result.reason = "; ".join(r.skipped for r in declared)
            return result
        if not observed:
            return self._untested_status(check, result)
        inp = CheckInput(observed, ctx, runs, dump)
        t0 = time.monotonic()
        # each check is evaluated in its own thread so that one that hangs is cut off
        pool = cf.ThreadPoolExecutor(max_workers=1)
        try:
            result.findings = pool.submit(lambda: list(check.evaluate(inp))).result(
                timeout=self.options.timeout
            )
        except NotApplicable as exc:
            where = exc.scenario or check.name
            result.untested.append(Untested(where, str(exc), exc.how or check.fix))
            result.findings = []
        except cf.TimeoutError:
            timeout = self.options.timeout
            result.findings = [
                Finding(Level.MUST, f"the check did not finish within {timeout:g} s")
            ]
        finally:
            pool.shutdown(wait=False)
        result.duration_seconds = time.monotonic() - t0
        result.untested += inp.untested
        result.status = _status(result, self.options.strict)
        return self._untested_status(check, result)

    def _untested_status(self, check: Check, result: CheckResult) -> CheckResult:
        """Mark waived parts; an unwaived part makes a passing check UNTESTED."""
        if check.name in self.options.allow_untested:
            waiver = f"--allow-untested {check.name}"
            result.untested = [
                u if u.waived_by else Untested(u.scenario, u.why, u.how, waiver)
                for u in result.untested
            ]
        if result.status is Status.FAIL:
            return result
        if any(not u.waived_by for u in result.untested):
            result.status = Status.UNTESTED
        elif result.untested and {u.scenario for u in result.untested} >= set(result.scenarios):
            result.status = Status.WAIVED  # nothing of it was exercised, by request
        result.reason = "; ".join(u.why for u in result.untested)
        return result


CALIBRATION = "backup-spool"
"""The scenario whose job, neither throttled nor interrupted, sizes the interrupted ones."""
TARGET_JOB_SECONDS = 8.0  # how long the interrupted scenarios' job would last (calibrated)
SCALE_RETRIES = 2  # more runs, each with at least SCALE_STEP times the copies, when too fast
MAX_COPIES = 4096  # not-a-schema-value: a count of copies


def _real_secret(name: str, env: Mapping[str, str]) -> str:
    """The value of a secret kept as configured: ``--env NAME=...``, else the caller's
    environment, else the file ``NAME_FILE`` names (either way)."""
    value = env.get(name, os.environ.get(name))
    if value is None:
        path = env.get(f"{name}_FILE", os.environ.get(f"{name}_FILE"))
        if path is None:
            raise ValueError(f"--real-secret-var {name}: neither {name} nor {name}_FILE is set")
        try:
            value = Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            raise ValueError(f"--real-secret-var {name}: {name}_FILE: {exc.strerror}") from None
    if len(value) < MIN_REAL_SECRET:
        raise ValueError(
            f"--real-secret-var {name}: shorter than {MIN_REAL_SECRET} characters, too short "
            "to search for without matching everywhere"
        )
    return value


MIN_REAL_SECRET = 6


def _copies_for(run: Run, copies: int = 1) -> int:
    """How many copies of the fixture make the job last TARGET_JOB_SECONDS, judged by the
    work time (from ``running`` to the exit) of ``run``, which read ``copies`` of them."""
    if run.skipped or run.running_seen_at is None or not run.ended:
        return copies
    work = max(run.ended - run.running_seen_at, 0.01)
    return max(1, min(MAX_COPIES, math.ceil(copies * TARGET_JOB_SECONDS / work)))


def _status(result: CheckResult, strict: bool) -> Status:
    levels = {f.level for f in result.findings}
    if Level.MUST in levels or (strict and Level.SHOULD in levels):
        return Status.FAIL
    return Status.WARN if Level.SHOULD in levels else Status.PASS


def _restore_source(backup: Run, sc: Scenario, ctx: SuiteContext) -> tuple[Path | None, str, str]:
    """The directory a restore scenario reads: the backup's output, a corrupted copy or a
    hostile one; or why there is none and how to have one."""
    out = backup.output
    if not (out / MANIFEST_FILE).is_file():
        return None, "the backup scenario published no output to restore", _FIX_BACKUP
    if sc.source == "backup":
        return out, "", ""
    if sc.source == "hostile":
        outside = ctx.root / sc.name / "outside"
        make_outside(outside)
        try:
            hostile_copy(out, ctx.root / sc.name / "hostile-source" / backup.job_id, outside)
        except NotTar as exc:
            return None, str(exc), _HOW_NOT_TAR
        return ctx.root / sc.name / "hostile-source" / backup.job_id, "", ""
    copy = ctx.root / sc.name / "corrupt-source" / backup.job_id
    shutil.copytree(out, copy)
    files = [p for p in copy.rglob("*") if p.is_file() and p.name != MANIFEST_FILE]
    victim = max(files, key=lambda p: p.stat().st_size, default=None)
    data = bytearray(victim.read_bytes() if victim is not None else b"")
    if victim is None or not data:
        return None, "the backup's output holds no non-empty artifact to corrupt", _FIX_BACKUP
    data[len(data) // 2] ^= 0xFF  # same size, different checksum
    victim.write_bytes(bytes(data))
    return copy, "", ""


_FIX_BACKUP = "make the backup scenario publish a valid output (see the manifest check)"
_HOW_NOT_TAR = (
    "the suite can only make a tar stream hostile; an agent whose artifact is another "
    "format declares it with --artifact-not-tar"
)


def _dump_redis(redis: RedisServer) -> list[tuple[str, str]]:
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
