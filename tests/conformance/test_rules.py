"""Every MUST rule of docs/contract.md is enforced by a check or excused with a reason, and
docs/conformance.md carries the resulting table."""

from __future__ import annotations

import re

import pytest

from baqup_agent.conformance.checks import CHECKS, NOT_CHECKABLE
from baqup_agent.conformance.rules import contract_rules, enforced_by, rule_table, uncovered
from tests.conformance._agents import ROOT

CONTRACT = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
CONFORMANCE = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")


def test_every_key_word_of_the_contract_sits_in_a_tagged_rule() -> None:
    rules, untagged = contract_rules(CONTRACT)
    assert untagged == []
    assert len(rules) > 30


def test_every_must_rule_is_checked_or_excused_with_a_reason() -> None:
    rules, _ = contract_rules(CONTRACT)
    assert uncovered(rules) == []
    assert all(reason.strip() for reason in NOT_CHECKABLE.values())
    assert set(NOT_CHECKABLE) <= set(rules)
    assert not set(NOT_CHECKABLE) & set(enforced_by())  # excused means not enforced


def test_checks_name_only_existing_rules() -> None:
    rules, _ = contract_rules(CONTRACT)
    for check in CHECKS:
        assert check.rules, check.name
        assert set(check.rules) <= set(rules), check.name
        assert all(r.startswith(check.section + ".") for r in check.rules[:1]), check.name


@pytest.mark.parametrize(
    "edit",
    [
        # a new MUST rule nobody checks
        lambda text: text + "\n## §9 New\n\n1. [§9.1] An agent MUST sing.\n",
        # a MUST sentence outside any tagged rule
        lambda text: text.replace("## §1 Lifecycle", "## §1 Lifecycle\n\nAgents MUST dance."),
    ],
)
def test_the_coverage_test_fails_on_an_unchecked_or_untagged_rule(edit: object) -> None:
    assert callable(edit)
    rules, untagged = contract_rules(edit(CONTRACT))
    assert uncovered(rules) or untagged


def test_conformance_md_carries_the_rule_table() -> None:
    rules, _ = contract_rules(CONTRACT)
    match = re.search(r"<!-- rules -->\n(.*?)\n<!-- /rules -->", CONFORMANCE, re.S)
    assert match, "docs/conformance.md lacks the <!-- rules --> table"
    assert match.group(1) == rule_table(rules), "regenerate with rule_table()"
