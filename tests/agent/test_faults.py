"""Fault injection on real agent processes: SIGKILL and SIGTERM at random moments.

Each trial runs the example filesystem agent on a ~32 MiB tree (zstd level 9 in one
thread, so the data phase lasts a few tenths of a second) and signals it at a random delay
after its first bus event (by then the SDK's handlers are installed), spread over a
calibration run and a little past its end, so that signals land while files are being
read, while the artifact is written, during publication and after it. Trials run two at a
time.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from baqup_agent._job import run_job
from baqup_agent._keys import EVENTS_FILE, SPOOL_SUBDIR
from baqup_agent.contract import ExitCode
from tests.agent.helpers import (
    FS_AGENT,
    SAMPLE_AGENT,
    agent_command,
    assert_complete_output,
    assert_legal_states,
    events,
    job_env,
    load_agent,
    process_env,
    the_result,
)

TRIALS = 30
pytestmark = pytest.mark.timeout(900)  # 60+ agent processes: generous on a loaded machine
GRACE = 5.0
SLOW = {"BAQUP_FS_ZSTD_LEVEL": "9", "BAQUP_FS_THREADS": "0"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MiB of random bytes and 16 MiB of text in 32 files and a few directories."""
    root = tmp_path_factory.mktemp("source")
    rng = random.Random(7)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"eta"]
    for i in range(16):
        folder = root / f"dir-{i % 4}"
        folder.mkdir(exist_ok=True)
        (folder / f"random-{i}.bin").write_bytes(rng.randbytes(1 << 20))
        text = b" ".join(rng.choices(words, k=200_000))[: 1 << 20]
        (folder / f"text-{i}.txt").write_bytes(text)
    (root / "link").symlink_to("dir-0/text-0.txt")
    return root


@dataclass
class Trial:
    """One agent process, signalled ``delay`` seconds after its first bus event."""

    staging: Path
    env: dict[str, str]
    delay: float | None = None
    signals: tuple[int, ...] = ()
    returncode: int | None = None
    signalled_at: float | None = None
    exited_at: float | None = None

    def run(self, script: Path = FS_AGENT) -> Trial:
        proc = subprocess.Popen(
            agent_command(script),
            env=process_env(self.env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if self.delay is not None:
                first = self.staging / SPOOL_SUBDIR / self.env["BAQUP_JOB_ID"] / EVENTS_FILE
                while not first.exists() and proc.poll() is None:
                    time.sleep(0.005)
                time.sleep(self.delay)
                self.signalled_at = time.monotonic()
                for signum in self.signals:
                    if proc.poll() is None:
                        proc.send_signal(signum)
            self.returncode = proc.wait(timeout=60)
            self.exited_at = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return self

    @property
    def stop_seconds(self) -> float:
        assert self.signalled_at is not None and self.exited_at is not None
        return self.exited_at - self.signalled_at


def backup_env(staging: Path, source: Path, job_id: str = "job-1", **extra: str) -> dict[str, str]:
    return job_env(
        staging, job_id, BAQUP_FS_SOURCE=source, BAQUP_GRACE_PERIOD=GRACE, **SLOW, **extra
    )


@pytest.fixture(scope="module")
def job_seconds(source: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long an uninterrupted job lasts after its first bus event (calibration)."""
    staging = tmp_path_factory.mktemp("calibration")
    trial = Trial(staging, backup_env(staging, source), delay=0.0)
    trial.run()
    assert trial.returncode == 0
    return trial.stop_seconds


def random_moment(rng: random.Random, job_seconds: float) -> float:
    """A delay after the first bus event: two trials in three during the work, the rest
    around its end (publication, reporting, exit). Machine load shifts the real timing,
    so the calibration only shapes the spread."""
    if rng.random() < 2 / 3:
        return rng.uniform(0, 0.8 * job_seconds)
    return rng.uniform(0.8 * job_seconds, 1.2 * job_seconds)


def signalled_trials(
    tmp_path: Path, source: Path, job_seconds: float, seed: int, signum: int
) -> list[Trial]:
    """``TRIALS`` backups, each sent ``signum`` at a random moment (seeded)."""
    rng = random.Random(seed)
    trials = [
        Trial(tmp_path / f"trial-{i}", backup_env(tmp_path / f"trial-{i}", source))
        for i in range(TRIALS)
    ]
    for trial in trials:
        trial.delay = random_moment(rng, job_seconds)
        trial.signals = (signum,)
    return trials


def run_all(trials: list[Trial]) -> Iterator[Trial]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield from pool.map(Trial.run, trials)


def test_sigkill_never_leaves_a_partial_output(
    source: Path, job_seconds: float, tmp_path: Path
) -> None:
    trials = signalled_trials(tmp_path, source, job_seconds, 1, signal.SIGKILL)
    published = 0
    reruns: list[Trial] = []
    for trial in run_all(trials):
        output = trial.staging / "job-1"
        if trial.returncode == -signal.SIGKILL:
            if output.exists():  # killed after the rename: the output is whole
                published += 1
                assert_complete_output(output)
        else:
            assert trial.returncode == 0  # finished before the kill
            assert_complete_output(output)
            published += 1
        if not output.exists():
            reruns.append(Trial(trial.staging, trial.env))
    agent = load_agent(FS_AGENT, "FilesystemAgent")
    for rerun in reruns:  # the next run for the job succeeds
        log = io.StringIO()
        code = run_job(agent, environ=rerun.env, install_signals=False, log_stream=log)
        assert code == 0, log.getvalue()
        assert_complete_output(rerun.staging / "job-1")
        assert not (rerun.staging / ".staging" / "job-1").exists()
        assert the_result(events(rerun.staging))["status"] == "success"
    print(f"SIGKILL: {len(reruns)} before publication, {published} after")
    assert len(reruns) >= TRIALS // 4, "too few kills landed before publication"
    assert published + len(reruns) == TRIALS


def test_sigterm_stops_within_the_grace_period_and_publishes_nothing(
    source: Path, job_seconds: float, tmp_path: Path
) -> None:
    trials = signalled_trials(tmp_path, source, job_seconds, 2, signal.SIGTERM)
    cancelled = 0
    for trial in run_all(trials):
        output = trial.staging / "job-1"
        msgs = events(trial.staging)
        result = the_result(msgs)
        assert_legal_states(msgs)
        assert trial.stop_seconds < GRACE
        if trial.returncode == ExitCode.GENERAL_FAILURE:
            cancelled += 1
            assert result["status"] == "cancelled" and result["exit_code"] == 1
            assert not output.exists()
            assert not (trial.staging / ".staging" / "job-1").exists()
        else:  # the signal came after publication began: the job finished
            assert trial.returncode == ExitCode.SUCCESS
            assert result["status"] == "success"
            assert_complete_output(output)
    print(f"SIGTERM: {cancelled} cancelled (exit 1), {TRIALS - cancelled} finished (exit 0)")
    assert cancelled >= TRIALS // 4, "too few signals landed before publication"


def _agent_time(message: dict[str, Any]) -> float:
    """A bus message's timestamp (the agent's own clock), in seconds."""
    return datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00")).timestamp()


def test_grace_period_watchdog_ends_a_job_that_never_checks(tmp_path: Path) -> None:
    """The stubborn job (30 s, no checkpoint) is ended by the watchdog, not by itself.

    No window of this machine's scheduling is measured: the order of the agent's own
    messages shows the cancel was seen before the watchdog ended the job, and the
    agent's own timestamps that it reported within the grace period. The exit cannot
    come before the watchdog's time (the grace period less its reserve, 1.2 s), which
    a loaded machine only makes later.
    """
    grace = 1.5
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="stubborn", BAQUP_GRACE_PERIOD=grace)
    trial = Trial(tmp_path, env, delay=0.5, signals=(signal.SIGTERM,)).run(SAMPLE_AGENT)
    assert trial.returncode == ExitCode.GENERAL_FAILURE
    assert trial.stop_seconds > 1.0
    msgs = events(tmp_path)
    result = the_result(msgs)
    assert result["status"] == "cancelled" and "grace period expired" in result["error"]
    seen = [m for m in msgs if m["type"] == "heartbeat" and m["intent"] == "failing"]
    assert seen, "the cancel was announced (heartbeat intent failing)"
    assert [m["type"] for m in msgs if m["seq"] > seen[0]["seq"]][-2:] == [
        "state_change",
        "result",
    ]
    assert _agent_time(result) - _agent_time(seen[0]) <= grace
    assert not (tmp_path / "job-1").exists()
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_second_signal_forces_a_fast_exit(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="stubborn", BAQUP_GRACE_PERIOD=60)
    signals = (signal.SIGTERM, signal.SIGINT)
    trial = Trial(tmp_path, env, delay=0.5, signals=signals).run(SAMPLE_AGENT)
    assert trial.returncode == ExitCode.GENERAL_FAILURE
    assert trial.stop_seconds < 10  # at once, not after the 60 s grace period
    result = the_result(events(tmp_path))
    assert result["status"] == "cancelled" and "second signal" in result["error"]
    assert assert_legal_states(events(tmp_path))[-1].value == "failed"
    assert not (tmp_path / "job-1").exists()
    assert not (tmp_path / ".staging" / "job-1").exists()


def test_sigterm_to_a_checkpointing_job_exits_1_quickly(tmp_path: Path) -> None:
    env = job_env(tmp_path, BAQUP_TEST_BEHAVIOUR="slow", BAQUP_GRACE_PERIOD=30)
    trial = Trial(tmp_path, env, delay=0.3, signals=(signal.SIGTERM,)).run(SAMPLE_AGENT)
    assert trial.returncode == ExitCode.GENERAL_FAILURE
    assert trial.stop_seconds < 10  # at the next checkpoint, not at the 30 s grace period
    assert the_result(events(tmp_path))["error"] == "Cancelled: received SIGTERM"
    assert os.listdir(tmp_path / ".staging") == [".locks"]
