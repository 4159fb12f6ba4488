"""§4.7 One job id, many starts: the checks ``rerun-finished`` and ``duplicate-refused``.

Each starts the agent more than once for one job id, in a sandbox of its own
(``rerun`` and ``duplicate`` under the suite's root), because a scenario runs the
agent only once:

* ``rerun-finished``: a backup that succeeded is started again with the same
  environment. It must exit 0 without redoing the work and add nothing to the bus:
  the events (stream and spool) and the result key stay as they were.
* ``duplicate-refused``: while a slow backup runs, a second one with the same job id
  (another agent id) must exit 73 and write nothing of the job: no message, no result
  or heartbeat key of its own, nothing in the spool. The first run is paused with
  SIGSTOP meanwhile (a paused process keeps its lock), so that it cannot end before
  the duplicate has tried; then it is resumed and stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from baqup_agent._keys import EVENTS_FILE, MESSAGE_FIELD, job_keys
from baqup_agent.conformance.checks._base import CheckInput, NotApplicable, exit_text, must
from baqup_agent.conformance.fixture import (
    MAX_FIXTURE_BYTES,
    SCALE_STEP,
    copies_in,
    scaled_fixture,
)
from baqup_agent.conformance.observed import Run, SuiteContext
from baqup_agent.conformance.report import Finding
from baqup_agent.conformance.runner import build_env, execute, expand, new_run
from baqup_agent.conformance.scenarios import Scenario
from baqup_agent.contract import ExitCode

RERUN = Scenario("rerun", "a finished backup started again", "backup", "redis", "env")
DUPLICATE = Scenario(
    "duplicate", "a second start while the first runs", "backup", "redis", "env", slow=True
)


def rerun_finished(inp: CheckInput) -> Iterator[Finding]:
    """A second start of a finished backup: exit 0, no work, nothing added to the bus."""
    ctx = inp.ctx
    first = execute(new_run(RERUN, ctx), ctx)
    if first.exit_code != ExitCode.SUCCESS:
        raise NotApplicable(f"the first backup did not succeed ({exit_text(first.exit_code)})")
    before = _bus(first, ctx), _output(first)
    second = _start(first, first.env, ctx)
    try:
        code = second.wait(timeout=ctx.timeout)
    except subprocess.TimeoutExpired:
        second.kill()
        second.wait()
        yield must("a rerun of a finished backup did not exit", first, f"{ctx.timeout:g} s")
        return
    after = _bus(first, ctx), _output(first)
    if code != ExitCode.SUCCESS:
        yield must("a rerun of a finished backup must exit 0", first, exit_text(code))
    if after[0] != before[0]:
        yield must(
            "a rerun of a finished backup changed the bus (messages or result)",
            first,
            _diff(before[0], after[0]),
        )
    if after[1] != before[1]:
        yield must("a rerun of a finished backup changed its published output", first)


def duplicate_refused(inp: CheckInput) -> Iterator[Finding]:
    """A duplicate started while the first run lives: exit 73, nothing of the job written."""
    ctx = inp.ctx
    # the fixture the interrupted scenarios were sized with: a backup that lasts, so that
    # a fast agent is not done before SIGSTOP (its duplicate would rightly exit 0)
    fixture = next(
        (r.fixture for n in _INTERRUPTED if (r := inp.all_runs.get(n)) and r.fixture), None
    )
    for attempt in range(1, DUPLICATE_ATTEMPTS + 1):
        first = new_run(DUPLICATE, ctx)
        first.fixture = fixture
        tried = _duplicate(first, ctx)
        if tried is not None:
            break
        # it ended before SIGSTOP (a busy machine, a small fixture): again, with more to read
        shutil.rmtree(first.workdir, ignore_errors=True)
        if attempt < DUPLICATE_ATTEMPTS:
            copies = copies_in(fixture or ctx.fixture) * SCALE_STEP
            fixture = scaled_fixture(
                ctx.fixture, ctx.root / f"duplicate-fixture-{attempt}", copies, MAX_FIXTURE_BYTES
            )
    else:
        raise NotApplicable(
            f"the first backup ended before the duplicate could start ({DUPLICATE_ATTEMPTS} "
            "attempts, the fixture enlarged each time)",
            how="make a backup last longer (--slow-env, or a larger --fixture)",
        )
    code, before, after = tried
    if code is None:
        yield must("a duplicate start did not exit while the first run lived", first)
        return
    if code != ExitCode.CANT_CREATE_OUTPUT:
        yield must("a duplicate start must exit 73", first, exit_text(code))
    mine = [
        entry
        for entry in after["events"] + after["spool"]
        if f'"{ctx.agent_id}-duplicate"' in entry
    ]
    if mine:
        yield must("a refused duplicate wrote messages of the job", first, mine[0][:200])
    if after["result"] != before["result"]:
        yield must("a refused duplicate wrote the job's result key", first)


def _duplicate(
    first: Run, ctx: SuiteContext
) -> tuple[int | None, dict[str, Any], dict[str, Any]] | None:
    """Start ``first``, pause it once running, start a duplicate of it: the duplicate's exit
    code (None: it did not exit) and the bus before and after it; None when the first run
    ended before it could be paused."""
    first.env = build_env(first, ctx)
    live = _start(first, first.env, ctx)
    try:
        if not _wait_running(first, ctx, live):
            if live.poll() is not None and first.output.exists():
                return None  # done before "running" was seen: too fast, not broken
            raise NotApplicable("the first backup never reported running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(live.pid, signal.SIGSTOP)
        if live.poll() is not None or first.output.exists():
            return None
        before = _bus(first, ctx)
        dup_env = {**first.env, "BAQUP_AGENT_ID": f"{ctx.agent_id}-duplicate"}
        dup = _start(first, dup_env, ctx)
        code: int | None
        try:
            code = dup.wait(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            dup.kill()
            dup.wait()
            code = None
        return code, before, _bus(first, ctx)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(live.pid, signal.SIGCONT)
        live.send_signal(signal.SIGTERM)
        try:
            live.wait(timeout=ctx.grace_period + 10)
        except subprocess.TimeoutExpired:
            live.kill()
            live.wait()


_INTERRUPTED = ("sigterm", "cancel-spool", "cancel-redis")  # scenarios with a sized fixture
DUPLICATE_ATTEMPTS = 3


def _start(run: Run, env: dict[str, str], ctx: SuiteContext) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [expand(a, run, ctx) for a in ctx.command],
        env=env,
        cwd=ctx.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_running(run: Run, ctx: SuiteContext, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + ctx.timeout
    while time.monotonic() < deadline and proc.poll() is None:
        bus = _bus(run, ctx)
        if any('"running"' in entry for entry in bus["events"] + bus["spool"]):
            return True
        time.sleep(0.05)
    return False


def _bus(run: Run, ctx: SuiteContext) -> dict[str, Any]:
    """The job's stream entries, result key and spool lines, as text."""
    state: dict[str, Any] = {"events": [], "result": None, "spool": []}
    spool = run.spool / EVENTS_FILE
    if spool.exists():
        state["spool"] = spool.read_text("utf-8", "replace").splitlines()
    if run.bus == "redis" and ctx.redis is not None:
        client = ctx.redis.client()
        try:
            keys = job_keys(run.job_id)
            state["events"] = [
                str(f.get(MESSAGE_FIELD, json.dumps(f))) for _, f in client.xrange(keys.events)
            ]
            state["result"] = client.get(keys.result)
        finally:
            client.close()
    return state


def _output(run: Run) -> dict[str, int]:
    """The mtime of each published file (a rerun that redoes the work rewrites them)."""
    root = run.output
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    for key in ("events", "spool"):
        added = after[key][len(before[key]) :]
        if added:
            return f"{len(added)} new {key} entr(ies), first: {added[0][:200]}"
    return "the result key changed"


__all__ = ["duplicate_refused", "rerun_finished"]
