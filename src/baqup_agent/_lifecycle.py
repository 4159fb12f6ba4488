"""Lifecycle (contract section 1): the state machine and cancellation.

``StateMachine`` enforces the transitions of ``schema/agent-state.json`` (through the
generated ``contract.tables.TRANSITIONS``) and reports every change to a callback, which
``run()`` wires to the bus.

``Cancellation`` turns SIGTERM, SIGINT and a controller cancel into a flag the job polls
at its checkpoints, and enforces the grace period:

* the first request sets the flag; the job's next ``checkpoint()`` raises
  ``errors.Cancelled``, ``run()`` discards staging, reports status ``cancelled`` and
  exits 1 (GENERAL_FAILURE): a cancelled job never exits 0;
* if the job has not stopped ``BAQUP_GRACE_PERIOD`` seconds after the first request
  (minus a small reserve to discard and report), a watchdog thread forces the exit;
  a grace period under ``MIN_EXIT_TIME`` (0 included) is taken as that long, all of
  it reserve, so that staging is still discarded and ``cancelled`` reported;
* a second signal forces the exit at once;
* the forced exit discards staging (unless publication is under way), reports the
  result when it can within the remaining time, and ends the process with
  ``os._exit`` and the code the caller's ``on_force_exit`` returns (1 before
  publication).

Publication is the point of no return: ``Cancellation.commit()`` guards it. A cancel
that arrives once the guard is entered no longer interrupts the job: the output is
published, and the job ends as a finished job does (0, or 75/76). A forced exit waits
for a publication in progress (within the grace period), so it never removes files
from under a rename.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from baqup_agent._errors import Cancelled, IllegalTransition
from baqup_agent.contract import AgentState
from baqup_agent.contract.tables import FINAL_STATES, INITIAL_STATE, TRANSITIONS

if TYPE_CHECKING:
    from baqup_agent._logger import Logger

StateCallback = Callable[[AgentState, "AgentState | None", "str | None"], None]
"""Called with (to_state, from_state, reason) after every transition."""

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

MAX_EXIT_RESERVE = 2.0
"""Seconds, at most, that a forced exit keeps for itself inside the grace period."""

MIN_EXIT_TIME = 0.5
"""Seconds, at least, between a cancel and the forced exit, whatever the grace period:
time for the exit to discard staging and report the result."""


class StateMachine:
    """The agent's lifecycle state, moved only along the generated transition table.

    Thread-safe: the job thread moves it and the heartbeat thread reads ``state``.
    """

    def __init__(self, on_change: StateCallback | None = None) -> None:
        self._lock = threading.Lock()
        self._state = INITIAL_STATE
        self._on_change = on_change
        self.history: list[AgentState] = [INITIAL_STATE]
        """Every state entered, in order (the initial one first)."""

    @property
    def state(self) -> AgentState:
        """The current state."""
        return self._state

    @property
    def final(self) -> bool:
        """Whether the current state is final (terminated or failed)."""
        return self._state in FINAL_STATES

    def can(self, to_state: AgentState) -> bool:
        """Whether moving to ``to_state`` now is allowed."""
        return to_state in TRANSITIONS[self._state]

    def announce(self) -> None:
        """Report the initial state to the callback (from_state None), once at start."""
        if self._on_change is not None:
            self._on_change(self._state, None, None)

    def transition(self, to_state: AgentState, reason: str | None = None) -> None:
        """Move to ``to_state``; raise ``IllegalTransition`` when the table forbids it."""
        with self._lock:
            from_state = self._state
            if to_state not in TRANSITIONS[from_state]:
                raise IllegalTransition(f"illegal state transition {from_state} -> {to_state}")
            self._state = to_state
            self.history.append(to_state)
        if self._on_change is not None:
            self._on_change(to_state, from_state, reason)


ForceExit = Callable[[str, bool, float], int]
"""Called by a forced exit with (why, may_discard, deadline); returns the exit code.

``may_discard`` is False when a publication holds the guard past the deadline: staging
must then be left alone (the next run for the job cleans it up). ``deadline`` is a
value of the cancellation's clock (``time.monotonic()`` unless one was injected) by
which the process must be gone.
"""


class EarlySignals:
    """Record SIGTERM/SIGINT that arrive before the job's own handlers exist.

    Loading the configuration and connecting the bus take a moment; a signal then must
    cancel the job (exit 1, nothing published), not kill the process with a signal
    status. Only the time before Python runs the agent's code stays uncovered.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Start recording (only possible in the main thread; elsewhere nothing happens)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)
        # A process started with them blocked (the agent under pid1's init) gets them now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def restore(self) -> None:
        """Put back the handlers that ``install`` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


class Cancellation:
    """The cancellation flag of one job, its signal handlers and its grace-period watchdog.

    ``request()`` may be called from any thread (a bus cancel) or from a signal handler.
    The signal handler only sets events: logging and the timer run in the watchdog
    thread, because writing to a stream from inside a signal handler can re-enter the
    stream's buffer.

    Python runs signal handlers in the main thread only, between bytecodes: while the
    job's thread is inside one long C call (a compression, an fsync, a database backup
    step) the handler waits. So the watchdog does not depend on it: the interpreter's
    C-level handler writes every signal's number to a pipe (``signal.set_wakeup_fd``)
    that the watchdog reads, and the grace period starts when the signal arrives. For
    the same reason the forced exit never waits on anything that can block past the
    deadline (a lock the job holds, a full log pipe, a slow bus): each step runs in a
    helper thread that is abandoned when time is up.

    ``clock`` is the monotonic time the watchdog's schedule is computed on (a test
    injects one to check the schedule, not wall-clock windows). ``exit_process`` ends
    the process (``os._exit``); one that returns (a test's recorder) ends the watchdog.
    """

    def __init__(
        self,
        grace_period: float,
        logger: Logger,
        *,
        on_request: Callable[[str], None] | None = None,
        on_force_exit: ForceExit | None = None,
        exit_process: Callable[[int], object] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_period = float(grace_period)
        # the watchdog's schedule reads this clock (tests inject one); its waits are real
        self._clock = clock
        self._logger = logger
        self._on_request = on_request
        self._on_force_exit = on_force_exit
        self._exit_process = exit_process
        self._requested = threading.Event()
        self._force = threading.Event()
        self._stopped = threading.Event()
        self._guard = threading.Lock()
        self._committed = False
        self._signals = 0  # counted by the Python-level handler
        self._requested_at = 0.0
        self.reason: str | None = None
        """Why cancellation was requested (None while it was not)."""
        # The watchdog sleeps on this pipe: signal numbers from the wakeup fd, and a 0
        # byte from request()/stop() in Python, wake it.
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        # The pipe is closed once both the watchdog has ended and the wakeup fd is
        # restored; never before, or a signal or a poke could write into a reused fd.
        self._pipe_lock = threading.RLock()  # re-entered by a signal handler in the main thread
        self._pipe_open = True
        self._watchdog_done = False
        self._wakeup_installed = False
        self._previous_wakeup = -1
        self._piped = 0  # SIGTERM/SIGINT read from the pipe by the watchdog
        self._previous_handlers: dict[int, object] = {}
        self._exit_hooks: dict[object, Callable[[], None]] = {}  # see on_forced_exit
        self._watchdog = threading.Thread(target=self._watch, name="baqup-watchdog", daemon=True)
        self._watchdog.start()

    # -- the flag ---------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """Whether a cancel was requested (even one that came after the point of no return)."""
        return self._requested.is_set()

    @property
    def committed(self) -> bool:
        """Whether publication has begun: cancels no longer interrupt the job."""
        return self._committed

    def check(self) -> None:
        """Raise ``Cancelled`` when a cancel is pending and publication has not begun."""
        if self._requested.is_set() and not self._committed:
            raise Cancelled(self.reason or "cancelled")

    def request(self, reason: str) -> None:
        """Ask the job to stop at its next checkpoint; repeated requests change nothing."""
        if self._requested.is_set():
            return
        self.reason = reason
        self._requested_at = self._clock()
        self._requested.set()
        self._poke()

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """Guard publication, the point of no return.

        Raises ``Cancelled`` on entry when a cancel is pending. Inside, later cancels no
        longer interrupt the job, and a forced exit waits for the block to end before it
        touches staging.
        """
        with self._guard:
            self.check()
            self._committed = True
            yield

    def stop(self) -> None:
        """The job has stopped (result reported): disarm the watchdog and let it end."""
        self._stopped.set()
        self._force.set()
        self._poke()

    def on_forced_exit(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` first thing in a forced exit; returns the function removing it.

        For what must not outlive the process (``run_child`` kills its child's process
        group): hooks run in the watchdog thread before the clean-up, so they must not
        block.
        """
        key = object()  # unique while registered, unlike id() of a bound method
        self._exit_hooks[key] = hook
        return lambda: self._exit_hooks.pop(key, None) and None

    # -- signals ----------------------------------------------------------------------

    def install_signal_handlers(self) -> bool:
        """Handle SIGTERM and SIGINT; False when not in the main thread (nothing installed)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._handle_signal)
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._wakeup_installed = True
        return True

    def restore_signal_handlers(self) -> None:
        """Put back the handlers (and wakeup fd) that ``install_signal_handlers`` replaced."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()
        if self._wakeup_installed:
            signal.set_wakeup_fd(self._previous_wakeup)
            with self._pipe_lock:
                self._wakeup_installed = False
                self._close_pipe_if_unused()

    @staticmethod
    def ignore_signals() -> None:
        """Ignore SIGTERM and SIGINT from now on: for a process whose job is over.

        Interpreter shutdown resets Python-level handlers to the default (a SIGTERM
        would then end the process with a signal status after it reported its result)
        but leaves an ignored signal ignored.
        """
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        # The watchdog may have seen this signal already (through the pipe), counting
        # it on its own; the handler makes the flag visible to the job at once.
        if self._stopped.is_set():
            return  # the job is over and reported: the process is on its way out
        self._signals += 1
        self._signal(signum, self._signals)

    def _signal(self, signum: int, count: int) -> None:
        """The ``count``-th SIGTERM/SIGINT (as one observer counts them) arrived."""
        if count == 1:
            self.request(f"received {signal.Signals(signum).name}")
        else:
            self._force.set()
            self._poke()

    def _poke(self) -> None:
        # Never blocks for long: the lock is only held to write or close.
        with self._pipe_lock, contextlib.suppress(OSError):  # full: it will wake anyway
            if self._pipe_open:
                os.write(self._wake_w, b"\0")

    # -- the watchdog -----------------------------------------------------------------

    def _watch(self) -> None:
        try:
            self._wait_until(lambda: self._requested.is_set() or self._stopped.is_set(), None)
            if self._stopped.is_set():
                return
            # Told from a helper thread: a callback or a log write that blocks must not
            # hold up the deadline.
            _in_background(self._notify_request, "baqup-cancel-notice")
            # A grace period shorter than MIN_EXIT_TIME (0 included) still leaves that
            # long to discard staging and report ``cancelled``: the job just gets less.
            grace = self.grace_period
            reserve = max(min(MAX_EXIT_RESERVE, 0.2 * grace), MIN_EXIT_TIME - grace)
            deadline = self._requested_at + max(grace, MIN_EXIT_TIME)
            self._wait_until(self._force.is_set, deadline - reserve)
            if self._stopped.is_set():
                return
            why = "second signal" if self._force.is_set() else "grace period expired"
            self._force_exit(why, deadline, reserve)
        finally:
            with self._pipe_lock:
                self._watchdog_done = True
                self._close_pipe_if_unused()

    def _wait_until(self, done: Callable[[], bool], until: float | None) -> None:
        """Sleep on the pipe until ``done()`` or the monotonic time ``until``."""
        poller = select.poll()  # not select(): any fd number
        poller.register(self._wake_r, select.POLLIN)
        while not done():
            timeout = None if until is None else until - self._clock()
            if timeout is not None and timeout <= 0:
                return
            poller.poll(None if timeout is None else math.ceil(timeout * 1000))
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(self._wake_r, 512):
                    if signum in HANDLED_SIGNALS and not self._stopped.is_set():
                        self._piped += 1
                        self._signal(signum, self._piped)

    def _notify_request(self) -> None:
        if self._on_request is not None:
            self._on_request(self.reason or "cancelled")
        self._logger.warn(
            "cancellation requested; stopping at the next checkpoint",
            reason=self.reason,
            grace_period=self.grace_period,
        )

    def _force_exit(self, why: str, deadline: float, reserve: float) -> None:
        # The clean-up gets the reserve minus a margin in which to give up on it, so the
        # exit below happens by the deadline even when the clean-up hangs.
        finish_by = deadline - min(0.1, 0.25 * reserve)
        for hook in list(self._exit_hooks.values()):
            try:
                hook()
            except Exception as exc:  # the exit must happen whatever went wrong
                self._logger.error("forced exit hook failed", exc=exc)
        code = [1]  # a cancelled job's code, until the clean-up says otherwise

        def clean_up() -> None:
            self._logger.error(f"forced exit: {why}", reason=self.reason)
            # Wait for a publication in progress rather than remove files under its
            # rename; the guard is then kept so that no publication starts after this.
            may_discard = self._guard.acquire(timeout=max(0.0, finish_by - self._clock()))
            if self._on_force_exit is not None:
                try:
                    code[0] = self._on_force_exit(why, may_discard, finish_by)
                except BaseException as exc:  # the exit must happen whatever went wrong
                    self._logger.error("forced exit clean-up failed", exc=exc)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # closed or broken
                    stream.flush()

        _in_background(clean_up, "baqup-forced-exit").join(
            timeout=max(0.0, deadline - self._clock())
        )
        self._exit_process(code[0])

    def _close_pipe_if_unused(self) -> None:
        """With ``_pipe_lock`` held: close the pipe once nothing can write to it."""
        if self._pipe_open and self._watchdog_done and not self._wakeup_installed:
            self._pipe_open = False
            os.close(self._wake_r)
            os.close(self._wake_w)


def _in_background(target: Callable[[], None], name: str) -> threading.Thread:
    """Start ``target`` in a daemon thread (the process may end before it does)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
