"""Watching a running agent: bus, heartbeat key and output polled; SIGTERM or cancel sent.

The monitor polls, every few milliseconds, the job's spool and Redis stream (the
messages), the heartbeat key's TTL, and the output directory (to catch a partially
visible output); once the agent reports ``running`` it sends the scenario's SIGTERM or
cancel (at once: the moment is observed, not guessed), and it kills an agent that
outlives its timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from baqup_agent._keys import job_keys
from baqup_agent.conformance.inotify import TreeWatch
from baqup_agent.conformance.observed import Message, Run, Snapshot, SuiteContext
from baqup_agent.contract.wire import (
    MANIFEST_FILE,
    SPOOL_CONTROL_FILE,
    SPOOL_EVENTS_FILE,
    STAGING_SUBDIR,
    STREAM_FIELD,
)
from baqup_agent.testing import cancel_message

POLL_SECONDS = 0.005
TTL_SAMPLE_SECONDS = 0.04
STREAM_POLL_SECONDS = 0.02
ACTION_FALLBACK = 0.5  # of the scenario timeout: act anyway when no "running" is reported
KILL_AFTER_GRACE = 5.0  # a stop request not honoured by then is killed


class Monitor:
    """Polls the bus, the heartbeat key and the staging directory while the agent runs."""

    def __init__(
        self,
        run: Run,
        ctx: SuiteContext,
        proc: subprocess.Popen[bytes],
        watch: TreeWatch | None = None,
    ) -> None:
        self.run = run
        self.tree = watch
        self.ctx = ctx
        self.proc = proc
        self.client: Any = (
            ctx.redis.client() if ctx.redis is not None and run.bus == "redis" else None
        )
        self.keys = job_keys(run.job_id)
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
                run.killed_after_stop = True
                return
            self.poll(now)
            if sc.action and run.action_at is None:
                # at a moment observed on the bus (running, or a first progress message),
                # never after a guessed delay
                seen = run.running_seen_at
                if seen is not None or (now >= run.started + ACTION_FALLBACK * self.ctx.timeout):
                    self.act()
            time.sleep(POLL_SECONDS)
        run.ended = time.monotonic()

    def finish(self) -> None:
        """Read what is left after the exit."""
        run = self.run
        if not run.ended:
            run.ended = time.monotonic()
        self.poll(time.monotonic(), final=True)
        if self.tree is not None:
            self.tree.close()
            run.staging_events = self.tree.events
            run.staging_events_overflowed = self.tree.overflowed
        run.published_after = run.output.exists()
        run.staging_left = (run.staging / STAGING_SUBDIR / run.job_id).exists()
        if self.client is not None:
            try:
                run.redis_result = self.client.get(self.keys.result)
                run.redis_result_ttl = int(self.client.pttl(self.keys.result))
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
            cancel = cancel_message(run.job_id, reason="baqup-agent conformance suite")
            text = json.dumps(cancel)
            if self.client is not None:
                self.client.xadd(self.keys.control, {STREAM_FIELD: text})
            else:
                run.spool.mkdir(parents=True, exist_ok=True)
                with (run.spool / SPOOL_CONTROL_FILE).open("a", encoding="utf-8") as f:
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
            and self.run.running_seen_at is None
            and (
                data.get("type") == "progress"
                or (data.get("type") == "state_change" and data.get("to_state") == "running")
            )
        ):
            self.run.running_seen_at = now

    def _read_spool(self, now: float) -> None:
        path = self.run.spool / SPOOL_EVENTS_FILE
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
            entries = self.client.xrange(self.keys.events, min=start, max="+")
        except Exception:  # the suite's own Redis is not the agent's problem; retry next time
            return
        for entry_id, fields in entries:
            self._last_stream_id = entry_id
            self.run.stream_fields.append(sorted(fields))
            if STREAM_FIELD in fields:
                self._add("redis", fields[STREAM_FIELD], now, f"stream entry {entry_id}")

    def _sample_ttl(self, now: float) -> None:
        assert self.client is not None
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.pttl(self.keys.heartbeat)
            pipe.get(self.keys.heartbeat)
            pttl, value = pipe.execute()
        except Exception:
            return
        if int(pttl) != -2:  # -2: no such key
            self.run.ttl_samples.append((now, int(pttl), value))

    def _snapshot(self, now: float) -> None:
        run = self.run
        if not run.staging_seen and (run.staging / STAGING_SUBDIR / run.job_id).exists():
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
        if MANIFEST_FILE in listing:
            try:
                manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = ""
        run.snapshots.append(Snapshot(now, listing, manifest))
