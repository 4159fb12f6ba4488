"""The heartbeat cadence the suite judges: beats on the schedule, not the ones an agent
sends at once to say a change of state or intent."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from baqup_agent.conformance.checks.bus import _regular_gaps
from baqup_agent.conformance.observed import Message

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def beat(at: float, state: str = "running", intent: str = "continuing") -> Message:
    stamp = (START + timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    data = {"type": "heartbeat", "timestamp": stamp, "state": state, "intent": intent}
    return Message("spool", json.dumps(data), data, "", 0.0, "1")


@given(
    interval=st.sampled_from([0.3, 1.0, 5.0]),
    delays=st.lists(st.floats(0, 0.45), min_size=4, max_size=30),
    changes=st.sets(st.integers(1, 29), max_size=5),
)
def test_late_beats_and_change_beats_keep_the_median_near_the_interval(
    interval: float, delays: list[float], changes: set[int]
) -> None:
    beats = []
    for k, delay in enumerate(delays):  # a fixed grid, each beat late by up to 45 %
        beats.append(beat((k + delay) * interval))
        if k in changes:  # a change said at once, just after a scheduled beat
            beats.append(beat((k + delay + 0.01) * interval, "completing", "completing"))
    gaps = _regular_gaps(beats)
    assert len(gaps) >= len(delays) - 1 - 2 * len(changes)
    assert 0.5 * interval <= statistics.median(gaps) <= 1.6 * interval


@given(st.integers(4, 40), st.sampled_from([0.25, 0.4, 2.0, 3.0]))
def test_an_agent_beating_at_the_wrong_rate_is_seen(count: int, factor: float) -> None:
    interval = 1.0
    gaps = _regular_gaps([beat(k * factor * interval) for k in range(count)])
    assert not 0.5 * interval <= statistics.median(gaps) <= 1.6 * interval
