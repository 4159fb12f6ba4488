"""``HeartbeatThread``: the agent's pulse on the bus, with progress and intent."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from baqup_agent.contract import AgentState, HeartbeatIntent, Progress
from baqup_agent.errors import summarize

if TYPE_CHECKING:
    from baqup_agent.bus import BusClient
    from baqup_agent.logger import Logger


def _no_progress() -> Progress:
    return Progress(bytes_done=0, items_done=0)


def _running() -> AgentState:
    return AgentState.RUNNING


class HeartbeatThread(threading.Thread):
    """A daemon thread that sends a heartbeat every ``interval`` seconds.

    Each beat carries the agent's state (``state()``, default running), progress
    counters (``progress()``, e.g. ``ProgressCounter.snapshot``) and intent, and
    refreshes the heartbeat key's TTL. Beats stay on a fixed grid (start + k x
    interval): a late beat does not delay the next ones, and a beat that takes longer
    than an interval skips the missed slots instead of bursting. A failing bus is
    logged and never stops the thread or the agent.
    """

    def __init__(
        self,
        bus: BusClient,
        agent_id: str,
        interval: float,
        logger: Logger,
        *,
        state: Callable[[], AgentState] | None = None,
        progress: Callable[[], Progress] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval}")
        super().__init__(name=f"baqup-heartbeat-{agent_id}", daemon=True)
        self.bus = bus
        self.agent_id = agent_id
        self.interval = float(interval)
        self._log = logger
        self._state = state or _running
        self._progress = progress or _no_progress
        self._lock = threading.Lock()
        self._intent = HeartbeatIntent.CONTINUING
        self._extend: float | None = None
        self._wake = threading.Event()
        self._stopping = False
        self.beats = 0
        """Heartbeats handed to the bus so far."""
        self.failures = 0
        """Beats that raised (logged, then ignored)."""

    def set_intent(self, intent: HeartbeatIntent, extend_seconds: float | None = None) -> None:
        """Change what the heartbeats announce, and send one at once.

        ``extend`` needs ``extend_seconds`` (the time the agent asks for, counted from
        each beat); other intents ignore it. The intent stays until changed.
        """
        if intent is HeartbeatIntent.EXTEND:
            if extend_seconds is None or extend_seconds <= 0:
                raise ValueError("intent extend needs extend_seconds > 0")
        else:
            extend_seconds = None
        with self._lock:
            self._intent = intent
            self._extend = extend_seconds
        self._wake.set()

    def run(self) -> None:
        """Beat every interval (and at once on a new intent) until ``stop()``."""
        self._wake.clear()  # an intent set before start goes out with the first beat
        next_beat = time.monotonic()
        while not self._stopping:
            timeout = next_beat - time.monotonic()
            if timeout > 0 and self._wake.wait(timeout):
                self._wake.clear()
                if not self._stopping:
                    self._beat()  # the intent changed: say so now; the grid stays
                continue
            self._beat()
            next_beat += self.interval
            now = time.monotonic()
            if next_beat <= now:
                missed = math.floor((now - next_beat) / self.interval) + 1
                next_beat += missed * self.interval

    def _beat(self) -> None:
        try:
            with self._lock:
                intent, extend = self._intent, self._extend
            self.bus.send_heartbeat(
                self._state(), intent, self._progress(), extend, interval=self.interval
            )
            self.beats += 1
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                self._log.warn(
                    "heartbeat failed; will keep trying",
                    error=summarize(exc),
                    failures=self.failures,
                )

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating and wait up to ``timeout`` seconds (None: no limit) for the thread."""
        self._stopping = True
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
