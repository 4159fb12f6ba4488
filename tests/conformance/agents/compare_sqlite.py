"""Exit 0 when two SQLite databases hold the same schema and rows (their SQL dumps match).

The conformance suite's round trip compares trees byte for byte by default; a SQLite
file is not byte-stable across an online backup (header counters change), so the SQLite
example is judged with this as its --compare-command.
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing


def dump(path: str) -> list[str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return list(db.iterdump())


if __name__ == "__main__":
    expected, actual = dump(sys.argv[1]), dump(sys.argv[2])
    if expected != actual:
        print(f"dumps differ: {len(expected)} statements expected, {len(actual)} restored")
        sys.exit(1)
