"""``import baqup_agent`` stays light: heavy dependencies load only when used; a job
loads only what its path needs (an agent starts cold for every job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from baqup_agent.testing import job_env, process_env

HEAVY = ("redis", "jsonschema", "zstandard", "blake3", "sqlite3")
FS_AGENT = Path(__file__).resolve().parents[2] / "examples" / "filesystem_agent" / "agent.py"
# Never loaded by a job of the example agent on the spool bus: tarfile (the example
# needs two of tar's numbers), argparse (a job has no arguments), difflib (hints for a
# misspelt variable), redis (no BAQUP_REDIS_URL), blake3 (not the checksum chosen).
JOB_UNLOADED = ("tarfile", "argparse", "difflib", "redis", "blake3")
# Runs the agent script as its own process would, then reports what the job loaded and
# whether the bus-message union (only needed for a message received) was ever built.
_JOB_PROBE = """
import atexit, json, runpy, sys

def report():
    from baqup_schema.contract import BusMessage

    built = BusMessage.__pydantic_complete__
    print(json.dumps({"modules": sorted(sys.modules), "union_built": built}))

atexit.register(report)
runpy.run_path(sys.argv.pop(1), run_name="__main__")
"""


def _loaded(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import baqup_agent",
        "from baqup_agent import ExitCode",
        "from baqup_agent import ExitCode, AgentState, LogLevel, Manifest, Artifact",
        "from baqup_agent.contract import BusMessage, BaseConfig, LogRecord, tables",
    ],
)
def test_heavy_modules_stay_unloaded(code: str) -> None:
    loaded = _loaded(code)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    "code", ["import baqup_agent", "from baqup_agent import ExitCode, AgentState, LogLevel"]
)
def test_enums_do_not_need_pydantic(code: str) -> None:
    """The contract package resolves names lazily: an enum loads its module alone."""
    loaded = _loaded(code)
    assert not {m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core")}


def test_models_load_no_pydantic_plugins() -> None:
    """Importing models builds no validator, so pydantic's plugin loader (which imports
    ``importlib.metadata`` and scans every installed distribution) is not loaded, nor
    ``RootModel``, whose class is built as its module is imported."""
    loaded = _loaded("from baqup_agent import ExitCode, AgentState, LogLevel, Manifest, Artifact")
    assert "pydantic.main" in loaded  # the probe sees real models
    assert not loaded & {"importlib.metadata", "pydantic.plugin._loader", "pydantic.root_model"}


def _job_loads(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _JOB_PROBE, str(FS_AGENT)],
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_a_job_loads_only_what_its_path_needs(tmp_path: Path) -> None:
    """A backup and a restore of the example agent, each a real process: the modules
    made lazy stay unloaded and the bus-message union is never built."""
    source, staging = tmp_path / "source", tmp_path / "staging"
    source.mkdir()
    (source / "file").write_bytes(b"x")
    backup = job_env(staging, "job-1", BAQUP_FS_SOURCE=source)
    restore = job_env(
        staging,
        "job-2",
        "restore",
        BAQUP_RESTORE_SOURCE=staging / "job-1",
        BAQUP_FS_TARGET=tmp_path / "target",
    )
    for env in (backup, restore):
        report = _job_loads(env)
        modules = report["modules"]
        assert isinstance(modules, list)
        assert "jsonschema" in modules  # the probe sees a real job: its config was validated
        assert not {m for m in modules if m.split(".")[0] in JOB_UNLOADED}
        assert report["union_built"] is False
    assert (tmp_path / "target" / "file").read_bytes() == b"x"
