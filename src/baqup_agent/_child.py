"""Child processes as part of the job: ``Context.run_child`` (pg_dump, mysqldump, restic...).

A child started here

* runs in its own session and process group, so that the job can signal it and every
  process it starts as one, and a Ctrl-C or a signal sent to the agent's own group does
  not reach it behind the job's back;
* gets SIGKILL from the kernel when the agent dies (Linux ``PR_SET_PDEATHSIG``). The
  kernel sends it when the *thread* that forked the child ends, so ``run_child`` forks
  from the calling thread and does not return before the child is gone: that thread
  outlives the child unless the whole process dies, which is when the signal is wanted;
* streams its standard output into a writer (an artifact) or feeds a reader (an
  artifact being restored) into its standard input, counting progress and checking for
  cancellation while it waits;
* has every line of its standard error logged (redacted like every log line);
* ends the call with a ``ChildResult`` on an accepted exit code, or raises: the agent's
  ``exit_codes`` mapping, or ``ChildFailed`` (exit 1), or ``ResourceUnavailable`` (69)
  when the program cannot be started;
* on cancellation (or any exception while it runs) gets SIGTERM to its group, then
  SIGKILL once ``term_timeout`` is over (default: half the grace period, leaving the
  other half to the job to clean up and report); a forced exit of the job SIGKILLs
  every group the job started before the process ends;
* when it exits, whatever is left of its group is killed before the child is reaped
  (its pid, and so the group id, stays reserved until then, so no unrelated process
  can be hit).

Secrets reach the child only where the agent puts them: an environment variable whose
value is a ``Secret``, or a ``SecretFile`` (an environment variable or an argument that
names a file holding the secret: an anonymous in-memory file on Linux, never on disk).
A ``Secret``, or any text holding a registered secret, in the command line raises
``InternalError``: command lines are visible to every user of the machine. The child
inherits the agent's environment without its ``BAQUP_*`` variables (the agent's own
configuration, secrets included).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict

from baqup_agent._errors import AgentError, InternalError, ResourceUnavailable
from baqup_agent._redaction import redact
from baqup_agent._secret import Secret
from baqup_agent.contract import ExitCode

if TYPE_CHECKING:
    from baqup_agent._artifacts import ByteSink, ByteSource
    from baqup_agent._lifecycle import Cancellation
    from baqup_agent._logger import Logger


class JobContext(Protocol):
    """What a child process uses of the job's ``Context`` (the author API lives a layer
    above; this module does not import it)."""

    logger: Logger

    def checkpoint(self) -> None:
        """Raise ``Cancelled`` when the job is being cancelled."""

    def progress(self, *, bytes: int = 0, items: int = 0, message: str | None = None) -> None:
        """Count work done."""


POLL_INTERVAL = 0.1
"""Seconds, at most, between two cancellation checks while the child is silent."""

CHUNK = 1 << 20
"""Bytes read from the child's stdout (or fed to its stdin) at a time."""

MAX_STDERR_LINE = 8192
"""Characters per log line: a longer stderr line is logged in pieces."""

MAX_CAPTURE = 1 << 20
"""Bytes of stdout kept in ``ChildResult.stdout`` when no writer is given."""

STDERR_TAIL = 5
"""Last stderr lines quoted in the error of a failed child."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ChildFailed(AgentError):
    """A child process exited with a code the agent did not map (exit 1, retryable)."""

    exit_code = ExitCode.GENERAL_FAILURE


class SecretFile:
    """Pass a secret to a child as a file: in ``env`` or ``argv``, it becomes the path.

    On Linux the file is an anonymous in-memory file (``memfd``, mode 0400) that the
    child reaches as ``/dev/fd/N``: nothing is written to disk and it vanishes with the
    child. Elsewhere it is a 0600 temporary file removed when the child has exited.
    ``content`` is the whole file, e.g. a ``.pgpass`` line.
    """

    def __init__(self, content: Secret | str) -> None:
        self.secret = content if isinstance(content, Secret) else Secret(content)

    def __repr__(self) -> str:
        return "SecretFile(********)"


@dataclass
class ChildResult:
    """How a child ended (only accepted exit codes reach the caller)."""

    returncode: int
    stdout: bytes = b""
    """The captured standard output, when no ``stdout`` writer was given (at most
    ``MAX_CAPTURE`` bytes)."""
    stdout_bytes: int = 0
    """Bytes the child wrote to its standard output."""
    stderr_tail: list[str] = field(default_factory=list)
    """Its last lines of standard error (redacted)."""


class ChildOptions(TypedDict, total=False):
    """Keyword arguments of ``Context.run_child`` (see ``run_child``)."""

    stdout: ByteSink | None
    stdin: ByteSource | None
    env: Mapping[str, str | Secret | SecretFile] | None
    cwd: str | os.PathLike[str] | None
    ok_codes: Sequence[int]
    exit_codes: Mapping[int, type[AgentError]] | None
    term_timeout: float | None
    stderr_level: str
    name: str | None
    count_progress: bool


def run_child(
    ctx: JobContext,
    cancellation: Cancellation,
    argv: Sequence[str | os.PathLike[str] | SecretFile],
    *,
    stdout: ByteSink | None = None,
    stdin: ByteSource | None = None,
    env: Mapping[str, str | Secret | SecretFile] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ok_codes: Sequence[int] = (0,),
    exit_codes: Mapping[int, type[AgentError]] | None = None,
    term_timeout: float | None = None,
    stderr_level: str = "info",
    name: str | None = None,
    count_progress: bool = True,
) -> ChildResult:
    """Run ``argv`` as a child of the job and wait for it (``Context.run_child``)."""
    if not argv:
        raise InternalError("run_child needs a program to run (argv is empty)")
    if term_timeout is None:
        term_timeout = cancellation.grace_period / 2
    with _SecretFiles() as files:
        args = [files.path(a) if isinstance(a, SecretFile) else _plain_arg(a) for a in argv]
        label = name or os.path.basename(args[0])
        child_env = _child_env(env or {}, files)
        ctx.logger.debug("starting child process", child=label, argv=args)
        proc = _start(label, args, child_env, cwd, files.fds, stdin is not None)
        child = _Child(ctx, proc, label, stderr_level)
        unregister = cancellation.on_forced_exit(child.kill_group)
        try:
            child.pump(stdout, stdin, count_progress)
            child.wait_exit()
        except BaseException:
            child.stop(term_timeout)
            raise
        finally:
            child.reap()
            unregister()
    code = child.returncode
    result = ChildResult(code, bytes(child.captured), child.stdout_bytes, list(child.tail))
    ctx.logger.debug("child process exited", child=label, exit_code=code)
    if code in ok_codes:
        if stdin is not None and not child.fed_all:
            raise ChildFailed(f"{label} exited with {code} before reading all of its input")
        return result
    raise _failure(label, code, list(child.tail), exit_codes or {})


def _plain_arg(arg: str | os.PathLike[str] | SecretFile) -> str:
    if isinstance(arg, Secret):
        raise InternalError(
            "a Secret must not be on a command line (every user can read it): pass it "
            "in env or as a SecretFile"
        )
    text = os.fspath(arg)  # type: ignore[arg-type]
    if redact(text) != text:
        raise InternalError(
            "a command-line argument holds a secret (every user can read it): pass it "
            "in env or as a SecretFile"
        )
    return text


def _child_env(env: Mapping[str, str | Secret | SecretFile], files: _SecretFiles) -> dict[str, str]:
    """The agent's environment minus its BAQUP_* configuration, plus ``env``."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
    for key, value in env.items():
        if isinstance(value, SecretFile):
            result[key] = files.path(value)
        elif isinstance(value, Secret):
            result[key] = value.reveal()
        else:
            result[key] = value
    return result


def _failure(
    label: str, code: int, tail: list[str], exit_codes: Mapping[int, type[AgentError]]
) -> AgentError:
    if code < 0:
        what = f"{label} was killed by {_signal_name(-code)}"
    else:
        what = f"{label} exited with {code}"
    if tail:
        what += ": " + " | ".join(tail)
    return exit_codes.get(code, ChildFailed)(what)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _SecretFiles:
    """The files of the ``SecretFile`` values of one child, closed or removed after it."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._paths: list[str] = []

    def path(self, secret_file: SecretFile) -> str:
        data = secret_file.secret.reveal().encode("utf-8", "surrogateescape")
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("baqup-secret", os.MFD_CLOEXEC)
            self.fds.append(fd)
            os.write(fd, data)
            os.fchmod(fd, 0o400)  # tools such as libpq refuse a group/other-readable file
            return f"/dev/fd/{fd}"
        import tempfile

        fd, path = tempfile.mkstemp(prefix="baqup-secret-")  # 0600
        self._paths.append(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def __enter__(self) -> _SecretFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            os.close(fd)
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when this thread ends."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would stop us
            os._exit(1)

    return set_pdeathsig


def _start(
    label: str,
    args: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None,
    fds: list[int],
    feed: bool,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            pass_fds=fds,
            start_new_session=True,  # its own session and process group (pgid = pid)
            preexec_fn=_parent_death_signal(),  # only calls prctl: safe after fork
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ResourceUnavailable(f"cannot run {label}: {exc.strerror}") from exc


class _Child:
    """One running child: its pipes, its group, its exit."""

    def __init__(
        self, ctx: JobContext, proc: subprocess.Popen[bytes], label: str, level: str
    ) -> None:
        self.ctx = ctx
        self.proc = proc
        self.label = label
        self.level = level
        self.returncode = 0
        self.captured = bytearray()
        self.stdout_bytes = 0
        self.fed_all = False
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._stderr_rest = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        self._exited = False  # the child is a zombie or reaped: its group may be killed
        self._reaped = False

    # -- signals --------------------------------------------------------------------

    def kill_group(self) -> None:
        """SIGKILL the child's process group (the forced-exit hook: must never block)."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        if self._reaped:  # the group id may belong to someone else now
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def stop(self, term_timeout: float) -> None:
        """SIGTERM the group, SIGKILL it after ``term_timeout`` seconds; wait for the child."""
        self._signal_group(signal.SIGTERM)
        # Closing our ends makes a child blocked on a full stdout/stderr pipe fail at
        # once; stdin stays open: an early EOF could make a loader commit half a restore.
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        deadline = time.monotonic() + term_timeout
        while not self._poll_exit():
            if time.monotonic() >= deadline:
                self.ctx.logger.warn("child did not stop on SIGTERM; killing it", child=self.label)
                self._signal_group(signal.SIGKILL)
                self._wait_exit()
                break
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    # -- the pipes --------------------------------------------------------------------

    def pump(self, sink: ByteSink | None, source: ByteSource | None, count: bool) -> None:
        """Move data until the child closed its stdout and stderr (and took its input)."""
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            for pipe in (proc.stdout, proc.stderr):
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe.fileno(), selectors.EVENT_READ, pipe)
            pending = b""
            if source is not None:
                assert proc.stdin is not None
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, proc.stdin)
            while sel.get_map():
                self.ctx.checkpoint()
                if self._poll_exit():
                    # A grandchild may hold the pipes open forever: once the child has
                    # exited, take what it wrote and stop (reap() kills the leftovers).
                    self._drain(sel, sink, count)
                    return
                for key, _ in sel.select(POLL_INTERVAL):
                    fd = key.fd
                    if proc.stdin is not None and key.data is proc.stdin:
                        assert source is not None
                        if not pending:
                            pending = source.read(CHUNK)
                            if not pending:
                                self.fed_all = True
                                sel.unregister(fd)
                                proc.stdin.close()
                                continue
                        try:
                            written = os.write(fd, pending)
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # the child stopped reading: its exit tells why
                            sel.unregister(fd)
                            continue
                        pending = pending[written:]
                        continue
                    try:
                        data = os.read(fd, CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        if key.data is proc.stderr:
                            self._stderr(b"", final=True)
                        continue
                    if key.data is proc.stderr:
                        self._stderr(data)
                    else:
                        self._stdout(data, sink, count)

    def _drain(self, sel: selectors.BaseSelector, sink: ByteSink | None, count: bool) -> None:
        """Read what the exited child left in its stdout and stderr pipes."""
        assert self.proc.stdout is not None
        for key in list(sel.get_map().values()):
            if key.data is self.proc.stdin:
                continue
            while True:
                try:
                    data = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    break
                if key.data is self.proc.stdout:
                    if not data:
                        break
                    self._stdout(data, sink, count)
                else:
                    self._stderr(data, final=not data)
                    if not data:
                        break
        if self._stderr_rest:
            self._stderr(b"", final=True)

    def _stdout(self, data: bytes, sink: ByteSink | None, count: bool) -> None:
        self.stdout_bytes += len(data)
        if sink is not None:
            sink.write(data)
        elif len(self.captured) < MAX_CAPTURE:
            self.captured += data[: MAX_CAPTURE - len(self.captured)]
        if count:
            self.ctx.progress(bytes=len(data))

    def _stderr(self, data: bytes, *, final: bool = False) -> None:
        # Redact before splitting: a secret holding a line break that arrived in one
        # read is caught whole. The decoder keeps a character split between reads.
        text = redact(self._stderr_rest + self._decoder.decode(data, final))
        *lines, rest = text.split("\n")
        if final and rest:
            lines.append(rest)
            rest = ""
        # A line without end must not fill the memory: whole pieces go out as they fill,
        # whatever sizes the pipe's reads had.
        while len(rest) > MAX_STDERR_LINE:
            lines.append(rest[:MAX_STDERR_LINE])
            rest = rest[MAX_STDERR_LINE:]
        self._stderr_rest = rest
        for line in lines:
            line = line.rstrip("\r")
            for start in range(0, len(line), MAX_STDERR_LINE):  # a long line in pieces
                piece = line[start : start + MAX_STDERR_LINE]
                if piece.strip():
                    self.tail.append(piece)
                    self.ctx.logger.log(self.level, piece, child=self.label, stream="stderr")

    # -- the exit ---------------------------------------------------------------------

    def _poll_exit(self) -> bool:
        """Whether the child has exited (left as a zombie: its pid stays reserved)."""
        if self._exited:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            info = None
            self._exited = True
            return True
        self._exited = info is not None and info.si_pid == self.proc.pid
        return self._exited

    def _wait_exit(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        self._exited = True

    def wait_exit(self) -> None:
        """Wait until the child exits, checking for cancellation."""
        while not self._poll_exit():
            self.ctx.checkpoint()
            time.sleep(POLL_INTERVAL)

    def reap(self) -> None:
        """Kill what is left of the group, then reap the child and close the pipes."""
        if not self._exited:
            self._signal_group(signal.SIGKILL)
            self._wait_exit()
        self._signal_group(signal.SIGKILL)  # grandchildren left behind are the job's too
        self._reaped = True  # from here on the group id may be reused: never signal it
        self.returncode = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
