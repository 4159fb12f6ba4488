"""The baqup-agent command and an agent's own command line: --version, exit 64 on usage
errors, help text for every option, no reST markup in help."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from baqup_agent import __version__
from baqup_agent._cli import build_parser, main
from baqup_agent._usage import UsageParser
from tests.agent.sample_agent import SampleAgent

_REST = re.compile(r"``|:(?:func|class|meth|mod|attr|ref|data):`|\.\. \w")


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"baqup-agent {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["--no-such-option"],
        ["validate-config"],  # --schema is required
        ["validate-config", "--schema", "s.json", "--bogus"],
        ["watch"],
        ["watch", "job", "--no-follow=yes"],
        ["conformance", "--role", "sideways", "--", "true"],
        ["conformance", "--timeout", "soon", "--", "true"],
        ["conformance", "--jobs", "1.5", "--", "true"],
    ],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 64
    err = capsys.readouterr().err
    assert "usage: baqup-agent" in err and "error:" in err


def test_every_option_has_help_and_no_rest_markup() -> None:
    for parser in parsers(build_parser()):
        assert isinstance(parser, UsageParser)  # subcommands exit 64 too
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{parser.prog}: subcommand {choice.dest} has no help"
                continue
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{parser.prog}: {action.option_strings or action.dest} has no help"
            )
        text = parser.format_help()
        assert not _REST.search(text), f"reST markup in the help of {parser.prog}"


def test_an_agent_command_line_exits_64_on_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        SampleAgent.main(["--frobnicate"])
    assert exc.value.code == 64
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        SampleAgent.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "sample 0.1.0"
