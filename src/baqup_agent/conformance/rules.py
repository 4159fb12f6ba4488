"""The contract's rules (ids like ``§3.6`` in docs/contract.md) and which check enforces each.

A rule is a numbered item (or, in §0, a bullet) of docs/contract.md tagged ``[§S.N]``;
its strength is the strongest RFC 2119 key word it holds. ``rule_table`` renders the
table of docs/conformance.md: rule -> checks -> how they observe it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from baqup_agent.conformance.checks import CHECKS, NOT_CHECKABLE

_TAG = re.compile(r"^(?:\d+\.|-) \[(§\d+\.\d+)\]")
_ITEM = re.compile(r"^(?:\d+\.|-) ")
_SECTION = re.compile(r"^## §\d+ ")
_KEYWORD = re.compile(r"\b(MUST|SHOULD|MAY)\b")


@dataclass(frozen=True)
class Rule:
    """One tagged rule of the contract."""

    id: str
    strength: str  # MUST, SHOULD, MAY or "" (descriptive)
    text: str


def contract_rules(markdown: str) -> tuple[dict[str, Rule], list[str]]:
    """The tagged rules of docs/contract.md, and the lines holding a key word outside any
    tagged rule (each is a rule without an id: a bug of the document)."""
    rules: dict[str, Rule] = {}
    untagged: list[str] = []
    current: str | None = None
    lines: list[str] = []
    in_sections = False

    def close() -> None:
        if current is not None:
            text = " ".join(line.strip() for line in lines)
            words = set(_KEYWORD.findall(text))
            strength = next((w for w in ("MUST", "SHOULD", "MAY") if w in words), "")
            rules[current] = Rule(current, strength, text)

    for line in markdown.splitlines():
        if line.startswith("## "):
            close()
            current, lines = None, []
            in_sections = bool(_SECTION.match(line))
            continue
        if not in_sections:
            continue
        tag = _TAG.match(line)
        if tag or _ITEM.match(line) or (line and not line[0].isspace()):
            close()
            current, lines = (tag.group(1), [line]) if tag else (None, [])
        elif current is not None:
            lines.append(line)
        if current is None and _KEYWORD.search(line):
            untagged.append(line.strip())
    close()
    return rules, untagged


def enforced_by() -> dict[str, list[str]]:
    """Rule id -> the checks that name it."""
    out: dict[str, list[str]] = {}
    for check in CHECKS:
        for rule in check.rules:
            out.setdefault(rule, []).append(check.name)
    return out


def uncovered(rules: dict[str, Rule]) -> list[str]:
    """MUST rules that no check names and NOT_CHECKABLE does not excuse."""
    covered = enforced_by().keys() | NOT_CHECKABLE.keys()
    return [r.id for r in rules.values() if r.strength == "MUST" and r.id not in covered]


def rule_table(rules: dict[str, Rule]) -> str:
    """The markdown table of docs/conformance.md: every MUST and SHOULD rule, the checks
    that enforce it and the scenarios they observe, or why none can."""
    checks = {c.name: c for c in CHECKS}
    rows = ["| rule | strength | checks | how it is observed |", "|---|---|---|---|"]
    by_rule = enforced_by()

    def order(rule_id: str) -> tuple[int, int]:
        section, number = rule_id[1:].split(".")
        return int(section), int(number)

    for rule_id in sorted(rules, key=order):
        rule = rules[rule_id]
        if rule.strength not in ("MUST", "SHOULD"):
            continue
        names = by_rule.get(rule_id, [])
        if names:
            scenarios = sorted({s for n in names for s in checks[n].scenarios or ("all",)})
            how = "scenarios: " + ", ".join(scenarios)
        else:
            how = "not checked: " + NOT_CHECKABLE.get(rule_id, "(no reason given)")
        checked = ", ".join(f"`{n}`" for n in names) or "—"
        rows.append(f"| {rule_id} | {rule.strength} | {checked} | {how} |")
    return "\n".join(rows)
