"""§1 Lifecycle: legal state transitions; SIGTERM and cancel stop the job cleanly."""

from __future__ import annotations

import signal
from collections.abc import Iterator

from baqup_agent.conformance.checks._base import (
    CheckInput,
    by_seq,
    exit_text,
    must,
    the_result,
)
from baqup_agent.conformance.observed import Run
from baqup_agent.conformance.report import Finding
from baqup_agent.contract import AgentState, ExitCode
from baqup_agent.contract.tables import FINAL_STATES, INITIAL_STATE, TRANSITIONS

STOP_SLACK = 1.0  # seconds beyond the grace period: process exit and polling latency
# Output published this soon after the signal or cancel was (most likely) finished before
# the agent could see it: a last uninterruptible step, a control stream polled at intervals,
# a loaded machine (0.5 s judged compliant agents wrong on a 2-core machine at load 5-30).
# The interrupted jobs are sized to last about 8 s, so an agent that ignores the stop
# still publishes far beyond this.
RACE = 2.0


def state_transitions(inp: CheckInput) -> Iterator[Finding]:
    """State changes start at initializing, follow the table and end in a final state."""
    for run in inp.runs:
        if not run.scenario.is_job or run.killed_after_stop:
            continue  # killed by the suite before its last state: sigterm and cancel judge it
        changes = by_seq(run.of_type("state_change"))
        if not changes:
            yield must("no state_change message", run)
            continue
        previous: str | None = None
        for m in changes:
            assert m.data is not None
            to, frm = m.data.get("to_state"), m.data.get("from_state")
            if previous is None:
                if to != INITIAL_STATE.value:
                    yield must(f"the first state is {to!r}, not {INITIAL_STATE.value}", run, m.raw)
            else:
                # a missing from_state is a schema error (bus-messages: if/then in StateChange)
                if frm is not None and frm != previous:
                    yield must(f"from_state {frm!r} but the previous state was {previous}", run)
                if not _legal(previous, to):
                    yield must(f"illegal transition {previous} -> {to}", run, m.raw)
            previous = str(to)
        if previous not in {s.value for s in FINAL_STATES}:
            yield must(f"the last state is {previous}, not terminated or failed", run)


def _legal(frm: str, to: object) -> bool:
    try:
        return AgentState(to) in TRANSITIONS[AgentState(frm)]
    except ValueError:
        return False


def sigterm(inp: CheckInput) -> Iterator[Finding]:
    """SIGTERM mid-job: non-zero exit within the grace period, nothing published."""
    yield from _stopped(inp.run("sigterm"), inp, "SIGTERM")


def cancel(inp: CheckInput) -> Iterator[Finding]:
    """A cancel on the control stream (Redis) or control.jsonl (spool) stops the job."""
    for run in inp.runs:
        yield from _stopped(run, inp, "cancel")


def _stopped(run: Run, inp: CheckInput, what: str) -> Iterator[Finding]:
    result = the_result(run)
    published = [s.at for s in run.snapshots if isinstance(s.manifest, dict)]
    if run.missed_action(RACE):
        inp.not_exercised(
            run,
            f"the job ended before {what} could land ({run.action_note.strip('; ')})",
            "give a bigger --fixture that the agent reads through {fixture}, or a throttle "
            "with --slow-env (for input the suite does not provide)",
        )
        return
    assert run.action_at is not None  # missed_action says so
    code = run.exit_code
    elapsed = run.ended - run.action_at
    limit = inp.ctx.grace_period + STOP_SLACK
    if code == -signal.SIGTERM:
        yield must("killed by SIGTERM: the agent installs no handler", run)
    elif code == 0:
        yield must(f"exit 0 after {what}: a stopped job never exits 0", run)
    elif code is not None and code < 0:
        yield must(f"{exit_text(code)} after {what}", run, run.action_note)
    elif code != int(ExitCode.GENERAL_FAILURE):
        yield must(f"exit {code} after {what}; a cancelled job exits 1", run)
    if elapsed > limit:
        yield must(
            f"exited {elapsed:.2f} s after {what}, beyond the grace period "
            f"({inp.ctx.grace_period:g} s + {STOP_SLACK:g} s slack)",
            run,
        )
    if published or run.published_after:
        # a partial view without manifest is the atomic-publication check's business
        yield must(f"output published at {run.output} although the job was stopped", run)
    if run.staging_left:
        yield must(f"staging directory .staging/{run.job_id} left behind", run)
    if result is not None and result.get("status") != "cancelled":
        yield must(f"result status {result.get('status')!r}, expected 'cancelled'", run)
