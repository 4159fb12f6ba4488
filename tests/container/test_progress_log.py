"""Progress lines in the log (``BAQUP_PROGRESS_LOG_INTERVAL``): due at the interval,
with counters, rates and the percentage when a total is known, redacted, configurable.

The timing is checked with an injected clock; the end-to-end test waits for the order
of events (the agent holds its job until the first progress line is written).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baqup_agent import Agent, Context, Secret
from baqup_agent._job import run_job
from baqup_agent._logger import Logger
from baqup_agent._progress import ProgressCounter, ProgressLog, format_bytes
from baqup_agent.contract import ExitCode
from baqup_agent.testing import LogCapture
from tests.agent.helpers import ROOT, job_env

DEFAULT = json.loads((ROOT / "schema" / "config.json").read_text())["properties"][
    "BAQUP_PROGRESS_LOG_INTERVAL"
]["default"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_lines(stream: LogCapture) -> list[dict[str, Any]]:
    return [r for r in stream.records() if r["message"].startswith("progress: ")]


# one step: time passes, work is done, maybe a total becomes known
steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=50, allow_nan=False),
        st.integers(min_value=0, max_value=1 << 40),
        st.integers(min_value=0, max_value=10_000),
        st.one_of(st.none(), st.integers(min_value=1, max_value=1 << 41)),
        st.one_of(st.none(), st.integers(min_value=1, max_value=20_000)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(interval=st.floats(min_value=0.5, max_value=40), steps=steps)
def test_a_line_is_due_each_interval_and_tells_the_truth(
    interval: float, steps: list[tuple[float, int, int, int | None, int | None]]
) -> None:
    clock, counter, stream = Clock(), ProgressCounter(), LogCapture()
    log = ProgressLog(counter, Logger("job-1", "agent-1", stream=stream), interval, clock=clock)
    last_line_at, last = clock.now, counter.snapshot()
    for advance, nbytes, items, bytes_total, items_total in steps:
        clock.now += advance
        counter.add(bytes=nbytes, items=items)
        counter.set_totals(bytes=bytes_total, items=items_total)
        due = clock.now - last_line_at >= interval
        assert log.tick() is due
        if not due:
            continue
        (line,) = progress_lines(stream)[-1:]
        now, elapsed = counter.snapshot(), clock.now - last_line_at
        assert line["level"] == "INFO"
        assert (line["bytes_done"], line["items_done"]) == (now.bytes_done, now.items_done)
        assert (line["bytes_total"], line["items_total"]) == (now.bytes_total, now.items_total)
        expected_rate = (now.bytes_done - last.bytes_done) / elapsed
        assert line["bytes_per_second"] == round(expected_rate)
        done, total = now.bytes_done, now.bytes_total
        if not total:
            done, total = now.items_done, now.items_total
        if total:
            assert line["percent"] == round(min(100.0, 100 * done / total), 1)
            assert f"{line['percent']:.1f}%" in line["message"]
        else:
            assert "percent" not in line and "eta_seconds" not in line
        assert format_bytes(now.bytes_done) in line["message"]
        last_line_at, last = clock.now, now
    assert log.lines == len(progress_lines(stream))


def test_the_percentage_follows_bytes_then_items() -> None:
    clock, counter, stream = Clock(), ProgressCounter(), LogCapture()
    log = ProgressLog(counter, Logger("job-1", "agent-1", stream=stream), 10, clock=clock)
    counter.set_totals(items=200)
    counter.add(bytes=3 << 20, items=50)
    clock.now += 10
    assert log.tick()
    counter.set_totals(bytes=12 << 20)
    clock.now += 10
    assert log.tick()
    first, second = progress_lines(stream)
    assert first["percent"] == 25.0 and first["items_per_second"] == 5.0
    assert first["message"] == "progress: 25.0% (3.0 MiB, 50 of 200 items, 307.2 KiB/s)"
    assert second["percent"] == 25.0 and second["bytes_per_second"] == 0
    assert "eta_seconds" not in second  # nothing moved: no estimate
    assert second["elapsed_seconds"] == 20.0


@pytest.mark.parametrize("interval", [0, 0.0])
def test_interval_zero_turns_the_lines_off(interval: float) -> None:
    clock, stream = Clock(), LogCapture()
    log = ProgressLog(ProgressCounter(), Logger("j", "a", stream=stream), interval, clock=clock)
    log.start()
    clock.now += 1e6
    assert not log.tick()
    log.stop()
    assert progress_lines(stream) == []


def test_the_last_message_is_shown_and_redacted() -> None:
    clock, stream = Clock(), LogCapture()
    password = Secret("hunter2-progress-canary")
    log = ProgressLog(ProgressCounter(), Logger("j", "a", stream=stream), 5, clock=clock)
    log.note(f"dumping table users with {password.reveal()}")
    clock.now += 5
    assert log.tick()
    (line,) = progress_lines(stream)
    assert line["last_message"].startswith("dumping table users with ")
    assert password.reveal() not in stream.getvalue()


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 << 30, "5.0 GiB"), (3 << 40, "3.0 TiB")],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


class _Watched(LogCapture):
    """A log stream that tells when a progress line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_seen = threading.Event()

    def write(self, s: str) -> int:
        if '"message":"progress: ' in s:
            self.progress_seen.set()
        return super().write(s)


class _SlowAgent(Agent):
    name = "slow"
    stream: _Watched

    def backup(self, ctx: Context) -> None:
        ctx.set_totals(bytes=1000)
        ctx.progress(bytes=250, message="first quarter")
        # The job holds until the thread has written a line: ordered, not timed.
        assert self.stream.progress_seen.wait(30), "no progress line"
        with ctx.artifact("a.bin") as out:
            out.write(b"x")


def test_a_running_job_writes_progress_lines(tmp_path: Path) -> None:
    stream = _Watched()
    _SlowAgent.stream = stream
    env = job_env(tmp_path / "staging", BAQUP_PROGRESS_LOG_INTERVAL="0.01")
    code = run_job(_SlowAgent, environ=env, install_signals=False, log_stream=stream)
    assert code == ExitCode.SUCCESS
    lines = progress_lines(stream)
    assert lines and lines[0]["bytes_done"] == 250 and lines[0]["percent"] == 25.0
    assert lines[0]["last_message"] == "first quarter"
    messages = [r["message"] for r in stream.records()]
    # between "job started" and "job finished", never after
    started, finished = messages.index("job started"), messages.index("job finished")
    positions = [i for i, m in enumerate(messages) if m.startswith("progress: ")]
    assert all(started < i < finished for i in positions)


def test_the_default_interval_comes_from_the_schema(tmp_path: Path) -> None:
    from baqup_agent.config import load_config

    config = load_config(None, environ=job_env(tmp_path))
    assert config["BAQUP_PROGRESS_LOG_INTERVAL"] == DEFAULT


@pytest.mark.parametrize("value", ["-1", "soon", "86401"])
def test_a_bad_interval_is_a_config_error(tmp_path: Path, value: str) -> None:
    stream = LogCapture()
    env = job_env(tmp_path, BAQUP_PROGRESS_LOG_INTERVAL=value)
    assert run_job(Agent, environ=env, install_signals=False, log_stream=stream) == 64
    errors = [r for r in stream.records() if r.get("variable") == "BAQUP_PROGRESS_LOG_INTERVAL"]
    assert errors, stream.getvalue()


def test_lines_are_json_objects() -> None:
    clock, stream = Clock(), LogCapture()
    log = ProgressLog(ProgressCounter(), Logger("j", "a", stream=stream), 1, clock=clock)
    clock.now += 1
    log.tick()
    assert all(isinstance(orjson.loads(x), dict) for x in stream.getvalue().splitlines())
