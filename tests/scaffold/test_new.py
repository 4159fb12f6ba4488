"""`baqup-agent new`: every role and kind gives a project that lints, whose stubs fail
with "not implemented", whose Dockerfile passes the image checks; bad names exit 64,
an existing path 73, and nothing is half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent._cli import main
from baqup_agent._scaffold import NAME_MAX, NAME_PATTERN
from baqup_agent.contract import ExitCode
from baqup_agent.schema import config_schema
from baqup_agent.testing import job_env, run_agent
from tests.agent.helpers import ROOT, load_agent
from tests.container.images import dockerfile_problems, secret_variables

ROLES = ["backup", "restore", "both"]
KINDS = ["directory", "command"]
RUFF = Path(sys.executable).with_name("ruff")
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]
# what a build of a checkout does not need
SKIPPED = [".venv", "*.egg-info", "build", "__pycache__", ".git", "tests", "bench", "examples",
           ".*cache", "packages", "dist"]  # fmt: skip


def new(*argv: str) -> int:
    return main(["new", *argv])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_every_variant_is_a_ready_project(tmp_path: Path, role: str, kind: str) -> None:
    project = tmp_path / "pg-dumper"
    assert new("pg-dumper", "--role", role, "--kind", kind, "--directory", str(project)) == 0
    assert {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()} == {
        "agent.py", "agent-schema.json", "pyproject.toml", "Dockerfile", "README.md",
        ".gitignore", "tests/__init__.py", "tests/test_agent.py", "tests/test_conformance.py",
    }  # fmt: skip
    # the code lints as this project's own does
    lint = subprocess.run(
        [str(RUFF), "check", "--isolated", "--line-length", "100", "--select",
         "E,F,W,I,B,UP,SIM,RUF", "."], cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout
    # one example variable per role, one writeOnly secret, a valid schema
    schema = json.loads((project / "agent-schema.json").read_text())
    secrets = {n for n, v in schema["properties"].items() if v.get("writeOnly")}
    assert secrets == {"PG_DUMPER_PASSWORD"}
    wanted = {"backup": "PG_DUMPER_SOURCE", "restore": "PG_DUMPER_TARGET"}
    roles = {"backup", "restore"} if role == "both" else {role}
    assert set(schema["properties"]) - {"PG_DUMPER_PASSWORD"} == {wanted[r] for r in roles}
    assert config_schema(project / "agent-schema.json")
    dockerfile = (project / "Dockerfile").read_text()
    every_secret = secret_variables(project / "agent-schema.json")  # with the base's
    assert dockerfile_problems(dockerfile, every_secret, context=project) == []
    readme = (project / "README.md").read_text()
    assert ".venv/bin/pytest" in readme and "python agent.py" in readme
    assert "docker build -t pg-dumper:0.1.0 ." in readme
    conformance = (project / "tests" / "test_conformance.py").read_text()
    assert f'role="{role}"' in conformance and "baqup_conformance_check" in conformance
    assert ("run_child" in (project / "agent.py").read_text()) == (kind == "command")

    # the stubs fail the job clearly: no fake success
    agent = load_agent(project / "agent.py", "PgDumperAgent")
    for r in roles:
        variables = {wanted[r]: str(tmp_path / "data")}
        if r == "restore":  # a restore needs a published source to start at all
            variables["BAQUP_RESTORE_SOURCE"] = str(_published(tmp_path / f"s-{kind}"))
        run = run_agent(agent, job_env(tmp_path / f"staging-{r}", role=r, **variables))
        assert run.exit_code == ExitCode.INTERNAL_ERROR
        assert f"PgDumperAgent.{r} is not implemented yet" in run.result["error"]
        assert run.output is None


def _published(staging: Path) -> Path:
    from baqup_agent.testing import publish_output

    return publish_output(staging, "b1", {"data.tar.zst": b""})


VALID = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda n: len(n) <= NAME_MAX)
INVALID = st.one_of(
    st.text(min_size=0, max_size=80).filter(
        lambda n: not (NAME_PATTERN.fullmatch(n) and len(n) <= NAME_MAX) and "\x00" not in n
    ),
    VALID.map(lambda n: n + "-" + "x" * NAME_MAX),  # too long
)


@settings(max_examples=40, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(name=INVALID)
def test_a_bad_name_exits_64_and_creates_nothing(
    tmp_path_factory: pytest.TempPathFactory, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path_factory.mktemp("bad")
    target = parent / "project"
    assert new(name, "--directory", str(target)) == ExitCode.USAGE_CONFIG_ERROR
    assert "invalid NAME" in capsys.readouterr().err
    assert list(parent.iterdir()) == []


@settings(max_examples=20, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(name=VALID)
def test_any_valid_name_makes_an_importable_agent(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    project = tmp_path_factory.mktemp("ok") / name
    assert new(name, "--role", "backup", "--directory", str(project)) == 0
    source = (project / "agent.py").read_text()
    compile(source, "agent.py", "exec")
    assert f'name = "{name}"' in source
    assert [p.name for p in project.parent.iterdir()] == [name]  # no temporary left


@pytest.mark.parametrize("existing", ["empty dir", "full dir", "file", "symlink"])
def test_an_existing_path_is_never_overwritten(
    tmp_path: Path, existing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "my-agent"
    if existing == "file":
        target.write_text("keep me")
    elif existing == "symlink":
        target.symlink_to(tmp_path / "nowhere")
    else:
        target.mkdir()
        if existing == "full dir":
            (target / "agent.py").write_text("keep me")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert new("my-agent", "--directory", str(target)) == ExitCode.CANT_CREATE_OUTPUT
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_parent_that_cannot_hold_it_exits_73_without_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("keep me")
    assert new("my-agent", "--directory", str(tmp_path / "a-file" / "my-agent")) == 73
    assert "cannot create" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_a_bad_role_or_kind_is_a_usage_error() -> None:
    for argv in (["x", "--role", "all"], ["x", "--kind", "database"]):
        with pytest.raises(SystemExit) as info:
            new(*argv)
        assert info.value.code == ExitCode.USAGE_CONFIG_ERROR


# the trivial implementation the end-to-end test fills in: the stubs' own examples
FILLED = {
    '        # Write each artifact through ctx.artifact: compressed, checksummed and published\n'
    '        # with the manifest in one atomic step once backup() returns. A directory:\n'
    '        #     with ctx.artifact("data.tar.zst") as out:\n'
    '        #         ctx.create_tar(out, source)\n':
    '        with ctx.artifact("data.tar.zst") as out:\n'
    '            ctx.create_tar(out, source)\n'
    '        return\n',
    '        # Read the artifacts of ctx.source (checksums verified before the first byte):\n'
    '        #     with ctx.open_artifact("data.tar.zst") as stream:\n'
    '        #         ctx.extract_tar(stream, target)\n':
    '        with ctx.open_artifact("data.tar.zst") as stream:\n'
    '            ctx.extract_tar(stream, target)\n'
    '        return\n',
}  # fmt: skip


@pytest.mark.timeout(900)
def test_a_filled_in_project_passes_its_own_tests_in_a_fresh_venv(tmp_path: Path) -> None:
    """From `baqup-agent new` to a green generated suite: a fresh venv, baqup-schema from
    packages/baqup-schema, then this checkout, then the project; offline (pip cache)."""
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
    # copies: a build writes build/ and *.egg-info beside the sources
    sources = tmp_path / "sources"
    for name, path in (("schema", ROOT / "packages" / "baqup-schema"), ("agent", ROOT)):
        shutil.copytree(path, sources / name, ignore=shutil.ignore_patterns(*SKIPPED))
    for step in (["setuptools>=77"], [str(sources / "schema")], [str(sources / "agent")]):
        done = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]

    # the installed command (its templates come from the wheel)
    project = tmp_path / "files-agent"
    made = subprocess.run([str(venv / "bin" / "baqup-agent"), "new", "files-agent"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    agent = project / "agent.py"
    text = agent.read_text()
    for stub, code in FILLED.items():
        assert stub in text
        text = text.replace(stub, code)
    agent.write_text(text)
    done = subprocess.run([*pip, "--no-build-isolation", "-e", f"{project}[test]"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    installed = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAQUP_", "PYTHON"))}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    finished = time.monotonic()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "test_conformance[secrets] PASSED" in done.stdout or " passed" in done.stdout
    print(
        f"new -> green: {finished - started:.1f} s (install {installed - started:.1f} s, "
        f"generated tests {finished - installed:.1f} s): {done.stdout.strip().splitlines()[-1]}"
    )
