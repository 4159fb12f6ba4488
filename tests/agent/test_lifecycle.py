"""The state machine and cancellation: transitions, signals, the grace-period watchdog."""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from baqup_agent._errors import Cancelled, IllegalTransition
from baqup_agent._lifecycle import MIN_EXIT_TIME, Cancellation, StateMachine
from baqup_agent._logger import Logger
from baqup_agent.contract import AgentState
from baqup_agent.contract.tables import TRANSITIONS


def _logger() -> Logger:
    return Logger("job-1", "agent-1", stream=io.StringIO())


# -- state machine ----------------------------------------------------------------------


def test_happy_path_reports_every_change() -> None:
    changes: list[tuple[AgentState, AgentState | None, str | None]] = []
    machine = StateMachine(on_change=lambda to, frm, why: changes.append((to, frm, why)))
    machine.announce()
    machine.transition(AgentState.RUNNING)
    machine.transition(AgentState.COMPLETING)
    machine.transition(AgentState.TERMINATED, "done")
    assert changes == [
        (AgentState.INITIALIZING, None, None),
        (AgentState.RUNNING, AgentState.INITIALIZING, None),
        (AgentState.COMPLETING, AgentState.RUNNING, None),
        (AgentState.TERMINATED, AgentState.COMPLETING, "done"),
    ]
    assert machine.final
    assert machine.history[-1] is AgentState.TERMINATED


def _reach(machine: StateMachine, state: AgentState) -> None:
    path = {
        AgentState.INITIALIZING: [],
        AgentState.RUNNING: [AgentState.RUNNING],
        AgentState.COMPLETING: [AgentState.RUNNING, AgentState.COMPLETING],
        AgentState.TERMINATED: [AgentState.RUNNING, AgentState.COMPLETING, AgentState.TERMINATED],
        AgentState.FAILED: [AgentState.FAILED],
    }[state]
    for step in path:
        machine.transition(step)


@pytest.mark.parametrize(("start", "target"), list(itertools.product(AgentState, AgentState)))
def test_every_transition_follows_the_generated_table(
    start: AgentState, target: AgentState
) -> None:
    machine = StateMachine()
    _reach(machine, start)
    assert machine.can(target) == (target in TRANSITIONS[start])
    if target in TRANSITIONS[start]:
        machine.transition(target)
        assert machine.state is target
    else:
        with pytest.raises(IllegalTransition):
            machine.transition(target)
        assert machine.state is start


def test_illegal_transition_is_not_reported() -> None:
    changes: list[AgentState] = []
    machine = StateMachine(on_change=lambda to, frm, why: changes.append(to))
    with pytest.raises(IllegalTransition):
        machine.transition(AgentState.TERMINATED)
    assert changes == []


# -- cancellation -----------------------------------------------------------------------

MakeCancellation = Callable[..., Cancellation]


class ExitRecorder:
    """Records the forced exit's code instead of ending the test process."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.at: float | None = None
        self.done = threading.Event()

    def __call__(self, code: int) -> None:
        # Returning (where os._exit would not) simply ends the watchdog thread.
        self.codes.append(code)
        self.at = time.monotonic()
        self.done.set()


@pytest.fixture
def recorder() -> ExitRecorder:
    return ExitRecorder()


@pytest.fixture
def make_cancellation(recorder: ExitRecorder) -> Iterator[MakeCancellation]:
    made: list[Cancellation] = []

    def make(grace: float, **kwargs: Any) -> Cancellation:
        c = Cancellation(grace, _logger(), exit_process=recorder, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
        c.restore_signal_handlers()


def test_checkpoint_raises_after_a_request(make_cancellation: MakeCancellation) -> None:
    c = make_cancellation(30)
    c.check()
    assert not c.requested
    c.request("controller cancel")
    assert c.requested
    with pytest.raises(Cancelled, match="controller cancel"):
        c.check()


def test_commit_refuses_a_pending_cancel_and_ignores_later_ones(
    make_cancellation: MakeCancellation,
) -> None:
    c = make_cancellation(30)
    c.request("first")
    with pytest.raises(Cancelled), c.commit():
        pytest.fail("commit must not be entered while a cancel is pending")
    c2 = make_cancellation(30)
    with c2.commit():
        c2.request("too late")
        c2.check()  # no raise: publication has begun
    assert c2.committed and c2.requested


class FakeClock:
    """Monotonic time that moves only when the test sets it; records what it was read at."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads: list[float] = []
        self._read = threading.Condition()

    def __call__(self) -> float:
        with self._read:
            self.reads.append(self.now)
            self._read.notify_all()
            return self.now

    def wait_read_at(self, value: float, timeout: float = 10) -> bool:
        """Wait until the clock was read while it showed ``value`` (another thread's read)."""
        with self._read:
            return self._read.wait_for(lambda: value in self.reads, timeout)


@pytest.mark.parametrize("grace", [0.0, 0.2, 0.5, 1.0])
def test_watchdog_forces_exit_at_the_end_of_the_grace_period(
    make_cancellation: MakeCancellation, recorder: ExitRecorder, grace: float
) -> None:
    """On an injected clock: nothing is forced while the clock stays inside the grace
    period, the exit is forced once it reaches the end, then the process exits (the
    watchdog's real waits are bounded by the grace period; no window is measured)."""
    start = 1000.0
    clock = FakeClock(start)
    events: list[tuple[str, float]] = []

    def on_force(why: str, may_discard: bool, deadline: float) -> int:
        events.append(("forced", clock.now))
        assert (why, may_discard) == ("grace period expired", True)
        # the clean-up must be over before the process has to be gone
        assert clock.now <= deadline <= start + max(grace, MIN_EXIT_TIME)
        return 1

    c = make_cancellation(grace, on_force_exit=on_force, clock=clock)
    c.request("test")
    if grace > 0:  # nothing is forced half-way through the grace period
        assert clock.wait_read_at(start)
        half = start + grace / 2
        events.append(("clock", half))
        clock.now = half
        assert clock.wait_read_at(half)
        end = start + grace
        events.append(("clock", end))
        clock.now = end
    assert recorder.done.wait(10)
    assert events[-1] == ("forced", start + grace)
    assert [e for e in events if e[0] == "forced"] == [events[-1]]
    assert recorder.codes == [1]


def test_stopped_job_is_not_forced_out(
    make_cancellation: MakeCancellation, recorder: ExitRecorder
) -> None:
    c = make_cancellation(0.3)
    c.request("test")
    c.stop()
    assert not recorder.done.wait(0.6)


def test_forced_exit_waits_for_publication_then_may_discard(
    make_cancellation: MakeCancellation, recorder: ExitRecorder
) -> None:
    seen: list[bool] = []
    fired = threading.Event()

    def on_force_exit(why: str, may_discard: bool, deadline: float) -> int:
        seen.append(may_discard)
        return 0

    # grace 3 s: the watchdog fires at 2.4 s and gives the publication until 2.9 s
    c = make_cancellation(3.0, on_force_exit=on_force_exit)
    c.on_forced_exit(fired.set)
    with c.commit():
        c.request("late")
        # the order of events: the forced exit starts while the publication runs, and
        # waits for it instead of exiting
        assert fired.wait(30)
        assert not recorder.done.is_set()
    assert recorder.done.wait(10)
    assert seen == [True]
    assert recorder.codes == [0]


def test_forced_exit_leaves_staging_alone_when_publication_hangs(
    make_cancellation: MakeCancellation, recorder: ExitRecorder
) -> None:
    seen: list[bool] = []

    def on_force_exit(why: str, may_discard: bool, deadline: float) -> int:
        seen.append(may_discard)
        return 1

    c = make_cancellation(0.5, on_force_exit=on_force_exit)
    with c.commit():
        c.request("late")
        assert recorder.done.wait(2)
    assert seen == [False]


def test_second_signal_forces_a_fast_exit(
    make_cancellation: MakeCancellation, recorder: ExitRecorder
) -> None:
    whys: list[str] = []
    requests: list[str] = []

    def on_force_exit(why: str, may_discard: bool, deadline: float) -> int:
        whys.append(why)
        return 1

    c = make_cancellation(60, on_request=requests.append, on_force_exit=on_force_exit)
    # what the process had: Python's handler, or SIG_IGN when started in the background
    before = signal.getsignal(signal.SIGINT)
    assert c.install_signal_handlers()
    assert signal.getsignal(signal.SIGINT) is not before
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs in this (main) thread between bytecodes
    assert c.requested and c.reason == "received SIGTERM"
    with pytest.raises(Cancelled):
        c.check()
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)
    assert recorder.done.wait(2)
    assert (recorder.at or 0) - t0 < 1.0
    assert whys == ["second signal"]
    assert requests == ["received SIGTERM"]
    c.restore_signal_handlers()
    assert signal.getsignal(signal.SIGINT) is before


def test_forced_exit_does_not_wait_for_a_hanging_clean_up(
    make_cancellation: MakeCancellation, recorder: ExitRecorder
) -> None:
    release = threading.Event()
    events: list[str] = []

    def hang(why: str, may_discard: bool, deadline: float) -> int:
        events.append("clean-up started")
        release.wait(10)  # a bus or a lock that never answers
        events.append("clean-up returned")
        return 0

    c = make_cancellation(0.5, on_force_exit=hang)
    c.request("test")
    assert recorder.done.wait(3)
    events.append("exited")
    release.set()
    # the order, not a window of milliseconds: the exit came at the deadline while the
    # clean-up still hung (it returns only once released, after the exit)
    assert events[:2] == ["clean-up started", "exited"]
    assert recorder.codes == [1]  # a cancelled job's code when the clean-up never said


# The job's main thread spends its time in one long C call after another (zstd at a
# high level, GIL released, never a checkpoint): Python cannot run the SIGTERM handler
# until a call returns, so only the watchdog, woken through the wakeup fd, can keep
# the grace period.
_LONG_CALL_SCRIPT = """
import hashlib, sys, zstandard
from baqup_agent._lifecycle import Cancellation
from baqup_agent._logger import Logger

grace = float(sys.argv[1])
c = Cancellation(grace, Logger("job-1", "agent-1", stream=sys.stderr))
c.install_signal_handlers()
text = b"".join(hashlib.sha256(b"%d" % i).hexdigest().encode() for i in range(1 << 19))
cctx = zstandard.ZstdCompressor(level=15)
print("ready", flush=True)
while True:
    cctx.compress(text)
"""


def test_grace_period_holds_while_the_job_is_in_a_long_c_call() -> None:
    grace = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-c", _LONG_CALL_SCRIPT, str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(0.2)  # inside the first call (about 10 s here, longer under load)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
        _, err = proc.communicate()
    finally:
        proc.kill()
        proc.wait()
    assert code == 1
    assert b"forced exit: grace period expired" in err
    # One compression call lasts about 10 s (a CPU-bound call only grows on a loaded
    # machine): before the wakeup fd, the exit waited for its end. Slack of 3 s for
    # scheduling, far from the call's length.
    assert elapsed <= grace + 3, f"exited {elapsed:.2f} s after SIGTERM"


def test_handlers_are_not_installed_off_the_main_thread(
    make_cancellation: MakeCancellation,
) -> None:
    c = make_cancellation(30)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(c.install_signal_handlers()))
    t.start()
    t.join()
    assert result == [False]


def test_signals_after_the_job_ended_are_ignored(make_cancellation: MakeCancellation) -> None:
    c = make_cancellation(30)
    assert c.install_signal_handlers()
    c.stop()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    assert not c.requested
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        Cancellation.ignore_signals()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
