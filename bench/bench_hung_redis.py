"""The bus with a hung Redis (process stopped with SIGSTOP), and forced exits.

Hung Redis, for each hang length (10 s and 30 s; BENCH_QUICK=1: 3 s), interval 0.5 s,
TTL 1.5 s: a job thread does fixed units of work (hashing 1 MiB) and reports progress
as ``Context.progress`` does (a message at most once a second); a second thread sends a
progress message every 5 ms, so that the bus is busy and N >= 1000; a heartbeat thread
beats. Rows: the longest gap between heartbeats (any
destination: Redis or the spool, replayed later) against 2 intervals; the work rate
during the hang against the rate in an equal window just before it (target >= 0.8);
messages lost or doubled in the stream once Redis resumed (target 0, N >= 1000).

Forced exits: 20 runs (BENCH_QUICK=1: 5) of an agent that ignores cancellation, at a
0.01 s heartbeat interval, SIGTERM then the grace period (1 s) runs out: messages
after the result in the stream and the spool, and runs without a result (target 0).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson

from baqup_agent._agent import PROGRESS_INTERVAL
from baqup_agent._bus import BusClient
from baqup_agent._heartbeat import HeartbeatThread
from baqup_agent._keys import EVENTS_FILE, SPOOL_SUBDIR, job_keys
from baqup_agent._logger import Logger
from baqup_agent._redis_client import entry_messages
from baqup_agent.contract import LogLevel, Progress
from bench._report import row
from tests.conftest import RedisServer

QUICK = bool(os.environ.get("BENCH_QUICK"))
HANGS = (3.0,) if QUICK else (10.0, 30.0)
INTERVAL = 0.5
TTL = 1.5
RATE_TARGET = 0.8
FORCED_RUNS = 5 if QUICK else 20
FORCED_GRACE = 1.0
UNIT = b"x" * (1 << 20)  # a unit of work: hashing 1 MiB
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_AGENT = ROOT / "tests" / "agent" / "sample_agent.py"


def _stream(url: str, job: str) -> list[dict[str, object]]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        entries = entry_messages(client.xrange(job_keys(job).events))
    finally:
        client.close()
    return [orjson.loads(raw or b"{}") for _, raw in entries]


def _hang(server: RedisServer, seconds: float, tmp: Path) -> bool:
    job = f"bench-hang-{int(seconds)}"
    config = {
        "BAQUP_JOB_ID": job,
        "BAQUP_AGENT_ID": "bench-agent",
        "BAQUP_ROLE": "backup",
        "BAQUP_REDIS_URL": server.url,
        "BAQUP_HEARTBEAT_INTERVAL": INTERVAL,
        "BAQUP_HEARTBEAT_TTL": TTL,
    }
    logger = Logger(job, "bench-agent", LogLevel.WARN, stream=io.StringIO())
    bus = BusClient(config, logger, spool_dir=tmp / "spool")
    beats = HeartbeatThread(bus, "bench-agent", INTERVAL, logger)
    units: list[float] = []  # completion time of each unit of work
    sent = [0, 0]  # progress messages of the job thread, of the chatty thread
    stop = threading.Event()

    def job_thread() -> None:
        last = 0.0
        while not stop.is_set():
            hashlib.sha256(UNIT).digest()
            units.append(time.monotonic())
            if units[-1] - last >= PROGRESS_INTERVAL:
                last = units[-1]
                bus.send_progress(Progress(bytes_done=len(units) << 20, items_done=len(units)))
                sent[0] += 1

    def chatty_thread() -> None:
        while not stop.is_set():
            bus.send_progress(Progress(bytes_done=sent[1], items_done=sent[1]))
            sent[1] += 1
            time.sleep(0.005)

    workers = [threading.Thread(target=job_thread), threading.Thread(target=chatty_thread)]
    beats.start()
    for worker in workers:
        worker.start()
    time.sleep(2.0)  # warm up
    before_start = time.monotonic()
    time.sleep(seconds)
    assert server.proc is not None
    hang_start = time.monotonic()
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        hang_end = time.monotonic()
        os.kill(server.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while not bus.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)
    stop.set()
    for worker in workers:
        worker.join()
    beats.stop()
    bus.close()

    before = sum(before_start <= t < hang_start for t in units) / (hang_start - before_start)
    during = sum(hang_start <= t < hang_end for t in units) / (hang_end - hang_start)
    messages = _stream(server.url, job)
    progress = {m["id"] for m in messages if m.get("type") == "progress"}
    seqs = [m["seq"] for m in messages]
    lost = sum(sent) - len(progress)
    doubled = len(seqs) - len(set(seqs))
    stamps = sorted(
        datetime.fromisoformat(str(m["timestamp"]).replace("Z", "+00:00")).timestamp()
        for m in messages
        if m.get("type") == "heartbeat"
    )
    gap = max(b - a for a, b in itertools.pairwise(stamps))
    ratio = during / before
    label = f"hung Redis {seconds:g} s"
    ok_gap, ok_rate = gap <= 2 * INTERVAL, ratio >= RATE_TARGET
    ok_msgs = lost == 0 and doubled == 0 and sum(sent) >= 1000 and seqs == list(range(len(seqs)))
    row(
        f"{label}: longest heartbeat gap",
        gap / INTERVAL,
        "<= 2 intervals",
        ok_gap,
        f"{gap:.3f} s at interval {INTERVAL} s, {len(stamps)} beats",
    )
    row(
        f"{label}: work rate during/before",
        ratio,
        f">= {RATE_TARGET}",
        ok_rate,
        f"{during:.0f} vs {before:.0f} units/s",
    )
    row(
        f"{label}: messages lost/doubled",
        None,
        "0 / 0",
        ok_msgs,
        f"N={sum(sent)} progress, lost {lost}, doubled {doubled}, {len(messages)} in stream",
    )
    return ok_gap and ok_rate and ok_msgs


def _forced_exits(server: RedisServer, tmp: Path) -> bool:
    after_result = no_result = bad_codes = 0
    for i in range(FORCED_RUNS):
        job = f"bench-forced-{i}"
        staging = tmp / "forced"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")},
            "BAQUP_JOB_ID": job,
            "BAQUP_AGENT_ID": "bench-agent",
            "BAQUP_ROLE": "backup",
            "BAQUP_STAGING_DIR": str(staging),
            "BAQUP_REDIS_URL": server.url,
            "BAQUP_HEARTBEAT_INTERVAL": "0.01",
            "BAQUP_GRACE_PERIOD": str(FORCED_GRACE),
            "BAQUP_TEST_BEHAVIOUR": "stubborn",
            "BAQUP_TEST_SECONDS": "60",
        }
        proc = subprocess.Popen([sys.executable, str(SAMPLE_AGENT)], env=env,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(m.get("to_state") == "running" for m in _stream(server.url, job)):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        bad_codes += code != 1
        time.sleep(0.1)  # a heartbeat that outlived the result would be written by now
        spool = staging / SPOOL_SUBDIR / job / EVENTS_FILE
        spooled = spool.read_bytes().splitlines() if spool.exists() else []
        by_id = {str(m["id"]): m for m in _stream(server.url, job)}
        by_id.update({str(m["id"]): m for m in map(orjson.loads, spooled)})
        ordered = sorted(by_id.values(), key=lambda m: int(str(m["seq"])))
        results = [n for n, m in enumerate(ordered) if m.get("type") == "result"]
        if results:
            after_result += len(ordered) - 1 - results[0]
        else:
            no_result += 1
    ok = after_result == 0 and no_result == 0 and bad_codes == 0
    row(
        "forced exits: messages after the result",
        None,
        "0",
        ok,
        f"{FORCED_RUNS} runs at 0.01 s interval, grace {FORCED_GRACE:g} s: {after_result} "
        f"after, {no_result} without a result, {bad_codes} exit codes other than 1",
    )
    return ok


def main() -> int:
    """Run every measurement; return 1 when a target is missed."""
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-hung-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            for seconds in HANGS:
                failed += not _hang(server, seconds, Path(tmp))
            failed += not _forced_exits(server, Path(tmp))
        finally:
            server.stop(kill=True)
    return 1 if failed else 0
