"""The example filesystem agent backing up and restoring a directory, against the shell
pipelines.

Peers, same machine, same run: ``tar -cf - DIR | zstd -1 -T0 > OUT && openssl dgst
-sha256 OUT`` (archive, compress, then checksum: what the agent does in one pass) and
``openssl dgst -sha256 OUT && zstd -dc OUT | tar -xf -`` (verify, then extract).
The agent runs as a real process (``python examples/filesystem_agent/agent.py``, zstd
level 1, every core), interpreter start-up (bytecode cached: ``python_env``) and
configuration included, as the pipeline's start-up is. Targets: wall time at most 1.0x
the pipeline's, both ways; peak RSS of the agent process (backup or restore) under
100 MiB, and within 10% between a SIZE and a 4 x SIZE tree (constant memory).

Environment: BENCH_SIZE_MB (default 1024; half incompressible random bytes, half
text), BENCH_RSS_SCALE (default 4; 0 skips the bigger tree), BENCH_REPEAT (default 5:
best of that many runs of each side, alternating). Data lives in bench/.work/ and is
removed afterwards.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path

from bench._report import row

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "examples" / "filesystem_agent" / "agent.py"
WORK = Path(__file__).resolve().parent / ".work" / "agent"
PYCACHE = WORK.parent / "pycache"  # kept between runs, as an installed agent's bytecode is
FILE_MB = 4
RSS_LIMIT_MIB = 100
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "have",
    "they",
    "one",
    "its",
    "their",
    "all",
    "been",
    "new",
    "who",
    "more",
    "also",
    "backup",
    "restore",
    "archive",
    "container",
    "volume",
    "database",
    "snapshot",
    "checksum",
    "manifest",
]


def rss_row(name: str, peak: int) -> bool:
    """Print the row of a peak RSS (bytes) against RSS_LIMIT_MIB; whether it passed."""
    passed = peak < RSS_LIMIT_MIB << 20
    row(
        name,
        peak / (RSS_LIMIT_MIB << 20),
        "< 1.0",
        passed,
        f"{peak / 2**20:.1f} MiB of {RSS_LIMIT_MIB} MiB",
    )
    return passed


def make_tree(root: Path, size_mb: int, seed: int = 1) -> None:
    """``size_mb`` MiB in 4 MiB files across 16 directories: half random, half text."""
    rng = random.Random(seed)
    blocks = []  # distinct 1 MiB text blocks, so text compresses like text, not like a loop
    for _ in range(32):
        text = " ".join(rng.choices(WORDS, k=220_000)).encode()
        blocks.append(text[: 1 << 20])
    files = max(2, size_mb // FILE_MB)
    for i in range(files):
        folder = root / f"dir-{i % 16:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"file-{i:05d}.{'bin' if i % 2 else 'txt'}", "wb") as f:
            for _ in range(FILE_MB):
                f.write(os.urandom(1 << 20) if i % 2 else rng.choice(blocks))


def run_pipeline(source: Path, out: Path) -> float:
    """Seconds of ``tar | zstd -1 -T0 > out && openssl dgst -sha256 out``."""
    command = (
        f"tar -cf - -C {source.parent} {source.name} | zstd -q -1 -T0 > {out} "
        f"&& openssl dgst -sha256 {out} > /dev/null"
    )
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    elapsed = time.perf_counter() - t0
    out.unlink()
    return elapsed


def run_agent(source: Path, staging: Path, job_id: str, keep: bool = False) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one agent backup process; its output is removed
    unless ``keep``."""
    elapsed, peak = run_job(
        staging.parent / f"{job_id}.hwm",
        BAQUP_JOB_ID=job_id,
        BAQUP_ROLE="backup",
        BAQUP_STAGING_DIR=str(staging),
        BAQUP_FS_SOURCE=str(source),
        BAQUP_FS_ZSTD_LEVEL="1",
        BAQUP_FS_THREADS="-1",
    )
    if not keep:
        shutil.rmtree(staging / job_id)
    return elapsed, peak


def run_restore(output: Path, target: Path, staging: Path) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one agent restore of ``output`` into ``target``,
    which is left for the caller to remove (see ``fresh``)."""
    return run_job(
        staging.parent / "restore.hwm",
        BAQUP_JOB_ID="bench-restore",
        BAQUP_ROLE="restore",
        BAQUP_STAGING_DIR=str(staging),
        BAQUP_RESTORE_SOURCE=str(output),
        BAQUP_FS_TARGET=str(target),
    )


def run_restore_pipeline(artifact: Path, target: Path) -> float:
    """Seconds of ``openssl dgst -sha256 ART && zstd -dc ART | tar -xf - -C target``
    (verify, then extract: what the agent does); the target is left, as by
    ``run_restore``."""
    target.mkdir(parents=True)
    command = (
        f"openssl dgst -sha256 {artifact} > /dev/null "
        f"&& zstd -q -dc {artifact} | tar -xf - -C {target}"
    )
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.perf_counter() - t0


def fresh(base: Path) -> Generator[Path, None, None]:
    """New restore targets below ``base``, all removed together once the caller is done.

    Not one removed after each run: on the VMs this runs on, creating files right
    after tens of thousands were deleted cost up to 10 times as much system time
    (measured with ``tar -xf`` alone: 15 s against 0.8 s), so whichever side ran after
    a removal lost; removing outside the timing was not enough.
    """
    try:
        for i in itertools.count():
            yield base / f"run-{i}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def python_env() -> dict[str, str]:
    """The environment an agent (or a peer interpreter) starts with here: no ``BAQUP_*``
    variable, and bytecode cached in a private ``PYTHONPYCACHEPREFIX``, as an installed
    agent starts (pip compiles a wheel's modules). Under ``PYTHONDONTWRITEBYTECODE``, as
    set where this was measured, this checkout's editable SDK would otherwise be compiled
    from source at every start (about 60 ms) while pydantic's installed bytecode is used.
    The first run of a side fills the cache: the rows take the best of several runs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BAQUP_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def run_job(hwm: Path, **job: str) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one agent process with the ``BAQUP_*`` of ``job``."""
    env = python_env()
    env.update(BAQUP_AGENT_ID="bench", BAQUP_LOG_LEVEL="WARN", **job)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(AGENT), str(hwm)], env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the agent exited {proc.returncode}")
    peak = int(hwm.read_text())
    hwm.unlink()
    return elapsed, peak


# Runs the agent as __main__ in this process and, when it exits, writes its peak RSS
# (VmHWM) to argv[2]. Not the parent's wait4 ru_maxrss: on Linux that survives
# fork + exec, so it would report this (bigger) benchmark process instead of the agent.
_PEAK_RSS = """
import atexit, runpy, sys
agent, out = sys.argv[1], sys.argv[2]

def record():
    with open("/proc/self/status") as f:
        kib = int(f.read().split("VmHWM:")[1].split()[0])
    with open(out, "w") as f:
        f.write(str(kib * 1024))

atexit.register(record)
sys.argv = [agent]
runpy.run_path(agent, run_name="__main__")
"""


def warm(source: Path) -> None:
    """Flush the new tree to disk, then read it once: both sides start from the page
    cache, and neither competes with the tree's own writeback. (``tar -cf /dev/null``
    would not do: GNU tar skips reading files when the archive is /dev/null.)"""
    os.sync()
    buffer = bytearray(1 << 20)
    for path in sorted(source.rglob("*")):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass


def main() -> int:
    size_mb = int(os.environ.get("BENCH_SIZE_MB", "1024"))
    scale = int(os.environ.get("BENCH_RSS_SCALE", "4"))
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    missed = 0
    shutil.rmtree(WORK, ignore_errors=True)
    try:
        source, staging = WORK / "source", WORK / "staging"
        make_tree(source, size_mb)
        warm(source)
        pipeline, agent, rss = float("inf"), float("inf"), 0
        for i in range(repeat):  # alternate, so drift in machine load hits both sides
            pipeline = min(pipeline, run_pipeline(source, WORK / "peer.tar.zst"))
            seconds, peak = run_agent(source, staging, f"bench-{i}")
            agent, rss = min(agent, seconds), max(rss, peak)
        ratio = agent / pipeline
        passed = ratio <= 1.0
        missed += not passed
        row(
            f"fs agent backup {size_mb} MiB vs tar|zstd|openssl",
            ratio,
            "<= 1.0",
            passed,
            # two cores shared with other work skew the ratio: say how busy the machine was
            f"agent {agent:.2f} s, pipeline {pipeline:.2f} s, best of {repeat}, "
            f"load {os.getloadavg()[0]:.1f}",
        )
        output = staging / "bench-keep"
        run_agent(source, staging, output.name, keep=True)
        artifact = output / "files.tar.zst"
        pipeline, agent = float("inf"), float("inf")
        targets = fresh(WORK / "targets")
        for _ in range(repeat):
            pipeline = min(pipeline, run_restore_pipeline(artifact, next(targets)))
            seconds, peak = run_restore(output, next(targets), staging)
            agent, rss = min(agent, seconds), max(rss, peak)
        targets.close()
        ratio = agent / pipeline
        passed = ratio <= 1.0
        missed += not passed
        row(
            f"fs agent restore {size_mb} MiB vs openssl;zstd|tar",
            ratio,
            "<= 1.0",
            passed,
            f"agent {agent:.2f} s, pipeline {pipeline:.2f} s, best of {repeat}, "
            f"load {os.getloadavg()[0]:.1f}",
        )
        shutil.rmtree(output)
        missed += not rss_row(f"fs agent peak RSS {size_mb} MiB", rss)
        if scale > 1:
            shutil.rmtree(source)
            big = WORK / "big"
            make_tree(big, size_mb * scale, seed=2)
            warm(big)
            _, big_rss = run_agent(big, staging, "bench-big")
            ratio = big_rss / rss
            passed = ratio <= 1.10
            missed += not passed
            row(
                f"fs agent peak RSS {size_mb * scale} vs {size_mb} MiB",
                ratio,
                "<= 1.10",
                passed,
                f"{big_rss / 2**20:.1f} MiB vs {rss / 2**20:.1f} MiB",
            )
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return missed
