"""Agent cold start: exec to the ``job started`` log line, and to the first heartbeat.

The example filesystem agent backs up a one-file tree as a real process (spool bus, no
Redis). Peer, same run, interleaved: ``python -c "from pydantic import BaseModel"``,
the least any pydantic-based agent imports. Report-only rows (what an agent author
feels; the import rows of bench_import hold the targets): the median of BENCH_REPEAT
runs (default 5).

Both interpreters run with their bytecode cached (``bench_agent.python_env``), filled by
one unmeasured run each.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._report import row
from bench.bench_agent import AGENT, python_env

WORK = Path(__file__).resolve().parent / ".work" / "coldstart"
PEER = "from pydantic import BaseModel"
_POLL = 0.001


def _agent_start(source: Path, staging: Path, job_id: str) -> tuple[float, float]:
    """Seconds from exec to the ``job started`` line, and to the first heartbeat."""
    env = python_env()
    env.update(
        BAQUP_JOB_ID=job_id,
        BAQUP_AGENT_ID="bench",
        BAQUP_ROLE="backup",
        BAQUP_STAGING_DIR=str(staging),
        BAQUP_FS_SOURCE=str(source),
        BAQUP_LOG_LEVEL="INFO",
    )
    events = staging / ".spool" / job_id / "events.jsonl"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(AGENT)], env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    started = heartbeat = None
    for line in proc.stderr:
        if started is None and b'"job started"' in line:
            started = time.perf_counter() - t0
            break
    while heartbeat is None and proc.poll() is None:
        # the spool is the bus here: its file is the first place a heartbeat shows
        if events.exists() and b'"heartbeat"' in events.read_bytes():
            heartbeat = time.perf_counter() - t0
        else:
            time.sleep(_POLL)
    proc.stderr.read()
    if proc.wait() != 0 or started is None:
        raise RuntimeError(f"the agent exited {proc.returncode}")
    if heartbeat is None and b'"heartbeat"' in events.read_bytes():
        heartbeat = time.perf_counter() - t0  # sent just before the end: an upper bound
    return started, heartbeat if heartbeat is not None else float("nan")


def _peer() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PEER], env=python_env(), check=True)
    return time.perf_counter() - t0


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    shutil.rmtree(WORK, ignore_errors=True)
    try:
        source, staging = WORK / "source", WORK / "staging"
        source.mkdir(parents=True)
        (source / "file").write_bytes(b"x")
        _peer()  # unmeasured: these two fill the bytecode cache
        _agent_start(source, staging, "cold-warm")
        peers, starts, beats = [], [], []
        for i in range(repeat):
            peers.append(_peer())
            started, heartbeat = _agent_start(source, staging, f"cold-{i}")
            starts.append(started)
            beats.append(heartbeat)
        peer = statistics.median(peers)
        for label, samples in (("job started", starts), ("first heartbeat", beats)):
            value = statistics.median(samples)
            row(
                f"cold start: exec to {label}",
                value / peer,
                "report",
                None,
                f"{value * 1000:.0f} ms vs {peer * 1000:.0f} ms ({PEER}), median of {repeat}",
            )
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0
