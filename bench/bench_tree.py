"""Many small files: the filesystem agent on a tree like a home directory or a web root.

A seeded tree of BENCH_TREE_FILES files (default 50,000) of 100 B to 8 KiB (about
300 MB at the default count) in one directory per 36 files, two levels deep: text and
random bytes mixed, as real trees are. Backup and restore run as real agent processes
against the shell pipelines in the same run, alternating (``bench_agent`` has both
peers). Targets: backup and restore each at most 1.5x the pipeline's wall time; peak
RSS under 100 MiB both ways, and within 10% between the tree and one
BENCH_TREE_RSS_SCALE times bigger (default 4, i.e. 200,000 files; 0 skips it).

Environment: BENCH_TREE_FILES, BENCH_TREE_RSS_SCALE, BENCH_REPEAT (default 5: best of
that many runs of each side). Data lives in bench/.work/ and is removed afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from bench._report import row
from bench.bench_agent import (
    WORDS,
    fresh,
    rss_row,
    run_agent,
    run_pipeline,
    run_restore,
    run_restore_pipeline,
    warm,
)

WORK = Path(__file__).resolve().parent / ".work" / "tree"
FILES_PER_DIR = 36
MIN_SIZE, MAX_SIZE = 100, 8 << 10
TARGET = 1.5


def make_small_tree(root: Path, files: int, seed: int = 1) -> None:
    """``files`` files of MIN_SIZE..MAX_SIZE bytes, FILES_PER_DIR to a directory, in
    groups of 40 directories; every other file text, the rest random bytes."""
    rng = random.Random(seed)
    text = " ".join(rng.choices(WORDS, k=400_000)).encode()
    noise = rng.randbytes(1 << 20)
    for i in range(files):
        d = i // FILES_PER_DIR
        folder = root / f"group-{d // 40:03d}" / f"dir-{d:05d}"
        if i % FILES_PER_DIR == 0:
            folder.mkdir(parents=True)
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        source = text if i % 2 else noise
        start = rng.randrange(len(source) - size)
        (folder / f"file-{i:06d}.{'txt' if i % 2 else 'bin'}").write_bytes(
            source[start : start + size]
        )


def main() -> int:
    files = int(os.environ.get("BENCH_TREE_FILES", "50000"))
    scale = int(os.environ.get("BENCH_TREE_RSS_SCALE", "4"))
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    missed = 0
    shutil.rmtree(WORK, ignore_errors=True)
    try:
        source, staging = WORK / "source", WORK / "staging"
        make_small_tree(source, files)
        warm(source)
        staging.mkdir(parents=True)
        rss = {}
        for direction in ("backup", "restore"):
            agent, peer, peak = _compare(direction, source, staging, repeat)
            rss[direction] = peak
            passed = agent / peer <= TARGET
            missed += not passed
            row(
                f"tree {files} files {direction} vs pipeline",
                agent / peer,
                f"<= {TARGET}",
                passed,
                f"agent {agent:.2f} s, pipeline {peer:.2f} s, best of {repeat}, "
                f"load {os.getloadavg()[0]:.1f}",
            )
        for direction, peak in rss.items():
            missed += not rss_row(f"tree {files} files {direction} peak RSS", peak)
        if scale > 1:
            shutil.rmtree(source)
            big = WORK / "big"
            make_small_tree(big, files * scale, seed=2)
            warm(big)
            _, big_backup = run_agent(big, staging, "big", keep=True)
            _, big_restore = run_restore(staging / "big", WORK / "big-target", staging)
            for direction, big_peak in (("backup", big_backup), ("restore", big_restore)):
                ratio = big_peak / rss[direction]
                passed = ratio <= 1.10
                missed += not passed
                row(
                    f"tree peak RSS {files * scale} vs {files} {direction}",
                    ratio,
                    "<= 1.10",
                    passed,
                    f"{big_peak / 2**20:.1f} MiB vs {rss[direction] / 2**20:.1f} MiB",
                )
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return missed


def _compare(direction: str, source: Path, staging: Path, repeat: int) -> tuple[float, float, int]:
    """Best agent seconds, best pipeline seconds, peak agent RSS; runs alternate."""
    agent, peer, peak = float("inf"), float("inf"), 0
    output = staging / "kept"
    if direction == "restore":
        run_agent(source, staging, output.name, keep=True)
    targets = fresh(WORK / "targets")
    for i in range(repeat):
        if direction == "backup":
            peer = min(peer, run_pipeline(source, WORK / "peer.tar.zst"))
            seconds, rss = run_agent(source, staging, f"tree-{i}")
        else:
            peer = min(peer, run_restore_pipeline(output / "files.tar.zst", next(targets)))
            seconds, rss = run_restore(output, next(targets), staging)
        agent, peak = min(agent, seconds), max(peak, rss)
    targets.close()
    return agent, peer, peak
