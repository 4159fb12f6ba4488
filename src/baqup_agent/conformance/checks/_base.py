"""What a check is, what it sees, and small helpers shared by the checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from baqup_agent.conformance.observed import Message, Run, SuiteContext
from baqup_agent.conformance.report import Finding, Level, Untested

ALL_ROLES = frozenset({"backup", "restore"})


class NotApplicable(Exception):
    """Raised by a check that cannot judge at all (its scenario could not reach the
    situation the check judges): the check is untested, the verdict INCOMPLETE.

    ``how`` says how to make it run; ``scenario`` names what was not exercised.
    """

    def __init__(self, why: str, *, how: str = "", scenario: str = "") -> None:
        super().__init__(why)
        self.how = how
        self.scenario = scenario


@dataclass
class CheckInput:
    """What a check judges: the runs of its scenarios and the suite's context."""

    runs: list[Run]
    ctx: SuiteContext
    all_runs: dict[str, Run]  # every scenario that ran, judged or not (inputs of restores)
    redis_dump: list[tuple[str, str]] = field(default_factory=list)  # (key, value text)
    untested: list[Untested] = field(default_factory=list)  # parts the check could not judge

    def not_exercised(self, run: Run, why: str, how: str) -> None:
        """Record that ``run`` could not exercise what the check judges (the rest of the
        check still counts; the verdict becomes INCOMPLETE unless waived)."""
        self.untested.append(Untested(run.scenario.name, why, how))

    def run(self, name: str) -> Run:
        """The run of scenario ``name`` among those this check judges."""
        for r in self.runs:
            if r.scenario.name == name:
                return r
        raise NotApplicable(f"scenario {name} did not run")


Evaluate = Callable[[CheckInput], Iterable[Finding]]


@dataclass(frozen=True)
class Check:
    """One rule of the contract, judged over the runs of some scenarios."""

    name: str
    section: str  # "§1".."§7" of docs/contract.md
    title: str
    evaluate: Evaluate
    scenarios: tuple[str, ...] | None = None  # None: every scenario of the selected roles
    roles: frozenset[str] = ALL_ROLES
    fix: str = ""  # how to fix a failure (docs/conformance.md says more)
    rules: tuple[str, ...] = ()  # rule ids of docs/contract.md it enforces (e.g. "§3.6")
    redis_part: str = ""  # what of the check only a Redis scenario observes


def must(message: str, run: Run | None = None, evidence: str = "") -> Finding:
    """A broken MUST rule."""
    return Finding(Level.MUST, message, run.scenario.name if run else "", evidence)


def should(message: str, run: Run | None = None, evidence: str = "") -> Finding:
    """A broken SHOULD rule (fails only with --strict)."""
    return Finding(Level.SHOULD, message, run.scenario.name if run else "", evidence)


def note(message: str, run: Run | None = None, evidence: str = "") -> Finding:
    """An observation that explains a result without failing it."""
    return Finding(Level.NOTE, message, run.scenario.name if run else "", evidence)


def parse_time(value: Any) -> float | None:
    """POSIX seconds of an RFC 3339 timestamp, None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def by_seq(messages: list[Message]) -> list[Message]:
    """Messages ordered by their ``seq`` (arrival order for those without one)."""

    def key(m: Message) -> tuple[int, float]:
        seq = m.data.get("seq") if m.data else None
        return (seq if isinstance(seq, int) else 1 << 62, m.seen_at)

    return sorted(messages, key=key)


def the_result(run: Run) -> dict[str, Any] | None:
    """The run's (last) result message, None when it sent none."""
    results = by_seq(run.of_type("result"))
    return results[-1].data if results else None


def result_in_redis(run: Run) -> bool:
    """Whether a result message reached the Redis stream."""
    return any(m.source == "redis" and m.type == "result" for m in run.messages)


def exit_text(code: int | None) -> str:
    """An exit status in words (negative: killed by a signal)."""
    if code is None:
        return "no exit status"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"
