"""HeartbeatThread against a recording bus (no Redis)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baqup_agent._heartbeat import Clock, HeartbeatThread, next_slot
from baqup_agent._logger import Logger
from baqup_agent._progress import ProgressCounter
from baqup_agent.contract import AgentState, HeartbeatIntent, LogLevel, Progress
from tests.bus.conftest import LogCapture, wait_for


class FakeClock(Clock):
    """Fake time for the heartbeat's schedule: a wait advances it at once, unless the
    event is set; past ``horizon`` a wait blocks on the event for real (until stop())."""

    def __init__(self, horizon: float) -> None:
        self.now = 1000.0
        self.horizon = self.now + horizon

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if self.now + timeout > self.horizon:
            return event.wait()
        self.now += timeout
        return False


class RecordingBus:
    """Records send_heartbeat calls; can be told to fail or to be slow (on ``clock``
    when given: a beat then takes fake time)."""

    def __init__(self, fail: bool = False, delay: float = 0.0, clock: FakeClock | None = None):
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        self.delay = delay
        self.clock = clock
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
                    "t": self.clock.now if self.clock else time.monotonic(),
                    "state": state,
                    "intent": intent,
                    "progress": progress,
                    "extend": extend_seconds,
                    "interval": interval,
                }
            )
        if self.delay and self.clock:
            self.clock.now += self.delay
        elif self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("bus down")


def start(bus: RecordingBus, interval: float, log: LogCapture, **kw: Any) -> HeartbeatThread:
    thread = HeartbeatThread(
        bus, "agent-1", interval, Logger("j", "agent-1", LogLevel.DEBUG, stream=log), **kw
    )
    thread.start()
    return thread


def _beats_on_fake_time(log: LogCapture, interval: float, cost: float, count: int) -> list[float]:
    """When the first ``count`` beats started, each taking ``cost`` seconds, on a fake
    clock (seconds from the first)."""
    spacing = interval * (1 + cost // interval)
    # the clock stops (waits turn real) between beat ``count`` and the one after it
    clock = FakeClock(horizon=count * spacing - interval / 2)
    start_at = clock.now
    bus = RecordingBus(delay=cost, clock=clock)
    thread = start(bus, interval, log, clock=clock)
    wait_for(lambda: len(bus.calls) >= count, what=f"{count} beats")
    thread.stop(timeout=5)
    assert not thread.is_alive()
    assert all(c["interval"] == interval for c in bus.calls)
    return [c["t"] - start_at for c in bus.calls[:count]]


def test_beats_stay_on_the_interval_grid(log: LogCapture) -> None:
    # each beat costs time: the grid absorbs it (sleeping a full interval after each
    # beat would drift by the cost every beat)
    times = _beats_on_fake_time(log, interval=0.05, cost=0.015, count=9)
    assert times == pytest.approx([i * 0.05 for i in range(9)])


def test_a_beat_longer_than_the_interval_skips_slots_instead_of_bursting(log: LogCapture) -> None:
    # A 120 ms beat misses two 50 ms slots: the next beat waits for the third (150 ms)
    # instead of starting at once to catch up (120 ms).
    times = _beats_on_fake_time(log, interval=0.05, cost=0.12, count=4)
    assert times == pytest.approx([0.0, 0.15, 0.30, 0.45])


@given(
    interval=st.floats(0.001, 60),
    cost=st.floats(0, 120),
    late=st.floats(0, 1000),
)
def test_next_slot_is_the_first_grid_slot_not_past(
    interval: float, cost: float, late: float
) -> None:
    start_at = 50.0
    now = start_at + late + cost
    slot = next_slot(start_at, now, interval)
    steps = (slot - start_at) / interval
    assert steps == pytest.approx(round(steps), abs=1e-6)  # on the grid
    assert slot >= now or slot == start_at  # never in the past (unless not yet due)
    if slot > start_at:
        assert slot - interval <= now + 1e-9  # the first such slot: nothing skipped twice


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
    thread.stop(timeout=5)  # wakes the thread: waiting out its 30 s interval would leave it alive
    assert not thread.is_alive() and thread.daemon
