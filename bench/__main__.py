"""`make bench`: run every benchmark module (bench/bench_*.py) and print one line each.

`python -m bench [NAME...]` runs only the modules whose name contains NAME.
Exit 1 when any target is missed.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    modules = pkgutil.iter_modules(bench.__path__)
    names = sorted(m.name for m in modules if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    print(f"{'name':<44} {'ratio':>8}  {'target':<14} result", flush=True)
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        failed += int(bool(module.main()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
