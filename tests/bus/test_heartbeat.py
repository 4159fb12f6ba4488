"""HeartbeatThread against a recording bus (no Redis)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from typing import Any

import pytest

from baqup_agent.contract import AgentState, HeartbeatIntent, LogLevel, Progress
from baqup_agent.heartbeat import HeartbeatThread
from baqup_agent.logger import Logger
from baqup_agent.progress import ProgressCounter
from tests.bus.conftest import LogCapture, wait_for


class RecordingBus:
    """Records send_heartbeat calls; can be told to fail or to be slow."""

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        self.delay = delay
        self.lock = threading.Lock()

    def send_heartbeat(
        self,
        state: AgentState,
        intent: HeartbeatIntent,
        progress: Progress,
        extend_seconds: float | None = None,
        *,
        interval: float | None = None,
    ) -> None:
        with self.lock:
            self.calls.append(
                {
                    "t": time.monotonic(),
                    "state": state,
                    "intent": intent,
                    "progress": progress,
                    "extend": extend_seconds,
                    "interval": interval,
                }
            )
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("bus down")


def start(bus: RecordingBus, interval: float, log: LogCapture, **kw: Any) -> HeartbeatThread:
    thread = HeartbeatThread(
        bus, "agent-1", interval, Logger("j", "agent-1", LogLevel.DEBUG, stream=log), **kw
    )
    thread.start()
    return thread


def test_beats_stay_on_the_interval_grid(log: LogCapture) -> None:
    bus = RecordingBus(delay=0.015)  # each beat costs time: the grid must absorb it
    thread = start(bus, 0.05, log)
    wait_for(lambda: len(bus.calls) >= 9, what="9 beats")
    thread.stop(timeout=2)
    times = [c["t"] for c in bus.calls[:9]]
    drift = [abs(t - times[0] - i * 0.05) for i, t in enumerate(times)]
    # Sleeping a full interval after each beat would drift by 15 ms a beat (median 60 ms).
    assert statistics.median(drift) < 0.03, drift
    assert all(c["interval"] == 0.05 for c in bus.calls)
    assert not thread.is_alive()


def test_a_beat_longer_than_the_interval_skips_slots_instead_of_bursting(log: LogCapture) -> None:
    bus = RecordingBus(delay=0.12)
    thread = start(bus, 0.05, log)
    wait_for(lambda: len(bus.calls) >= 4, what="4 beats")
    thread.stop(timeout=2)
    starts = [c["t"] for c in bus.calls[:4]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # A 120 ms beat misses two 50 ms slots: the next beat waits for the third (150 ms)
    # instead of starting at once to catch up (120 ms).
    assert min(gaps) >= 0.14, gaps


def test_state_progress_and_intent_are_carried(log: LogCapture) -> None:
    counter = ProgressCounter()
    counter.set_totals(bytes=1000, items=10)
    counter.add(bytes=300, items=3)
    bus = RecordingBus()
    thread = start(bus, 10.0, log, state=lambda: AgentState.COMPLETING, progress=counter.snapshot)
    wait_for(lambda: len(bus.calls) >= 1, what="first beat")  # the first beat is at once
    thread.set_intent(HeartbeatIntent.EXTEND, 120)  # sent at once, not after 10 s
    wait_for(lambda: len(bus.calls) >= 2, what="intent beat")
    thread.set_intent(HeartbeatIntent.COMPLETING, 99)  # extend_seconds only goes with extend
    wait_for(lambda: len(bus.calls) >= 3, what="second intent beat")
    thread.stop(timeout=2)
    first, extend, completing = bus.calls[:3]
    assert first["state"] is AgentState.COMPLETING
    assert first["intent"] is HeartbeatIntent.CONTINUING
    assert first["progress"] == Progress(
        bytes_done=300, items_done=3, bytes_total=1000, items_total=10
    )
    assert (extend["intent"], extend["extend"]) == (HeartbeatIntent.EXTEND, 120)
    assert (completing["intent"], completing["extend"]) == (HeartbeatIntent.COMPLETING, None)


def test_extend_needs_a_positive_duration(log: LogCapture) -> None:
    thread = HeartbeatThread(RecordingBus(), "a", 1.0, Logger("j", "a", stream=log))
    with pytest.raises(ValueError, match="extend_seconds"):
        thread.set_intent(HeartbeatIntent.EXTEND)
    with pytest.raises(ValueError, match="positive"):
        HeartbeatThread(RecordingBus(), "a", 0, Logger("j", "a", stream=log))


def test_a_failing_bus_is_logged_and_the_thread_goes_on(log: LogCapture) -> None:
    bus = RecordingBus(fail=True)
    thread = start(bus, 0.02, log)
    wait_for(lambda: len(bus.calls) >= 5, what="5 failing beats")
    assert thread.is_alive()
    thread.stop(timeout=2)
    assert thread.failures >= 5 and thread.beats == 0
    assert log.count("heartbeat failed") == 1  # once, not once per beat


def test_stop_is_prompt_and_safe_before_start(log: LogCapture) -> None:
    idle = HeartbeatThread(RecordingBus(), "a", 1.0, Logger("j", "a", stream=log))
    idle.stop(timeout=1)  # never started: no error
    bus = RecordingBus()
    thread = start(bus, 30.0, log)
    wait_for(lambda: bus.calls, what="first beat")
    t0 = time.monotonic()
    thread.stop(timeout=5)
    assert time.monotonic() - t0 < 0.5
    assert not thread.is_alive() and thread.daemon
