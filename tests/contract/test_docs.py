"""docs/contract.md states the contract the schemas encode."""

from __future__ import annotations

import re

from tests.contract._schemas import ROOT, SCHEMAS

DOC = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
SECTIONS = [
    "§1 Lifecycle",
    "§2 Config",
    "§3 Communication",
    "§4 Output",
    "§5 Errors",
    "§6 Observability",
    "§7 Security",
]


def _exit_code_rows() -> list[list[str]]:
    block = DOC.split("<!-- exit-codes", 1)[1].split("<!-- /exit-codes -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def test_sections_keep_the_previews_numbering() -> None:
    headings = re.findall(r"^## (§\d .+)$", DOC, flags=re.MULTILINE)
    assert [h for h in headings if h[1] != "0"] == SECTIONS


def test_exit_code_table_matches_schema() -> None:
    schema = SCHEMAS["exit-code.json"]
    expected = [
        [str(code), f"`{name}`", "yes" if retryable else "no", meaning, action]
        for code, name, retryable, meaning, action in zip(
            schema["enum"],
            schema["x-enum-varnames"],
            schema["x-retryable"],
            schema["x-meanings"],
            schema["x-controller-actions"],
            strict=True,
        )
    ]
    assert _exit_code_rows() == expected


def test_every_schema_file_is_referenced() -> None:
    for name in SCHEMAS:
        assert f"(../schema/{name})" in DOC, name


def test_rules_are_stated_with_rfc_2119_words() -> None:
    for section, body in zip(
        SECTIONS, re.split(r"^## §[1-7] .+$", DOC, flags=re.M)[1:], strict=True
    ):
        assert re.search(r"\b(MUST|SHOULD)\b", body), section
        assert "../schema/" in body, f"{section} points at no schema"
