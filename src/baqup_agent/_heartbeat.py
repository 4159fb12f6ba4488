"""``HeartbeatThread``: the agent's pulse on the bus, with progress and intent."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from baqup_agent._errors import summarize
from baqup_agent.contract import AgentState, HeartbeatIntent, Progress

if TYPE_CHECKING:
    from baqup_agent._logger import Logger


class HeartbeatSender(Protocol):
    """What the thread needs of the bus: ``BusClient`` (a test passes a recorder)."""

    def send_heartbeat(
        self,
        state: AgentState,
        intent: HeartbeatIntent,
        progress: Progress,
        extend_seconds: float | None = None,
        *,
        interval: float | None = None,
    ) -> None:
        """Send one heartbeat, as ``BusClient.send_heartbeat`` does."""


def _no_progress() -> Progress:
    return Progress(bytes_done=0, items_done=0)


def _running() -> AgentState:
    return AgentState.RUNNING


class Clock:
    """Time as the heartbeat's schedule sees it: monotonic seconds, and a wait for an
    event with a timeout. Tests inject a fake one, so that they check the schedule
    itself rather than wall-clock windows of a loaded machine."""

    def monotonic(self) -> float:
        """Seconds of a monotonic clock."""
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``event``; whether it was set."""
        return event.wait(timeout)


def next_slot(next_beat: float, now: float, interval: float) -> float:
    """The first slot of the grid ``next_beat + k x interval`` that is not past at
    ``now``: a late beat does not delay the next ones, and slots missed by a beat longer
    than the interval are skipped instead of sent in a burst."""
    if next_beat <= now:
        missed = math.floor((now - next_beat) / interval) + 1
        next_beat += missed * interval
    return next_beat


class HeartbeatThread(threading.Thread):
    """A daemon thread that sends a heartbeat every ``interval`` seconds.

    Each beat carries the agent's state (``state()``, default running), progress
    counters (``progress()``, e.g. ``ProgressCounter.snapshot``) and intent, and
    refreshes the heartbeat key's TTL. Beats stay on a fixed grid (start + k x
    interval): a late beat does not delay the next ones, and a beat that takes longer
    than an interval skips the missed slots instead of bursting. A failing bus is
    logged and never stops the thread or the agent. ``clock`` (default: the system's
    monotonic clock) is what the schedule reads and waits on; tests pass a fake one.
    """

    def __init__(
        self,
        bus: HeartbeatSender,
        agent_id: str,
        interval: float,
        logger: Logger,
        *,
        state: Callable[[], AgentState] | None = None,
        progress: Callable[[], Progress] | None = None,
        clock: Clock | None = None,
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
        self._clock = clock or Clock()
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
        clock = self._clock
        next_beat = clock.monotonic()
        while not self._stopping:
            timeout = next_beat - clock.monotonic()
            if timeout > 0 and clock.wait(self._wake, timeout):
                self._wake.clear()
                if not self._stopping:
                    self._beat()  # the intent changed: say so now; the grid stays
                continue
            self._beat()
            next_beat = next_slot(next_beat + self.interval, clock.monotonic(), self.interval)

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
