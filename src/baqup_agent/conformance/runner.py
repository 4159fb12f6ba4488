"""Running one scenario: the agent as a subprocess in its sandbox, with a monitor.

The environment is built from scratch for each scenario; everything observed is kept
in a ``Run`` for the checks to judge.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from baqup_agent._keys import SPOOL_SUBDIR
from baqup_agent.conformance.inotify import TreeWatch
from baqup_agent.conformance.monitor import Monitor
from baqup_agent.conformance.observed import Run, SuiteContext
from baqup_agent.conformance.scenarios import Scenario


def expand(value: str, run: Run, ctx: SuiteContext) -> str:
    """``value`` with the placeholders expanded.

    {fixture} the test data, {target} the restore target, {data} the fixture for a
    backup and the target for a restore (for agents with one "where the data lives"
    variable), {staging}, {job_id} and {workdir} of the scenario.
    """
    fixture = run.fixture or ctx.fixture
    data = run.target if run.scenario.role == "restore" else fixture
    for key, sub in (
        ("{fixture}", str(fixture)),
        ("{data}", str(data)),
        ("{target}", str(run.target)),
        ("{staging}", str(run.staging)),
        ("{job_id}", run.job_id),
        ("{workdir}", str(run.workdir)),
    ):
        value = value.replace(key, sub)
    return value


def build_env(run: Run, ctx: SuiteContext) -> dict[str, str]:
    """The agent's whole environment, from scratch: nothing leaks in from the caller's."""
    sc = run.scenario
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(run.workdir / "home"),
        "TMPDIR": str(run.workdir / "tmp"),
        # not BAQUP_*: an agent may (rightly) reject unknown variables of the contract's prefix
        "CONFORMANCE_FIXTURE": str(run.fixture or ctx.fixture),
        "CONFORMANCE_TARGET": str(run.target),
        "BAQUP_JOB_ID": run.job_id,
        "BAQUP_AGENT_ID": ctx.agent_id,
        "BAQUP_ROLE": sc.role,
        "BAQUP_STAGING_DIR": str(run.staging),
        "BAQUP_HEARTBEAT_INTERVAL": f"{ctx.heartbeat_interval:g}",
        "BAQUP_GRACE_PERIOD": f"{ctx.grace_period:g}",
        "BAQUP_LOG_FORMAT": "json",
        "BAQUP_LOG_LEVEL": "DEBUG",
    }
    if run.restore_source is not None:
        env["BAQUP_RESTORE_SOURCE"] = str(run.restore_source)
    password = ctx.canaries["BAQUP_REDIS_PASSWORD"]
    if run.bus == "redis" and ctx.redis is not None:
        env["BAQUP_REDIS_URL"] = ctx.redis.url
    elif run.bus == "redis-down":
        env["BAQUP_REDIS_URL"] = f"redis://127.0.0.1:{ctx.closed_port}/0"
    if sc.secrets == "url" and "BAQUP_REDIS_URL" in env:
        from urllib.parse import quote

        env["BAQUP_REDIS_URL"] = env["BAQUP_REDIS_URL"].replace(
            "redis://", f"redis://:{quote(password, safe='')}@"
        )
    for var, value in ctx.canaries.items():
        if var == "BAQUP_REDIS_PASSWORD" and sc.secrets == "url":
            continue
        if sc.secrets == "env":
            env[var] = value
        else:
            path = run.workdir / "secrets" / var
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_text(value + "\n", encoding="utf-8")
            path.chmod(0o600)
            env[f"{var}_FILE"] = str(path)
    if sc.heartbeat_ttl:  # a TTL other than the default, so the check sees it honoured
        env["BAQUP_HEARTBEAT_TTL"] = f"{sc.heartbeat_ttl * ctx.heartbeat_interval:g}"
    if sc.log_level:
        env["BAQUP_LOG_LEVEL"] = sc.log_level
    for var, value in ctx.real_secrets.items():
        # as the caller configured it: the value itself, or the file that holds it
        if var not in ctx.env and f"{var}_FILE" not in ctx.env:
            if var in os.environ:
                env[var] = value
            else:
                env[f"{var}_FILE"] = os.environ[f"{var}_FILE"]
    env.update({k: expand(v, run, ctx) for k, v in ctx.env.items()})
    if sc.slow:
        env.update({k: expand(v, run, ctx) for k, v in ctx.slow_env.items()})
    if sc.fault == "missing-job-id":
        del env["BAQUP_JOB_ID"]
    elif sc.fault == "bad-interval":
        env["BAQUP_HEARTBEAT_INTERVAL"] = "-1"
    elif sc.fault == "missing-restore-source":
        env.pop("BAQUP_RESTORE_SOURCE", None)
    return env


def new_run(sc: Scenario, ctx: SuiteContext, restore_source: Path | None = None) -> Run:
    """A Run with its sandbox directories created (not started yet)."""
    job_id = f"conf-{sc.name}-{uuid.uuid4().hex[:6]}"
    workdir = ctx.root / sc.name
    staging = workdir / "staging"
    for d in (workdir / "home", workdir / "tmp", staging, workdir / "target"):
        d.mkdir(parents=True, exist_ok=True)
    bus = sc.bus if sc.bus != "redis" or ctx.redis is not None else "spool"
    return Run(
        scenario=sc,
        job_id=job_id,
        workdir=workdir,
        staging=staging,
        spool=staging / SPOOL_SUBDIR / job_id,
        target=workdir / "target",
        bus=bus,
        restore_source=restore_source,
    )


def execute(run: Run, ctx: SuiteContext) -> Run:
    """Run the agent for ``run``'s scenario and record what it does."""
    run.env = build_env(run, ctx)
    spool_dir = run.env.get("BAQUP_SPOOL_DIR")
    if spool_dir:
        run.spool = Path(spool_dir) / run.job_id
    command = [expand(a, run, ctx) for a in ctx.command]
    watch = TreeWatch.open(run.staging)
    run.started = time.monotonic()
    try:
        proc = subprocess.Popen(
            command,
            env=run.env,
            cwd=ctx.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: children are killed with it
        )
    except OSError as exc:
        if watch is not None:
            watch.close()
        raise RuntimeError(f"cannot run the agent {command[0]!r}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_read_lines, args=(proc.stderr, run.stderr), daemon=True),
        threading.Thread(target=_read_lines, args=(proc.stdout, run.stdout), daemon=True),
    ]
    for t in readers:
        t.start()
    monitor = Monitor(run, ctx, proc, watch)
    try:
        monitor.watch()
    finally:
        if proc.poll() is None:
            _kill(proc)
        run.exit_code = proc.wait()
        _kill(proc)  # whatever the agent started and left behind
        for t in readers:
            t.join(timeout=5)
        monitor.finish()
        # kept with --keep, for a look at what the agent said
        (run.workdir / "stderr.log").write_text("\n".join(run.stderr) + "\n", encoding="utf-8")
        (run.workdir / "stdout.log").write_text("\n".join(run.stdout) + "\n", encoding="utf-8")
    return run


def _read_lines(stream: IO[bytes], sink: list[str]) -> None:
    for raw in stream:
        sink.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
    stream.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
