"""Running one scenario: the agent as a subprocess, watched while it runs.

A monitor thread polls, every few milliseconds, the job's spool and Redis stream (the
messages), the heartbeat key's TTL, and the staging directory (to catch a partially
visible output); once the agent reports ``running`` it sends the scenario's SIGTERM
or cancel. Everything observed is kept in a ``Run`` for the checks to judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from baqup_agent.conformance.scenarios import Scenario

if TYPE_CHECKING:
    from baqup_agent.conformance.redis_server import LocalRedis

POLL_SECONDS = 0.005
TTL_SAMPLE_SECONDS = 0.04
STREAM_POLL_SECONDS = 0.02
ACTION_DELAY = 0.1  # after "running" is seen, so the job is really under way
ACTION_FALLBACK = 0.5  # of the scenario timeout: act anyway when no "running" is reported
KILL_AFTER_GRACE = 5.0  # a stop request not honoured by then is killed


@dataclass
class Message:
    """One message the agent wrote to the bus, as the suite read it."""

    source: str  # "redis" or "spool"
    raw: str
    data: dict[str, Any] | None  # None when the entry is not a JSON object
    error: str  # why the entry could not be read
    seen_at: float  # time.monotonic() when the suite read it
    where: str  # stream entry id or spool line number

    @property
    def type(self) -> str | None:
        """The message's ``type`` field, when there is one."""
        return str(self.data.get("type")) if self.data and "type" in self.data else None


@dataclass
class Snapshot:
    """The published output directory as seen at one instant."""

    at: float
    files: dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)
    manifest: object  # parsed manifest.json, None when absent, "" when unreadable


@dataclass
class SuiteContext:
    """What every scenario of one suite run shares."""

    command: list[str]
    root: Path  # the sandbox
    fixture: Path
    agent_id: str
    heartbeat_interval: float
    grace_period: float
    timeout: float
    env: dict[str, str]  # --env, values may hold placeholders
    slow_env: dict[str, str]
    canaries: dict[str, str]  # variable -> canary value
    redis: LocalRedis | None
    closed_port: int
    cwd: str | None = None
    compare_command: list[str] | None = None  # judges the round trip instead of byte equality


@dataclass
class Run:
    """Everything observed while one scenario ran."""

    scenario: Scenario
    job_id: str
    workdir: Path
    staging: Path
    spool: Path
    target: Path
    env: dict[str, str] = field(default_factory=dict)
    bus: str = ""  # the bus actually used ("redis" falls back to "spool" without a server)
    skipped: str = ""  # why the scenario did not run
    restore_source: Path | None = None
    exit_code: int | None = None
    timed_out: bool = False
    started: float = 0.0
    ended: float = 0.0
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    running_seen_at: float | None = None
    action_at: float | None = None
    action_note: str = ""
    snapshots: list[Snapshot] = field(default_factory=list)
    staging_seen: bool = False  # .staging/JOB_ID existed at some point
    ttl_samples: list[tuple[float, int, str | None]] = field(default_factory=list)
    redis_result: str | None = None
    redis_result_ttl: int | None = None
    stream_fields: list[list[str]] = field(default_factory=list)  # field names per entry
    published_after: bool = False
    staging_left: bool = False

    @property
    def duration(self) -> float:
        """Seconds from start to exit."""
        return max(0.0, self.ended - self.started)

    @property
    def output(self) -> Path:
        """Where the output is published."""
        return self.staging / self.job_id

    def of_type(self, kind: str) -> list[Message]:
        """Messages of one type in arrival order, de-duplicated by id (a spool replayed to
        Redis holds the same message twice)."""
        seen: set[str] = set()
        out = []
        for m in self.messages:
            if m.type != kind or m.data is None:
                continue
            key = str(m.data.get("id", id(m)))
            if key not in seen:
                seen.add(key)
                out.append(m)
        return out


def expand(value: str, run: Run, ctx: SuiteContext) -> str:
    """``value`` with the placeholders expanded.

    {fixture} the test data, {target} the restore target, {data} the fixture for a
    backup and the target for a restore (for agents with one "where the data lives"
    variable), {staging}, {job_id} and {workdir} of the scenario.
    """
    data = run.target if run.scenario.role == "restore" else ctx.fixture
    for key, sub in (
        ("{fixture}", str(ctx.fixture)),
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
        "CONFORMANCE_FIXTURE": str(ctx.fixture),
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
        spool=staging / ".spool" / job_id,
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
        raise RuntimeError(f"cannot run the agent {command[0]!r}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_read_lines, args=(proc.stderr, run.stderr), daemon=True),
        threading.Thread(target=_read_lines, args=(proc.stdout, run.stdout), daemon=True),
    ]
    for t in readers:
        t.start()
    monitor = _Monitor(run, ctx, proc)
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


class _Monitor:
    """Polls the bus, the heartbeat key and the staging directory while the agent runs."""

    def __init__(self, run: Run, ctx: SuiteContext, proc: subprocess.Popen[bytes]) -> None:
        self.run = run
        self.ctx = ctx
        self.proc = proc
        self.client: Any = (
            ctx.redis.client() if ctx.redis is not None and run.bus == "redis" else None
        )
        self.key = f"baqup:{{{run.job_id}}}"
        self._spool_offset = 0
        self._spool_line = 0
        self._last_stream_id = "-"
        self._last_ttl = 0.0
        self._last_stream = 0.0
        self._last_listing: dict[str, tuple[int, int]] | None = None

    def watch(self) -> None:
        """Poll until the agent exits, acting and killing on the scenario's schedule."""
        run, sc = self.run, self.run.scenario
        deadline = run.started + self.ctx.timeout
        while self.proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                run.timed_out = True
                run.action_note += f"killed after the scenario timeout ({self.ctx.timeout:g} s); "
                return
            if run.action_at is not None and now > (
                run.action_at + self.ctx.grace_period + KILL_AFTER_GRACE
            ):
                run.action_note += "killed: still running long after the grace period; "
                return
            self.poll(now)
            if sc.action and run.action_at is None:
                seen = run.running_seen_at
                if (seen is not None and now >= seen + ACTION_DELAY) or (
                    seen is None and now >= run.started + ACTION_FALLBACK * self.ctx.timeout
                ):
                    self.act()
            time.sleep(POLL_SECONDS)
        run.ended = time.monotonic()

    def finish(self) -> None:
        """Read what is left after the exit."""
        run = self.run
        if not run.ended:
            run.ended = time.monotonic()
        self.poll(time.monotonic(), final=True)
        run.published_after = run.output.exists()
        run.staging_left = (run.staging / ".staging" / run.job_id).exists()
        if self.client is not None:
            try:
                run.redis_result = self.client.get(f"{self.key}:result")
                run.redis_result_ttl = int(self.client.pttl(f"{self.key}:result"))
            finally:
                self.client.close()

    def act(self) -> None:
        """Send the scenario's SIGTERM or cancel."""
        run = self.run
        if run.scenario.action == "sigterm":
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        else:
            cancel = {
                "id": str(uuid.uuid4()),
                "type": "cancel",
                "job_id": run.job_id,
                "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "reason": "baqup-agent conformance suite",
            }
            text = json.dumps(cancel)
            if self.client is not None:
                self.client.xadd(f"{self.key}:control", {"msg": text})
            else:
                run.spool.mkdir(parents=True, exist_ok=True)
                with (run.spool / "control.jsonl").open("a", encoding="utf-8") as f:
                    f.write(text + "\n")
        run.action_at = time.monotonic()
        if run.running_seen_at is None:
            run.action_note += "the agent never reported running; the suite acted anyway; "

    def poll(self, now: float, *, final: bool = False) -> None:
        """One look at the spool, the Redis stream, the heartbeat key and the output."""
        self._read_spool(now)
        if self.client is not None:
            if final or now - self._last_stream >= STREAM_POLL_SECONDS:
                self._last_stream = now
                self._read_stream(now)
            if final or now - self._last_ttl >= TTL_SAMPLE_SECONDS:
                self._last_ttl = now
                self._sample_ttl(now)
        self._snapshot(now)

    def _add(self, source: str, raw: str, now: float, where: str) -> None:
        data: dict[str, Any] | None = None
        error = ""
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                data = parsed
            else:
                error = "not a JSON object"
        except ValueError as exc:
            error = f"not JSON: {exc}"
        msg = Message(source, raw, data, error, now, where)
        self.run.messages.append(msg)
        if (
            data is not None
            and data.get("type") == "state_change"
            and data.get("to_state") == "running"
            and self.run.running_seen_at is None
        ):
            self.run.running_seen_at = now

    def _read_spool(self, now: float) -> None:
        path = self.run.spool / "events.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(self._spool_offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        for line in data[:end].splitlines():
            self._spool_line += 1
            if line.strip():
                self._add("spool", line.decode("utf-8", "replace"), now, f"line {self._spool_line}")
        self._spool_offset += end

    def _read_stream(self, now: float) -> None:
        assert self.client is not None
        try:
            start = "-" if self._last_stream_id == "-" else f"({self._last_stream_id}"
            entries = self.client.xrange(f"{self.key}:events", min=start, max="+")
        except Exception:  # the suite's own Redis is not the agent's problem; retry next time
            return
        for entry_id, fields in entries:
            self._last_stream_id = entry_id
            self.run.stream_fields.append(sorted(fields))
            if "msg" in fields:
                self._add("redis", fields["msg"], now, f"stream entry {entry_id}")

    def _sample_ttl(self, now: float) -> None:
        assert self.client is not None
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.pttl(f"{self.key}:heartbeat")
            pipe.get(f"{self.key}:heartbeat")
            pttl, value = pipe.execute()
        except Exception:
            return
        if int(pttl) != -2:  # -2: no such key
            self.run.ttl_samples.append((now, int(pttl), value))

    def _snapshot(self, now: float) -> None:
        run = self.run
        if not run.staging_seen and (run.staging / ".staging" / run.job_id).exists():
            run.staging_seen = True
        root = run.output
        # only a directory that exists before and after the walk is judged: one that
        # appears (renamed into place) or vanishes during the walk would look empty
        if not root.exists():
            return
        listing: dict[str, tuple[int, int]] = {}
        try:
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    p = Path(dirpath) / name
                    try:
                        st = p.lstat()
                    except FileNotFoundError:
                        continue
                    listing[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            pass
        if not root.exists() or listing == self._last_listing:
            return
        self._last_listing = listing
        manifest: object = None
        if "manifest.json" in listing:
            try:
                manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = ""
        run.snapshots.append(Snapshot(now, listing, manifest))
