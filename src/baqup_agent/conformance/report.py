"""The conformance report: per-check results with evidence, as text, JSON or JUnit XML."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """How one check ended."""

    PASS = "pass"
    WARN = "warn"  # only SHOULD rules were broken and --strict is off
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"


class Level(str, enum.Enum):
    """Strength of the rule a finding breaks (RFC 2119 words of docs/contract.md)."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    NOTE = "NOTE"  # an observation that explains a result; never fails a check


@dataclass(frozen=True)
class Finding:
    """One broken rule (or note), with the scenario it was seen in and the evidence."""

    level: Level
    message: str
    scenario: str = ""
    evidence: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "level": self.level.value,
            "scenario": self.scenario,
            "message": self.message,
            "evidence": self.evidence,
        }

    def line(self) -> str:
        """One readable line."""
        where = f"{self.scenario}: " if self.scenario else ""
        text = f"[{self.level.value}] {where}{self.message}"
        if self.evidence:
            text += f"\n        evidence: {_shorten(self.evidence, 400)}"
        return text


@dataclass
class CheckResult:
    """The outcome of one check."""

    name: str
    section: str
    title: str
    status: Status
    findings: list[Finding] = field(default_factory=list)
    duration_seconds: float = 0.0  # the check's own evaluation time
    scenario_seconds: float = 0.0  # wall time of the scenarios it observed
    scenarios: list[str] = field(default_factory=list)
    reason: str = ""  # why the check is not applicable

    @property
    def failed(self) -> bool:
        """Whether this check fails the suite."""
        return self.status is Status.FAIL

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "section": self.section,
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "duration_seconds": round(self.duration_seconds, 4),
            "scenario_seconds": round(self.scenario_seconds, 3),
            "scenarios": self.scenarios,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class ScenarioSummary:
    """What one run of the agent did, for the report."""

    name: str
    description: str
    job_id: str
    exit_code: int | None
    duration_seconds: float
    timed_out: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "description": self.description,
            "job_id": self.job_id,
            "exit_code": self.exit_code,
            "duration_seconds": round(self.duration_seconds, 3),
            "timed_out": self.timed_out,
            "note": self.note,
        }


_MARK = {
    Status.PASS: "PASS",
    Status.WARN: "WARN",
    Status.FAIL: "FAIL",
    Status.NOT_APPLICABLE: "N/A ",
}


@dataclass
class Report:
    """Every check's result; ``passed`` is true when no applicable check failed."""

    command: list[str]
    role: str
    strict: bool
    redis: str  # "redis-server X on 127.0.0.1:PORT" or why the Redis scenarios did not run
    checks: list[CheckResult]
    scenarios: list[ScenarioSummary]
    duration_seconds: float
    sandbox: str = ""

    @property
    def passed(self) -> bool:
        """True when every applicable check passed (warnings allowed unless strict)."""
        return not any(c.failed for c in self.checks)

    @property
    def failed_checks(self) -> set[str]:
        """Names of the checks that failed."""
        return {c.name for c in self.checks if c.failed}

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def assert_passed(self) -> None:
        """Raise AssertionError carrying the text report when a check failed (for pytest)."""
        if not self.passed:
            raise AssertionError("agent is not conformant:\n" + self.to_text())

    def counts(self) -> dict[Status, int]:
        """How many checks ended in each status."""
        return {s: sum(1 for c in self.checks if c.status is s) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {
            "passed": self.passed,
            "command": self.command,
            "role": self.role,
            "strict": self.strict,
            "redis": self.redis,
            "duration_seconds": round(self.duration_seconds, 3),
            "counts": {s.value: n for s, n in self.counts().items()},
            "checks": [c.to_dict() for c in self.checks],
            "scenarios": [s.to_dict() for s in self.scenarios],
            "sandbox": self.sandbox,
        }

    def to_json(self) -> str:
        """The JSON report as text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        """A readable report: one line per check, then the findings of the failing ones."""
        lines = [
            f"baqup-agent conformance: {' '.join(self.command)}",
            f"  role {self.role}{', strict' if self.strict else ''}; bus: {self.redis}",
            "",
        ]
        width = max((len(c.name) for c in self.checks), default=10)
        for c in self.checks:
            lines.append(f"{_MARK[c.status]}  {c.section:<3} {c.name:<{width}}  {c.title}")
            if c.status is Status.NOT_APPLICABLE and c.reason:
                lines.append(f"      {c.reason}")
            shown = [f for f in c.findings if c.status is not Status.PASS or f.level is Level.NOTE]
            for f in shown[:10]:
                lines.append("      " + f.line())
            if len(shown) > 10:
                lines.append(f"      ... and {len(shown) - 10} more (see --json)")
        lines += ["", "scenarios (run in parallel):"]
        width = max((len(s.name) for s in self.scenarios), default=10)
        for s in self.scenarios:
            status = "not run" if s.exit_code is None else f"exit {s.exit_code}"
            note = f"  {s.note}" if s.note else ""
            lines.append(f"  {s.name:<{width}}  {status:>8}  {s.duration_seconds:5.1f} s{note}")
        n = self.counts()
        verdict = "CONFORMANT" if self.passed else "NOT CONFORMANT"
        lines += [
            "",
            f"{len(self.checks)} checks: {n[Status.PASS]} passed, {n[Status.WARN]} with "
            f"warnings, {n[Status.FAIL]} failed, {n[Status.NOT_APPLICABLE]} not applicable "
            f"in {self.duration_seconds:.1f} s -> {verdict}",
        ]
        if self.sandbox:
            lines.append(f"sandbox kept in {self.sandbox}")
        return "\n".join(lines)

    def to_junit_xml(self) -> str:
        """A JUnit XML document: one testcase per check (``--junit-xml``)."""
        import xml.etree.ElementTree as ET

        n = self.counts()
        suite = ET.Element(
            "testsuite",
            name="baqup-agent conformance",
            tests=str(len(self.checks)),
            failures=str(n[Status.FAIL]),
            skipped=str(n[Status.NOT_APPLICABLE]),
            errors="0",
            time=f"{self.duration_seconds:.3f}",
        )
        for c in self.checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{c.section.replace('§', 's')}",
                name=c.name,
                time=f"{c.duration_seconds:.3f}",
            )
            details = "\n".join(f.line() for f in c.findings)
            if c.status is Status.FAIL:
                first = next((f.message for f in c.findings if f.level is not Level.NOTE), "")
                ET.SubElement(case, "failure", message=_shorten(first, 200)).text = details
            elif c.status is Status.NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=c.reason)
            elif details:
                ET.SubElement(case, "system-out").text = details
        root = ET.Element("testsuites")
        root.append(suite)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _shorten(text: str, limit: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
