"""Running as PID 1 of a container without an init: a minimal init in front of the agent.

In a container started without ``--init`` (the usual case, and every Kubernetes pod
without ``shareProcessNamespace``) the agent is PID 1 of its PID namespace. Two things
then differ from an ordinary process:

* orphaned processes (a tool's grandchildren whose parent exited) are re-parented to
  PID 1, and stay zombies until PID 1 waits for them;
* the kernel drops a signal sent to PID 1 whose action is the default one.

Reaping with ``waitpid(-1)`` inside the agent would also reap the children that the
agent waits for itself (``subprocess``, the SDK's child-process helper): their wait
would then fail or report a wrong status, and a failed dump could pass for a
successful one. So, like tini and dumb-init, ``supervise_if_pid1()`` forks instead:
the parent stays PID 1 and does only two things, forward signals to the agent and
reap every child it gets; the child (an ordinary process, PID 2) runs the job, and its
own children are its own to wait for. The parent exits with the child's exit code
(128 + N when the child was killed by signal N).

Signals are blocked before the fork, so none is lost: the parent takes them with
``sigwait`` (a blocked signal is queued even for PID 1), and the child keeps SIGTERM
and SIGINT blocked until ``lifecycle.EarlySignals.install`` has its handlers in place,
so that a ``docker stop`` right at start-up cancels the job instead of killing it.
"""

from __future__ import annotations

import contextlib
import os
import signal

from baqup_agent._lifecycle import HANDLED_SIGNALS

FORWARDED_SIGNALS = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)
"""Signals the PID-1 parent passes on to the agent (as tini does)."""


def supervise_if_pid1() -> None:
    """When this process is PID 1, fork: return in the child, never in the parent.

    Call it once, early, before any thread starts (``run()`` does). Elsewhere it does
    nothing.
    """
    if os.getpid() != 1:
        return
    waited = FORWARDED_SIGNALS | {signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    child = os.fork()
    if child == 0:
        # SIGTERM/SIGINT stay blocked until the SDK's start-up handlers exist.
        signal.pthread_sigmask(signal.SIG_SETMASK, previous | set(HANDLED_SIGNALS))
        return
    os._exit(_supervise(child, waited))


def _supervise(child: int, waited: frozenset[signal.Signals]) -> int:
    """Forward signals to ``child`` and reap every process re-parented to us; return
    ``child``'s exit code once it has ended."""
    while True:
        signum = signal.sigwait(waited)
        if signum != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):  # ended: its SIGCHLD is pending
                os.kill(child, signum)
            continue
        code = _reap(child)
        if code is not None:
            return code


def _reap(child: int) -> int | None:
    """Wait for every ended child; ``child``'s exit code if it was one of them.

    One SIGCHLD may stand for several ended children, hence the loop.
    """
    code: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
