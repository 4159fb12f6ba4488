"""Child processes (``Context.run_child``): streams, stderr, exit codes, secrets, stopping.

Unit tests call ``child.run_child`` with a small stand-in for the context and a real
``Cancellation``; the process tests run ``tests/agent/child_agent.py`` as a real agent
process and look in ``/proc`` for what its children left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent import DataError, ResourceUnavailable, testing
from baqup_agent._child import ChildFailed, SecretFile, run_child
from baqup_agent._errors import AgentError, Cancelled, InternalError, IOFailure
from baqup_agent._lifecycle import Cancellation
from baqup_agent._logger import Logger
from baqup_agent._redaction import REDACTOR
from baqup_agent._secret import Secret
from baqup_agent.contract import ExitCode
from baqup_agent.testing import LogCapture
from tests.agent.helpers import events, job_env, load_agent, process_env, the_result

pytestmark = pytest.mark.timeout(120)

CHILD_AGENT = Path(__file__).resolve().parent / "child_agent.py"
ChildAgent = load_agent(CHILD_AGENT, "ChildAgent")

# A shell that ignores SIGTERM, records its pid and a grandchild's (which inherits the
# ignored SIGTERM), then waits forever while writing to stdout.
STUBBORN_TREE = (
    'trap \'\' TERM; echo $$ >> "$PIDS"; sleep 1000 & echo $! >> "$PIDS"; '
    "while :; do head -c 65536 /dev/zero; sleep 0.05; done"
)
# The same as one process (exec keeps the ignored SIGTERM and the parent-death signal).
STUBBORN_SINGLE = "trap '' TERM; echo $$ >> \"$PIDS\"; exec sleep 1000"
# A child that stops on SIGTERM, with a grandchild that does too.
POLITE_TREE = 'echo $$ >> "$PIDS"; sleep 1000 & echo $! >> "$PIDS"; wait'
SHAPES = {"stubborn-tree": (STUBBORN_TREE, 2), "stubborn-single": (STUBBORN_SINGLE, 1)}


class FakeContext:
    """What ``run_child`` uses of a Context: a logger, progress, checkpoints."""

    def __init__(self, cancellation: Cancellation) -> None:
        self.log = LogCapture()
        self.logger = Logger("job-1", "agent-1", level="debug", stream=self.log)
        self.cancellation = cancellation
        self.bytes = 0
        self.cancel_when: Callable[[], bool] = lambda: False

    def progress(self, *, bytes: int = 0, items: int = 0, message: str | None = None) -> None:
        self.bytes += bytes

    def checkpoint(self) -> None:
        if self.cancel_when():
            self.cancellation.request("test cancel")
        self.cancellation.check()

    def run(self, script: str, **options: Any) -> Any:
        return run_child(self, self.cancellation, ["sh", "-c", script], **options)

    def lines(self) -> list[dict[str, Any]]:
        return self.log.records()


@pytest.fixture
def ctx() -> Iterator[FakeContext]:
    cancellation = Cancellation(30.0, Logger("job-1", "agent-1", stream=io.StringIO()))
    try:
        yield FakeContext(cancellation)
    finally:
        cancellation.stop()


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` is no longer a running process (absent, or a zombie) in /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def read_pids(path: Path, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"the child did not write {count} pids to {path}")


@pytest.fixture
def pidfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``$PIDS`` for the children; whatever they recorded is killed afterwards."""
    path = tmp_path / "pids"
    monkeypatch.setenv("PIDS", str(path))
    yield path
    if path.exists():
        for pid in path.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


# -- streams ----------------------------------------------------------------------------


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(0, 3 << 20), seed=st.integers(0, 2**32 - 1))
def test_stdout_streams_into_the_writer_with_progress(
    ctx: FakeContext, size: int, seed: int
) -> None:
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)
    out = io.BytesIO()
    before = ctx.bytes
    result = run_child(ctx, ctx.cancellation, ["cat"], stdin=io.BytesIO(data), stdout=out)
    assert result.returncode == 0 and out.getvalue() == data
    assert result.stdout_bytes == len(data) == ctx.bytes - before


def test_stdout_is_captured_without_a_writer(ctx: FakeContext) -> None:
    assert ctx.run("printf 'PostgreSQL 15.4\\n'").stdout == b"PostgreSQL 15.4\n"


def test_stdin_is_fed_whole(ctx: FakeContext) -> None:
    data = os.urandom(5 << 20)
    result = ctx.run("sha256sum", stdin=io.BytesIO(data))
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_a_child_that_stops_reading_its_input_fails(ctx: FakeContext) -> None:
    with pytest.raises(ChildFailed, match="before reading all of its input"):
        ctx.run("head -c 10 > /dev/null", stdin=io.BytesIO(bytes(4 << 20)))


def test_stderr_lines_become_log_lines_in_order(ctx: FakeContext) -> None:
    ctx.run(
        "for i in 1 2 3; do echo line-$i >&2; done; printf 'no newline' >&2", stderr_level="warn"
    )
    lines = [r for r in ctx.lines() if r.get("stream") == "stderr"]
    assert [r["message"] for r in lines] == ["line-1", "line-2", "line-3", "no newline"]
    assert {r["level"] for r in lines} == {"WARN"} and {r["child"] for r in lines} == {"sh"}


def test_a_long_stderr_line_is_logged_in_pieces(ctx: FakeContext) -> None:
    from baqup_agent._child import MAX_STDERR_LINE

    ctx.run(f"head -c {3 * MAX_STDERR_LINE + 5} /dev/zero | tr '\\0' x >&2")
    pieces = [r["message"] for r in ctx.lines() if r.get("stream") == "stderr"]
    assert [len(p) for p in pieces] == [MAX_STDERR_LINE] * 3 + [5]


# Secrets: quotes, backslashes, control characters, non-ASCII, URL-special characters.
secrets = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=4,
    max_size=40,
).filter(lambda s: s.strip() == s and len(s.strip()) >= 4)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=secrets, how=st.sampled_from(["env", "file"]), where=st.sampled_from(["stderr", "exit"])
)
def test_a_secret_the_child_prints_is_redacted(
    ctx: FakeContext, secret: str, how: str, where: str
) -> None:
    value = Secret(secret)
    read = '"$S"' if how == "env" else '"$(cat "$S")"'
    env = {"S": value if how == "env" else SecretFile(value)}
    script = f"printf 'user=app password=%s end\\n' {read} >&2"
    try:
        if where == "exit":
            with pytest.raises(ChildFailed) as failed:
                ctx.run(script + "; exit 7", env=env)
            assert secret not in str(failed.value)
            assert "[REDACTED]" in str(failed.value)
        else:
            ctx.run(script, env=env)
        output = ctx.log.getvalue()
        for form in (
            secret,
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
        ):
            assert form not in output
        assert "[REDACTED]" in output
    finally:
        REDACTOR.clear()
        ctx.log.seek(0)
        ctx.log.truncate()


# -- secrets ----------------------------------------------------------------------------


def test_a_secret_file_holds_the_secret_and_is_private(ctx: FakeContext) -> None:
    value = Secret("s3cr3t:with\\odd'chars\n")
    result = ctx.run('stat -L -c %a "$F" >&2; cat "$F"; cat "$F"', env={"F": SecretFile(value)})
    assert result.stdout == value.reveal().encode() * 2  # readable more than once
    assert ctx.lines()[-2]["message"] == "400"


def test_a_secret_file_may_be_an_argument(ctx: FakeContext) -> None:
    value = Secret("argument-secret")
    result = run_child(ctx, ctx.cancellation, ["cat", SecretFile(value)])
    assert result.stdout == b"argument-secret"


@pytest.mark.parametrize(
    "arg", ["{s}", "--password={s}", "postgres://u:{s}@db/x", "pre {s} post", "{s}{s}"]
)
def test_a_secret_on_the_command_line_is_refused(ctx: FakeContext, arg: str) -> None:
    value = Secret("pa ss/w:ord")
    with pytest.raises(InternalError, match="command-line argument holds a secret") as err:
        run_child(ctx, ctx.cancellation, ["echo", arg.format(s=value.reveal())])
    assert value.reveal() not in str(err.value)
    with pytest.raises(InternalError, match="must not be on a command line"):
        run_child(ctx, ctx.cancellation, ["echo", value])  # type: ignore[list-item]


def test_the_child_does_not_inherit_the_agent_configuration(
    ctx: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAQUP_DB_PASSWORD", "inherited-secret")
    monkeypatch.setenv("BAQUP_DB_PASSWORD_FILE", "/run/secrets/pw")
    monkeypatch.setenv("KEEP_ME", "yes")
    result = ctx.run("env", env={"GIVEN": Secret("given-secret")})
    env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    assert not [k for k in env if k.startswith("BAQUP_")]
    assert env["KEEP_ME"] == "yes" and env["GIVEN"] == "given-secret"


# -- exit codes -------------------------------------------------------------------------

MAPPABLE = [DataError, ResourceUnavailable, IOFailure, InternalError]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    code=st.integers(0, 255),
    mapping=st.dictionaries(st.integers(1, 255), st.sampled_from(MAPPABLE), max_size=4),
    ok=st.sets(st.integers(1, 255), max_size=2),
)
def test_exit_codes_map_to_the_taxonomy(
    ctx: FakeContext, code: int, mapping: dict[int, type[AgentError]], ok: set[int]
) -> None:
    ok_codes = (0, *ok)

    def run() -> Any:
        return ctx.run(f"echo why-{code} >&2; exit {code}", exit_codes=mapping, ok_codes=ok_codes)

    if code in ok_codes:
        assert run().returncode == code
        return
    expected = mapping.get(code, ChildFailed)
    with pytest.raises(AgentError) as err:
        run()
    assert type(err.value) is expected
    assert str(err.value) == f"sh exited with {code}: why-{code}"
    if expected is ChildFailed:
        assert err.value.exit_code == ExitCode.GENERAL_FAILURE


@pytest.mark.parametrize(
    "signum",
    [signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL, signal.SIGUSR1, signal.SIGHUP, signal.SIGPIPE],
)
def test_a_child_killed_by_a_signal_fails_naming_it(ctx: FakeContext, signum: int) -> None:
    with pytest.raises(ChildFailed, match=f"killed by {signal.Signals(signum).name}"):
        ctx.run(f"kill -{int(signum)} $$")


@pytest.mark.parametrize("program", ["/nonexistent/pg_dump", "no-such-tool-here"])
def test_a_program_that_cannot_start_is_resource_unavailable(
    ctx: FakeContext, program: str
) -> None:
    with pytest.raises(ResourceUnavailable, match=f"cannot run {Path(program).name}"):
        run_child(ctx, ctx.cancellation, [program])


def test_an_empty_command_is_an_agent_bug(ctx: FakeContext) -> None:
    with pytest.raises(InternalError, match="argv is empty"):
        run_child(ctx, ctx.cancellation, [])


# -- stopping ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["stubborn-tree", "stubborn-single", "polite-tree"])
def test_cancel_mid_stream_stops_the_whole_group(
    ctx: FakeContext, pidfile: Path, shape: str
) -> None:
    script, count = SHAPES.get(shape, (POLITE_TREE, 2))
    ctx.cancel_when = lambda: (
        len(pidfile.read_text().split()) >= count if pidfile.exists() else False
    )
    with pytest.raises(Cancelled):
        ctx.run(script, stdout=io.BytesIO(), term_timeout=0.3)
    pids = read_pids(pidfile, count)
    assert all(gone(pid) for pid in pids)
    killed = any("did not stop on SIGTERM" in r["message"] for r in ctx.lines())
    assert killed == shape.startswith("stubborn")


def test_leftovers_of_a_finished_child_are_killed(ctx: FakeContext, pidfile: Path) -> None:
    ctx.run("trap '' TERM; sleep 1000 & echo $! >> \"$PIDS\"")
    assert gone(read_pids(pidfile, 1)[0])


def test_the_forced_exit_hook_kills_the_group(pidfile: Path) -> None:
    exited = threading.Event()
    exits: list[int] = []

    def exit_process(code: int) -> None:  # records the exit instead of ending pytest
        exits.append(code)
        exited.set()

    logger = Logger("job-1", "agent-1", stream=io.StringIO())
    cancellation = Cancellation(0.5, logger, exit_process=exit_process)
    ctx = FakeContext(cancellation)
    # cancel once the tree is up; term_timeout far beyond the grace period: only the
    # forced exit's hook can stop the child, so run_child returns only after it ran
    ctx.cancel_when = lambda: pidfile.exists() and len(pidfile.read_text().split()) >= 2
    try:
        with pytest.raises(Cancelled):
            ctx.run(STUBBORN_TREE, stdout=io.BytesIO(), term_timeout=600)
        assert exited.wait(30)
    finally:
        cancellation.stop()
    assert exits == [1]
    assert all(gone(pid) for pid in read_pids(pidfile, 2))


# -- through a real agent ---------------------------------------------------------------


def run_agent(tmp_path: Path, script: str, **extra: Any) -> int:
    env = job_env(tmp_path / "staging", CHILD_TEST_SCRIPT=script, **extra)
    os.environ.update({k: v for k, v in env.items() if k.startswith("CHILD_TEST_")})
    try:
        return testing.run_agent(ChildAgent, env).exit_code
    finally:
        for key in [k for k in os.environ if k.startswith("CHILD_TEST_")]:
            del os.environ[key]


def test_round_trip_through_an_agent(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    assert run_agent(tmp_path, "head -c 2000000 /dev/urandom") == 0
    data = (staging / "job-1" / "out.bin").read_bytes()
    assert len(data) == 2000000
    env = job_env(staging, "r1", "restore", BAQUP_RESTORE_SOURCE=staging / "job-1")
    env["CHILD_TEST_SCRIPT"] = f"cat > {tmp_path / 'restored'}"
    os.environ["CHILD_TEST_SCRIPT"] = env["CHILD_TEST_SCRIPT"]
    try:
        assert testing.run_agent(ChildAgent, env).exit_code == 0
    finally:
        del os.environ["CHILD_TEST_SCRIPT"]
    assert (tmp_path / "restored").read_bytes() == data


@pytest.mark.parametrize(("child_code", "job_code"), [(3, 1), (65, 65), (69, 69), (1, 1)])
def test_the_job_ends_with_the_mapped_code(tmp_path: Path, child_code: int, job_code: int) -> None:
    code = run_agent(tmp_path, f"echo partial; echo failing >&2; exit {child_code}")
    assert code == job_code
    result = the_result(events(tmp_path / "staging"))
    assert (
        result["status"] == "failed" and f"sh exited with {child_code}: failing" in result["error"]
    )
    assert not (tmp_path / "staging" / "job-1").exists()  # nothing published


def start_agent(tmp_path: Path, script: str, **extra: Any) -> subprocess.Popen[bytes]:
    env = job_env(tmp_path / "staging", CHILD_TEST_SCRIPT=script, **extra)
    return subprocess.Popen(
        [sys.executable, str(CHILD_AGENT)],
        env=process_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("how", ["grace period", "second signal"])
def test_a_forced_exit_leaves_no_child(tmp_path: Path, pidfile: Path, shape: str, how: str) -> None:
    script, count = SHAPES[shape]
    # term_timeout far beyond the grace period: only the forced exit can stop the child
    proc = start_agent(tmp_path, script, BAQUP_GRACE_PERIOD=1, CHILD_TEST_TERM=600)
    pids = read_pids(pidfile, count)
    proc.send_signal(signal.SIGTERM)
    if how == "second signal":
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 1, err.decode()
    assert b"forced exit" in err
    assert all(gone(pid) for pid in pids), [
        Path(f"/proc/{p}/status").read_text() for p in pids if not gone(p, 0)
    ]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_cancel_ends_the_job_and_its_children(tmp_path: Path, pidfile: Path, shape: str) -> None:
    script, count = SHAPES[shape]
    proc = start_agent(tmp_path, script, BAQUP_GRACE_PERIOD=30, CHILD_TEST_TERM=0.3)
    pids = read_pids(pidfile, count)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 1, err.decode()
    assert all(gone(pid) for pid in pids)
    assert b"forced exit" not in err  # the job stopped by itself, within the grace period
    result = the_result(events(tmp_path / "staging"))
    assert result["status"] == "cancelled"
    assert not (tmp_path / "staging" / "job-1").exists()


def test_a_killed_agent_takes_its_child_along(tmp_path: Path, pidfile: Path) -> None:
    proc = start_agent(tmp_path, STUBBORN_SINGLE)
    (pid,) = read_pids(pidfile, 1)
    proc.kill()
    finish(proc)
    assert gone(pid)  # the parent-death signal


def test_secret_file_permissions_in_proc(ctx: FakeContext) -> None:
    value = Secret("never-on-disk")
    result = ctx.run('readlink "$F"; stat -L -c %F "$F"', env={"F": SecretFile(value)})
    target, kind = result.stdout.decode().splitlines()
    assert target.startswith("/memfd:") and kind == "regular file"  # libpq wants one


def test_forced_exit_hooks_run_even_when_one_fails_and_not_once_removed() -> None:
    exited = threading.Event()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("hook failed")

    log = io.StringIO()
    cancellation = Cancellation(
        0.2,
        Logger("job-1", "agent-1", stream=log),
        exit_process=lambda code: exited.set(),
    )
    try:
        cancellation.on_forced_exit(broken)
        remove = cancellation.on_forced_exit(lambda: calls.append("removed"))
        cancellation.on_forced_exit(lambda: calls.append("kept"))
        remove()
        cancellation.request("test")
        assert exited.wait(30)
    finally:
        cancellation.stop()
    assert calls == ["broken", "kept"]
    assert "forced exit hook failed" in log.getvalue()
