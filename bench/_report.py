"""The one output format of `make bench`: name, ratio, target, PASS|FAIL."""

from __future__ import annotations

import time
from collections.abc import Callable


def row(name: str, ratio: float | None, target: str, passed: bool | None, note: str = "") -> None:
    """Print one benchmark line; ``ratio`` None and ``passed`` None mean report-only."""
    verdict = "REPORT" if passed is None else ("PASS" if passed else "FAIL")
    ratio_s = "-" if ratio is None else f"{ratio:.3f}"
    print(f"{name:<44} {ratio_s:>8}  {target:<14} {verdict:<6} {note}", flush=True)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Fastest wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
