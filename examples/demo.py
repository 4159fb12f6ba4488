"""`make demo`: the example filesystem agent backs up a sample directory, restores it,
and the restored tree is compared byte for byte with the original.

The agent runs as a subprocess, configured by environment variables, as a controller
would start it; there is no Redis, so the bus is the embedded filesystem spool, and
the demo follows the job's events (state changes, heartbeats with progress, the
result) in the spool while the agent runs. Everything lands under ./demo-output/
(or the directory given as the first argument).
"""

from __future__ import annotations

import filecmp
import os
import random
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from baqup_agent import compute_checksum
from baqup_agent.contract.wire import SPOOL_EVENTS_FILE, SPOOL_SUBDIR

AGENT = Path(__file__).resolve().parent / "filesystem_agent" / "agent.py"
WORDS = [
    *("backup", "restore", "agent", "controller", "staging", "manifest", "checksum"),
    *("archive", "heartbeat", "spool", "redis", "stream", "lifecycle", "cancel"),
    *("grace", "publish", "verify", "artifact", "zstd", "tar"),
]


def make_sample(root: Path, seed: int = 2026) -> None:
    """A few hundred files in nested directories: text, binary, empty, a symlink."""
    rng = random.Random(seed)
    for d in range(6):
        for s in range(5):
            folder = root / f"project-{d}" / f"module-{s}"
            folder.mkdir(parents=True)
            for f in range(8):
                lines = (" ".join(rng.choices(WORDS, k=12)) for _ in range(rng.randint(5, 400)))
                (folder / f"notes-{f}.txt").write_text("\n".join(lines) + "\n")
            for f in range(2):
                (folder / f"blob-{f}.bin").write_bytes(rng.randbytes(rng.randint(1, 300_000)))
    (root / "empty-dir").mkdir()
    (root / "empty-file").touch()
    (root / "README.txt").write_text("A sample tree for the baqup-agent demo.\n")
    (root / "latest").symlink_to("project-0/module-0/notes-0.txt")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho restored\n")
    script.chmod(0o755)


def tree_stats(root: Path) -> tuple[int, int]:
    """(entries, bytes of regular files) under ``root``."""
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            entries += 1
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return entries, size


def compare_trees(a: Path, b: Path) -> list[str]:
    """Differences between two trees: names, types, modes, link targets, file bytes."""
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(a):
        rel = Path(dirpath).relative_to(a)
        other = b / rel
        have = sorted(os.listdir(other)) if other.is_dir() else []
        if sorted(dirnames + filenames) != have:
            problems.append(f"{rel}: entries differ")
            continue
        for name in dirnames + filenames:
            x, y = Path(dirpath) / name, other / name
            sx, sy = os.lstat(x), os.lstat(y)
            if stat.S_IFMT(sx.st_mode) != stat.S_IFMT(sy.st_mode):
                problems.append(f"{rel / name}: type differs")
            elif stat.S_ISLNK(sx.st_mode):
                if os.readlink(x) != os.readlink(y):
                    problems.append(f"{rel / name}: link target differs")
            elif stat.S_IMODE(sx.st_mode) != stat.S_IMODE(sy.st_mode):
                problems.append(f"{rel / name}: mode differs")
            elif stat.S_ISREG(sx.st_mode) and not filecmp.cmp(x, y, shallow=False):
                problems.append(f"{rel / name}: content differs")
    return problems


def describe(msg: dict[str, Any]) -> str | None:
    """One line for a bus message, None for the ones not worth a line."""
    kind = msg["type"]
    if kind == "state_change":
        return f"state -> {msg['to_state']}"
    if kind in ("heartbeat", "progress"):
        p = msg["progress"]
        total = p.get("bytes_total")
        pct = f"{100 * p['bytes_done'] / total:5.1f}%" if total else "     "
        label = "heartbeat" if kind == "heartbeat" else "progress "
        return f"{label} {pct} {p['bytes_done'] / 1e6:7.2f} MB, {p['items_done']} items" + (
            f" ({msg['intent']})" if kind == "heartbeat" else ""
        )
    if kind == "result":
        return f"result: {msg['status']}, exit code {msg['exit_code']}"
    return None


def new_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """The complete lines of ``path`` after byte ``offset``, and where the next read starts
    (the agent may be halfway through writing the last line)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    return complete.splitlines(), offset + len(complete)


def run_agent(name: str, env: dict[str, str], spool: Path, log: Path) -> tuple[int, float]:
    """Run the agent for one job, printing its bus events as they arrive."""
    events = spool / env["BAQUP_JOB_ID"] / SPOOL_EVENTS_FILE
    started = time.monotonic()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(AGENT)], env={**os.environ, **env}, stderr=log_file
        )
        offset = 0
        while True:
            done = proc.poll() is not None
            lines, offset = new_lines(events, offset)
            for line in lines:
                text = describe(orjson.loads(line))
                if text:
                    print(f"  [{name}] {text}", flush=True)
            if done:
                break
            time.sleep(0.05)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        print(f"  [{name}] agent log ({log}):")
        print(log.read_text())
    return proc.returncode, elapsed


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "demo-output").resolve()
    shutil.rmtree(out, ignore_errors=True)
    source, staging, target = out / "source", out / "staging", out / "restored"
    source.mkdir(parents=True)
    make_sample(source)
    entries, size = tree_stats(source)
    print(f"sample directory: {source} ({entries} entries, {size / 1e6:.2f} MB)")

    base = {
        "BAQUP_AGENT_ID": "demo-fs-agent",
        "BAQUP_STAGING_DIR": str(staging),
        "BAQUP_LOG_FORMAT": "text",
        "BAQUP_HEARTBEAT_INTERVAL": "0.1",
    }
    spool = staging / SPOOL_SUBDIR
    print("backup (filesystem agent, spool bus, no Redis):")
    backup_code, backup_time = run_agent(
        "backup",
        {
            **base,
            "BAQUP_JOB_ID": "demo-backup",
            "BAQUP_ROLE": "backup",
            "BAQUP_FS_SOURCE": str(source),
        },
        spool,
        out / "backup.log",
    )
    if backup_code != 0:
        return 1
    published = staging / "demo-backup"
    print("restore:")
    restore_code, restore_time = run_agent(
        "restore",
        {
            **base,
            "BAQUP_JOB_ID": "demo-restore",
            "BAQUP_ROLE": "restore",
            "BAQUP_RESTORE_SOURCE": str(published),
            "BAQUP_FS_TARGET": str(target),
        },
        spool,
        out / "restore.log",
    )
    if restore_code != 0:
        return 1

    problems = compare_trees(source, target)
    manifest = orjson.loads((published / "manifest.json").read_bytes())
    print()
    print("summary")
    print(f"  backed up      {source} ({entries} entries, {size:,} bytes)")
    print(f"  published to   {published}")
    for art in manifest["artifacts"]:
        path = published / art["filename"]
        ours = compute_checksum(path, art["checksum_algorithm"])
        check = "recomputed: matches" if ours == art["checksum_value"] else "MISMATCH"
        print(
            f"  artifact       {art['filename']}: {art['size_bytes']:,} bytes "
            f"({art['compression']}, {art['size_bytes'] / max(size, 1):.1%} of the source)"
        )
        print(f"  {art['checksum_algorithm']:<14} {art['checksum_value']} ({check})")
    print(f"  restored to    {target}")
    print(f"  backup         exit code {backup_code} in {backup_time:.2f} s")
    print(f"  restore        exit code {restore_code} in {restore_time:.2f} s")
    if problems:
        print(f"  verification   FAILED: {len(problems)} differences, first: {problems[0]}")
        return 1
    print(f"  verification   restored tree identical to the source ({entries} entries)")
    print(f"  logs           {out / 'backup.log'}, {out / 'restore.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
