"""How the tests point the suite at their agents."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

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


FILESYSTEM_OPTIONS: dict[str, Any] = {
    # the suite's default fixture, no throttle: it enlarges the fixture of the SIGTERM and
    # cancel scenarios itself until the interrupt lands mid-job
    "env": {"BAQUP_FS_SOURCE": "{fixture}", "BAQUP_FS_TARGET": "{target}"},
}


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
        "artifact_not_tar": True,  # one zstd-compressed database file: nothing to make hostile
        "compare_command": [
            sys.executable,
            str(AGENTS / "compare_sqlite.py"),
            "{fixture}/app.db",
            "{target}/app.db",
        ],
    }
    return root, options
