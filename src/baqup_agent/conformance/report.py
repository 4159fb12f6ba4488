"""The conformance report: per-check results with evidence, as text, JSON or JUnit XML."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from baqup_agent.contract import (
    ConformanceCheckStatus,
    ConformanceFindingLevel,
    ConformanceVerdict,
)

EXIT_CONFORMANT = 0
EXIT_NOT_CONFORMANT = 1
EXIT_INCOMPLETE = 3  # distinct from 1 (a rule broken) and from argparse's 2 and 64 (usage)


# the values are the report schema's (schema/conformance-report.json), generated
Status = ConformanceCheckStatus
"""How one check ended: pass, warn (only SHOULD rules broken, not strict), fail,
untested (a scenario could not be exercised: no verdict), waived (untested, allowed by
--allow-untested or --no-redis), not-applicable (declared not to apply)."""
Level = ConformanceFindingLevel
"""Strength of the rule a finding breaks (RFC 2119 words of docs/contract.md); NOTE
explains a result and never fails a check."""
Verdict = ConformanceVerdict
"""What a run certifies (docs/conformance.md, "The verdict and the exit code")."""


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


@dataclass(frozen=True)
class Untested:
    """A scenario (or a part of a check) that could not be exercised, and how to run it."""

    scenario: str
    why: str
    how: str
    waived_by: str = ""  # the option that waived it ("--allow-untested NAME", "--no-redis")

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"scenario": self.scenario, "why": self.why, "how": self.how,
                "waived_by": self.waived_by}  # fmt: skip

    def line(self) -> str:
        """One readable line."""
        waived = f" [waived by {self.waived_by}]" if self.waived_by else ""
        return f"untested {self.scenario}: {self.why}; to run it: {self.how}{waived}"


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
    rules: tuple[str, ...] = ()  # the contract rule ids (docs/contract.md) it enforces
    untested: list[Untested] = field(default_factory=list)

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
            "rules": list(self.rules),
            "reason": self.reason,
            "untested": [u.to_dict() for u in self.untested],
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
        """JSON form (no ``exit_code`` when the scenario did not run: nothing is null)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "job_id": self.job_id,
            "duration_seconds": round(self.duration_seconds, 3),
            "timed_out": self.timed_out,
            "note": self.note,
        }
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out


_MARK = {
    Status.PASS: "PASS",
    Status.WARN: "WARN",
    Status.FAIL: "FAIL",
    Status.UNTESTED: "UNTS",
    Status.WAIVED: "WAIV",
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
    not_run: list[str] = field(default_factory=list)  # checks left out by --only or --role
    waivers: list[str] = field(default_factory=list)  # the waiving options given

    @property
    def verdict(self) -> Verdict:
        """NOT CONFORMANT, INCOMPLETE, or what the passing run certifies."""
        statuses = {c.status for c in self.checks}
        if Status.FAIL in statuses:
            return Verdict.NOT_CONFORMANT
        if Status.UNTESTED in statuses:
            return Verdict.INCOMPLETE
        if self.not_run:
            return Verdict.SELECTED_CHECKS_PASSED
        if Status.WAIVED in statuses or any(u.waived_by for c in self.checks for u in c.untested):
            return Verdict.PASSED_WITH_WAIVERS
        return Verdict.CONFORMANT

    @property
    def exit_code(self) -> int:
        """0 when passed, 1 when a check failed, 3 when INCOMPLETE."""
        verdict = self.verdict
        if verdict is Verdict.NOT_CONFORMANT:
            return EXIT_NOT_CONFORMANT
        return EXIT_INCOMPLETE if verdict is Verdict.INCOMPLETE else EXIT_CONFORMANT

    @property
    def passed(self) -> bool:
        """True when nothing failed and nothing went untested without a waiver (warnings
        allowed unless strict). ``verdict`` says whether it certifies the whole contract."""
        return self.exit_code == EXIT_CONFORMANT

    @property
    def untested_checks(self) -> set[str]:
        """Names of the checks that could not be exercised (and were not waived)."""
        return {c.name for c in self.checks if c.status is Status.UNTESTED}

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
        """Raise AssertionError carrying the text report when a check failed or could not
        be exercised (for pytest)."""
        if not self.passed:
            raise AssertionError(f"verdict {self.verdict.value}:\n" + self.to_text())

    def counts(self) -> dict[Status, int]:
        """How many checks ended in each status."""
        return {s: sum(1 for c in self.checks if c.status is s) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {
            "passed": self.passed,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "not_run": self.not_run,
            "waivers": self.waivers,
            "untested": [{"check": c.name, **u.to_dict()} for c in self.checks for u in c.untested],
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
            rules = f"  [{', '.join(c.rules)}]" if c.rules else ""
            lines.append(f"{_MARK[c.status]}  {c.section:<3} {c.name:<{width}}  {c.title}{rules}")
            if c.status is Status.NOT_APPLICABLE and c.reason:
                lines.append(f"      {c.reason}")
            lines += [f"      {u.line()}" for u in c.untested]
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
        lines += [
            "",
            f"{len(self.checks)} checks: {n[Status.PASS]} passed, {n[Status.WARN]} with "
            f"warnings, {n[Status.FAIL]} failed, {n[Status.UNTESTED]} untested, "
            f"{n[Status.WAIVED]} waived, {n[Status.NOT_APPLICABLE]} not applicable "
            f"in {self.duration_seconds:.1f} s -> {self._verdict_line()}",
        ]
        if self.waivers:
            lines.append(f"waivers: {', '.join(self.waivers)}")
        if self.sandbox:
            lines.append(f"sandbox kept in {self.sandbox}")
        return "\n".join(lines)

    def _verdict_line(self) -> str:
        verdict = self.verdict
        text = f"{verdict.value} (exit {self.exit_code})"
        if verdict is Verdict.INCOMPLETE:
            names = ", ".join(sorted(self.untested_checks))
            text += f": not exercised: {names}; see the untested lines above"
        elif verdict is Verdict.SELECTED_CHECKS_PASSED:
            ran = ", ".join(c.name for c in self.checks)
            text += f": certifies only the check(s) run: {ran}; not run: {', '.join(self.not_run)}"
        elif verdict is Verdict.PASSED_WITH_WAIVERS:
            text += f": not certified: {', '.join(self.waivers)}"
        return text

    def to_junit_xml(self) -> str:
        """A JUnit XML document: one testcase per check (``--junit-xml``)."""
        import xml.etree.ElementTree as ET

        n = self.counts()
        suite = ET.Element(
            "testsuite",
            name="baqup-agent conformance",
            tests=str(len(self.checks)),
            failures=str(n[Status.FAIL]),
            skipped=str(n[Status.NOT_APPLICABLE] + n[Status.WAIVED]),
            errors=str(n[Status.UNTESTED]),
            time=f"{self.duration_seconds:.3f}",
        )
        properties = ET.SubElement(suite, "properties")
        props = [("verdict", self.verdict.value), *(("waiver", w) for w in self.waivers)]
        for name, value in props:
            ET.SubElement(properties, "property", name=name, value=_xml_text(value))
        for c in self.checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{c.section.replace('§', 's')}",
                name=c.name,
                time=f"{c.duration_seconds:.3f}",
            )
            details = _xml_text(
                "\n".join([*(f.line() for f in c.findings), *(u.line() for u in c.untested)])
            )
            if c.status is Status.FAIL:
                first = next((f.message for f in c.findings if f.level is not Level.NOTE), "")
                ET.SubElement(
                    case, "failure", message=_xml_text(_shorten(first, 200))
                ).text = details
            elif c.status is Status.UNTESTED:
                # a scenario that did not run is an error of the run, not a pass or a skip
                ET.SubElement(case, "error", message="untested", type="untested").text = details
            elif c.status in (Status.NOT_APPLICABLE, Status.WAIVED):
                reason = c.reason or "; ".join(u.line() for u in c.untested)
                ET.SubElement(case, "skipped", message=_xml_text(reason))
            elif details:
                ET.SubElement(case, "system-out").text = details
        root = ET.Element("testsuites")
        root.append(suite)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)


# characters XML 1.0 cannot hold (C0 controls but tab, newline and CR; surrogates; FFFE/FFFF)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


def _xml_text(text: str) -> str:
    """``text`` safe in an XML document: ANSI escapes removed, other controls as ``\\xNN``."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", _ANSI.sub("", text))


def _shorten(text: str, limit: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
