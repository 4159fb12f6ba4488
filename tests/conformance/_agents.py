"""How the tests point the suite at their agents."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from baqup_agent.conformance.fixture import make_default_fixture

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).resolve().parent / "agents"

PLAIN = [sys.executable, str(AGENTS / "plain_agent.py")]
PLAIN_OPTIONS: dict[str, Any] = {
    "env": {"PLAIN_SOURCE": "{fixture}", "PLAIN_TARGET": "{target}"},
    # no throttle: the suite enlarges the fixture until SIGTERM and cancel land mid-job
    "secret_vars": ["PLAIN_TOKEN"],
}

FILESYSTEM = [sys.executable, str(ROOT / "examples" / "filesystem_agent" / "agent.py")]
SQLITE = [sys.executable, str(ROOT / "examples" / "sqlite_agent" / "agent.py")]


def filesystem_fixture(root: Path) -> tuple[Path, dict[str, Any]]:
    """The default fixture plus 4,000 tiny files: the agent checkpoints between files, so
    a job that lasts about a second stays interruptible at every step (the slow scenarios'
    job must outlive the suite's SIGTERM and cancel, even on a loaded machine)."""
    make_default_fixture(root)
    for d in range(40):
        folder = root / "many" / f"d{d:02}"
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f"f{i:03}.txt").write_text(f"file {d}/{i}\n" * 4, encoding="utf-8")
    options = {
        "fixture": root,
        "env": {"BAQUP_FS_SOURCE": "{fixture}", "BAQUP_FS_TARGET": "{target}"},
    }
    return root, options


def sqlite_fixture(root: Path) -> tuple[Path, dict[str, Any]]:
    """A directory holding app.db (about 2,000 pages, copied one page per step)."""
    import sqlite3
    from contextlib import closing

    root.mkdir(parents=True)
    rng = random.Random(1)
    with closing(sqlite3.connect(root / "app.db")) as db:
        db.execute("create table t(id integer primary key, v text)")
        db.executemany(
            "insert into t(v) values (?)", [(rng.randbytes(200).hex(),) for _ in range(20000)]
        )
        db.commit()
    options = {
        "fixture": root,
        "env": {"BAQUP_SQLITE_DATABASE": "{data}/app.db", "BAQUP_SQLITE_PAGES_PER_STEP": "1"},
        "compare_command": [
            sys.executable,
            str(AGENTS / "compare_sqlite.py"),
            "{fixture}/app.db",
            "{target}/app.db",
        ],
    }
    return root, options
