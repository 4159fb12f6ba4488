"""§3 Communication: messages, heartbeats and their TTL key, the result, the Redis outage."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterator
from typing import Any

from baqup_agent._keys import job_keys
from baqup_agent.conformance.checks._base import (
    CheckInput,
    by_seq,
    exit_text,
    must,
    parse_time,
    should,
    the_result,
)
from baqup_agent.conformance.observed import Message, Run
from baqup_agent.conformance.report import Finding
from baqup_agent.conformance.schemas import bus_message_errors
from baqup_agent.contract import ExitCode
from baqup_agent.contract.wire import HEARTBEAT_TTL_INTERVALS, SPOOL_EVENTS_FILE, STREAM_FIELD

MIN_CADENCE_GAPS = 3  # regular gaps needed to judge the cadence: fewer say little
HEARTBEAT_SLACK = 0.5  # seconds a gap may exceed the TTL by (scheduling on a loaded machine)
KEY_TTL_SLACK_MS = 100  # PX rounding and the time between SET and the suite's PTTL


def expected_ttl(run: Run, interval: float) -> float:
    """BAQUP_HEARTBEAT_TTL as the run set it, else its default (wire.json: a number of
    heartbeat intervals; config.json has no default keyword for it)."""
    try:
        return float(run.env["BAQUP_HEARTBEAT_TTL"])
    except (KeyError, ValueError):
        return HEARTBEAT_TTL_INTERVALS * interval


_AGENT_TYPES = ("state_change", "heartbeat", "progress", "result")


def bus_messages(inp: CheckInput) -> Iterator[Finding]:
    """Every message is valid, carries the job's ids, a unique id and a rising seq."""
    for run in inp.runs:
        for fields in run.stream_fields:
            if STREAM_FIELD not in fields:
                yield must(f"Redis stream entry without a {STREAM_FIELD} field ({fields})", run)
                break
        yield from _message_problems(run, inp.ctx.agent_id)
        if not run.scenario.is_job:
            continue
        sources = {m.source for m in run.messages}
        if run.bus == "redis" and "redis" not in sources:
            yield must(
                "no message reached the Redis stream (is the password taken from "
                "BAQUP_REDIS_PASSWORD, BAQUP_REDIS_PASSWORD_FILE and the URL?)",
                run,
            )
        if run.bus == "spool" and "spool" not in sources:
            spool = run.spool / SPOOL_EVENTS_FILE
            yield must(f"no spool at {spool} although Redis is not set", run)


def _message_problems(run: Run, agent_id: str) -> Iterator[Finding]:
    bad = 0
    by_id: dict[str, Message] = {}
    last_seq: dict[str, int] = {}
    for m in run.messages:
        problems = []
        if m.data is None:
            problems.append(m.error)
        else:
            if m.type not in _AGENT_TYPES:
                problems.append(f"type {m.type!r} is not an agent-to-controller message")
            else:
                problems += bus_message_errors(m.data)
            if m.data.get("job_id") != run.job_id:
                problems.append(f"job_id {m.data.get('job_id')!r}, expected {run.job_id!r}")
            stamp = m.data.get("timestamp")
            if isinstance(stamp, str) and not stamp.endswith("Z"):
                problems.append(f"timestamp {stamp!r} is not UTC written with Z (§3.2)")
            if m.data.get("agent_id") != agent_id:
                problems.append(f"agent_id {m.data.get('agent_id')!r}, expected {agent_id!r}")
            msg_id, seq = str(m.data.get("id")), m.data.get("seq")
            other = by_id.get(msg_id)
            if other is not None and (other.source == m.source or other.data != m.data):
                problems.append(f"id {msg_id} already used by {other.source} {other.where}")
            by_id.setdefault(msg_id, m)
            if isinstance(seq, int):
                if seq <= last_seq.get(m.source, -1):
                    problems.append(f"seq {seq} after seq {last_seq[m.source]} ({m.source})")
                last_seq[m.source] = seq
        if problems:
            bad += 1
            if bad <= 3:
                yield must(f"{m.source} {m.where}: " + "; ".join(problems), run, m.raw)
    if bad > 3:
        yield must(f"{bad - 3} more invalid messages", run)


def heartbeats(inp: CheckInput) -> Iterator[Finding]:
    """Heartbeats come at the configured interval, never further apart than their TTL,
    and (over Redis) keep the heartbeat key alive with a TTL."""
    interval = inp.ctx.heartbeat_interval
    for run in inp.runs:
        beats = [m for m in by_seq(run.of_type("heartbeat")) if m.data is not None]
        if not beats:
            yield must("no heartbeat message", run)
            continue
        first: dict[str, Any] = beats[0].data or {}
        declared = first.get("interval_seconds")
        if not isinstance(declared, (int, float)) or abs(declared - interval) > 1e-6:
            yield must(
                f"interval_seconds {declared!r} but BAQUP_HEARTBEAT_INTERVAL is {interval:g}", run
            )
        ttl = expected_ttl(run, interval)
        declared_ttl = [b.data.get("ttl_seconds") for b in beats if b.data is not None]
        wrong = [t for t in declared_ttl if not isinstance(t, (int, float)) or abs(t - ttl) > 1e-6]
        if wrong:
            unset = f"unset: {HEARTBEAT_TTL_INTERVALS} intervals"
            setting = run.env.get("BAQUP_HEARTBEAT_TTL", unset)
            text = f"ttl_seconds {wrong[0]!r}, expected {ttl:g} (BAQUP_HEARTBEAT_TTL {setting})"
            yield must(text, run)
        yield from _gaps(run, beats, interval, ttl)
        if run.bus == "redis":
            yield from _ttl_key(run, beats, interval, ttl)


def _gaps(run: Run, beats: list[Message], interval: float, ttl: float) -> Iterator[Finding]:
    times = [parse_time((b.data or {}).get("timestamp")) for b in beats]
    stamps = [t for t in times if t is not None]
    running = [
        parse_time((m.data or {}).get("timestamp"))
        for m in run.of_type("state_change")
        if (m.data or {}).get("to_state") == "running"
    ]
    result = the_result(run)
    end = parse_time(result.get("timestamp")) if result else None
    points = sorted(
        [*([running[0]] if running and running[0] else []), *stamps, *([end] if end else [])]
    )
    limit = ttl + HEARTBEAT_SLACK
    for a, b in itertools.pairwise(points):
        if b - a > limit:
            yield must(
                f"{b - a:.2f} s without a heartbeat while running, longer than the TTL "
                f"({ttl:g} s, + {HEARTBEAT_SLACK:g} s slack): the controller would think the "
                "agent dead",
                run,
            )
            break
    gaps = _regular_gaps(beats)
    if len(gaps) >= MIN_CADENCE_GAPS:
        median = statistics.median(gaps)
        if not 0.5 * interval <= median <= 1.6 * interval:
            yield should(
                f"median heartbeat gap {median:.3f} s, configured interval {interval:g} s", run
            )


def _regular_gaps(beats: list[Message]) -> list[float]:
    """The gaps between beats sent on the schedule: a gap ending at a beat whose state or
    intent differs from the previous beat's is left out, as an agent may say a change at
    once (the SDK does), which on a short job would make the interval look shorter."""
    gaps = []
    for a, b in itertools.pairwise(beats):
        da, db = a.data or {}, b.data or {}
        ta, tb = parse_time(da.get("timestamp")), parse_time(db.get("timestamp"))
        if ta is None or tb is None:
            continue
        if (da.get("state"), da.get("intent")) == (db.get("state"), db.get("intent")):
            gaps.append(tb - ta)
    return gaps


def _ttl_key(run: Run, beats: list[Message], interval: float, ttl: float) -> Iterator[Finding]:
    samples = run.ttl_samples
    if not samples:
        running_for = run.ended - (run.running_seen_at or run.ended)
        if running_for > 2 * interval:
            yield must(f"the key {job_keys(run.job_id).heartbeat} was never seen", run)
        else:
            yield should("the job was too short to observe the heartbeat key", run)
        return
    if any(pttl == -1 for _, pttl, _ in samples):
        yield must("the heartbeat key has no TTL: a dead agent would never expire", run)
    longest = max(pttl for _, pttl, _ in samples)
    if longest > ttl * 1000 + KEY_TTL_SLACK_MS:
        yield must(
            f"the heartbeat key's TTL ({longest} ms) exceeds ttl_seconds ({ttl:g} s): a dead "
            "agent would look alive for longer than the configuration says",
            run,
        )
    redis_beats = sum(1 for b in beats if b.source == "redis")
    values = {v for _, _, v in samples}
    running_for = (samples[-1][0] - samples[0][0]) if len(samples) > 1 else 0.0
    if redis_beats >= 3 and running_for > 2 * interval and len(values) < 2:
        yield must("the heartbeat key was never refreshed although heartbeats were sent", run)


def result_once(inp: CheckInput) -> Iterator[Finding]:
    """Each job reports exactly one result; over Redis it is also kept in the result key."""
    for run in inp.runs:
        if not run.scenario.is_job or run.killed_after_stop:
            continue  # killed by the suite before its result: sigterm and cancel judge it
        results = run.of_type("result")
        if len(results) != 1:
            yield must(
                f"{len(results)} result messages, expected exactly one",
                run,
                "\n".join(m.raw for m in results[:3]),
            )
        if run.bus != "redis" or not results:
            continue
        if run.redis_result is None:
            yield must(f"no {job_keys(run.job_id).result} key", run)
            continue
        try:
            stored = json.loads(run.redis_result)
        except ValueError:
            stored = None
        if stored not in [m.data for m in results]:
            yield must("the result key differs from the result message", run, run.redis_result)
        if run.redis_result_ttl == -1:
            yield should("the result key never expires (the contract keeps it 7 days)", run)


def redis_outage(inp: CheckInput) -> Iterator[Finding]:
    """Redis down: the job still succeeds, its messages go to the spool, and it exits 75."""
    run = inp.run("backup-redis-down")
    spooled = [m for m in run.messages if m.source == "spool"]
    if not spooled:
        yield must(f"nothing spooled at {run.spool / SPOOL_EVENTS_FILE} while Redis was down", run)
    result = the_result(run)
    if result is None or all(m.type != "result" for m in spooled):
        yield must("the result was not spooled", run)
        return
    if result.get("status") != "success":
        yield must(
            f"the job ended {result.get('status')!r} ({exit_text(run.exit_code)}): an "
            "unreachable Redis must not fail a backup",
            run,
            json.dumps(result),
        )
    elif run.exit_code != int(ExitCode.COMPLETED_UNREPORTED):
        yield must(
            f"{exit_text(run.exit_code)}, but the result could only be spooled: the exit "
            "code must be 75 (COMPLETED_UNREPORTED)",
            run,
        )
