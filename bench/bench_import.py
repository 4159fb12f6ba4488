"""Import cost of baqup_agent against pydantic's, measured in the same run.

Each statement runs in fresh interpreters under ``python -X importtime``; its cost is
the sum of the cumulative times of the top-level imports it triggers (names resolved
lazily through PEP 562 show up as top-level imports of their own, so summing is needed
to count them); modules the interpreter imports at start-up are left out by name. The
median of several runs, interleaved with the peer's, is compared.

``import pydantic`` is itself lazy (PEP 562): it does not load ``BaseModel``. A module of
generated models needs BaseModel and Field, which no pydantic model can avoid: against
bare ``import pydantic`` the models row could never pass. So the models are measured by
what this package controls: the time they add over that floor, relative to the floor
(target <= 1.0: our models cost at most what pydantic's own BaseModel machinery does).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys

from bench import _report

RUNS = 9
TARGET = 1.5
PEER = "import pydantic"
# what every generated model module imports: no pydantic model can cost less
FLOOR = "from pydantic import AwareDatetime, BaseModel, ConfigDict, Field"
CASES = {
    "import baqup_agent": "import baqup_agent",
    "+ ExitCode": "import baqup_agent; from baqup_agent import ExitCode",
}
MODELS = "import baqup_agent; from baqup_agent import ExitCode, AgentState, Manifest"
MODELS_TARGET = 1.0

# "import time: self [us] | cumulative | <indent>name"; top level has no indent
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


def _top_level(code: str) -> dict[str, int]:
    """Cumulative microseconds of every top-level import ``code`` triggers."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, int] = {}
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m and not m.group(3):
            out[m.group(4)] = int(m.group(2))
    return out


def _cost(code: str, startup: set[str]) -> int:
    return sum(us for name, us in _top_level(code).items() if name not in startup)


def measure(codes: list[str], runs: int = RUNS) -> dict[str, float]:
    """Median import cost in microseconds of each statement, runs interleaved."""
    startup = set(_top_level("pass"))
    samples: dict[str, list[int]] = {code: [] for code in codes}
    for _ in range(runs):
        for code in codes:
            samples[code].append(_cost(code, startup))
    return {code: statistics.median(s) for code, s in samples.items()}


def main() -> int:
    medians = measure([PEER, FLOOR, *CASES.values(), MODELS])
    peer, floor = medians[PEER], medians[FLOOR]
    missed = 0
    for label, code in CASES.items():
        ratio = medians[code] / peer
        passed = ratio <= TARGET
        missed += not passed
        note = f"{medians[code] / 1000:.1f} ms vs {peer / 1000:.1f} ms ({PEER})"
        _report.row(f"import: {label}", ratio, f"<= {TARGET}x", passed, note)
    models = medians[MODELS]
    ratio = (models - floor) / floor
    passed = ratio <= MODELS_TARGET
    missed += not passed
    _report.row(
        "import: models over pydantic floor",
        ratio,
        f"<= {MODELS_TARGET}x",
        passed,
        f"{models / 1000:.1f} ms - floor {floor / 1000:.1f} ms ({FLOOR})",
    )
    return missed


if __name__ == "__main__":
    sys.exit(main())
