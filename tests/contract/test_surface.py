"""The public surface (issue 12 item 4): six public modules, everything else private by name.

Each public module's ``__all__`` is pinned here (a change is a deliberate edit of this
file and of the docs); every exported name exists, is documented and names a public
module as its ``__module__``; a public module holds no other public name by accident
(an import it did not mean to re-export).
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import pickle
import subprocess
import sys
from types import ModuleType

import pytest

import baqup_agent
from tests.contract._schemas import ROOT

PUBLIC: dict[str, list[str]] = {
    "baqup_agent": [
        "Agent",
        "AgentError",
        "AgentState",
        "Artifact",
        "BusClient",
        "Cancelled",
        "CantCreateOutput",
        "ChildFailed",
        "ChildResult",
        "ConfigError",
        "Context",
        "DataError",
        "ExitCode",
        "HeartbeatThread",
        "IOFailure",
        "JobEvents",
        "LogLevel",
        "Logger",
        "Manifest",
        "PartialFailure",
        "PublishedOutput",
        "ResourceUnavailable",
        "Secret",
        "SecretFile",
        "__version__",
        "atomic_write",
        "compute_checksum",
        "load_config",
        "run",
        "validate_path",
    ],
    "baqup_agent.config": ["Config", "JobSettings", "job_settings", "load_config"],
    "baqup_agent.schema": [
        "CompiledSchema",
        "SchemaSource",
        "ValidationError",
        "ValidationResult",
        "Variable",
        "coerce",
        "compile_schema",
        "config_schema",
        "contract_errors",
        "is_hostname",
        "is_path",
        "load_from_env",
        "read_secret_file",
        "validate",
    ],
    "baqup_agent.contract": [
        "AgentState",
        "Artifact",
        "BaseConfig",
        "BusMessage",
        "Cancel",
        "ChecksumAlgorithm",
        "Compression",
        "ConformanceCheck",
        "ConformanceCheckStatus",
        "ConformanceCounts",
        "ConformanceFinding",
        "ConformanceFindingLevel",
        "ConformanceReport",
        "ConformanceRole",
        "ConformanceRuleId",
        "ConformanceScenario",
        "ConformanceUntested",
        "ConformanceVerdict",
        "ExceptionInfo",
        "ExitCode",
        "Heartbeat",
        "HeartbeatIntent",
        "LogFormat",
        "LogLevel",
        "LogLevelName",
        "LogRecord",
        "Manifest",
        "Progress",
        "ProgressUpdate",
        "Result",
        "ResultStatus",
        "Role",
        "StateChange",
    ],
    "baqup_agent.conformance": [
        "CheckResult",
        "EXIT_INCOMPLETE",
        "Finding",
        "Level",
        "Report",
        "Status",
        "Suite",
        "SuiteOptions",
        "Untested",
        "Verdict",
        "run_suite",
    ],
    "baqup_agent.testing": [
        "AgentRun",
        "LogCapture",
        "RedisServer",
        "cancel_message",
        "free_port",
        "job_env",
        "parse_records",
        "process_env",
        "publish_output",
        "run_agent",
        "send_cancel",
        "spool_messages",
    ],
}
"""Public module -> its ``__all__``, sorted."""

# modules and packages of src/baqup_agent/ that keep a public name
PUBLIC_FILES = {"__init__.py", "__main__.py", "config.py", "schema.py", "py.typed"}
PUBLIC_DIRS = {"contract", "conformance", "testing", "scaffold_templates"}


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _defines_module(value: object) -> bool:
    """Classes and functions: objects that carry their own docstring and module."""
    return inspect.isclass(value) or inspect.isroutine(value)


@pytest.fixture(params=sorted(PUBLIC), name="module")
def _module(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def test_all_is_pinned(module: ModuleType) -> None:
    assert len(set(module.__all__)) == len(module.__all__), "a name exported twice"
    assert sorted(module.__all__) == PUBLIC[module.__name__]


def test_every_exported_name_exists_is_documented_and_public(module: ModuleType) -> None:
    problems = []
    for name in module.__all__:
        value = getattr(module, name)
        if not _defines_module(value):
            continue  # data (__version__, EXIT_INCOMPLETE, a type alias): no docstring of its own
        if not (inspect.getdoc(value) or "").strip():
            problems.append(f"{module.__name__}.{name} has no docstring")
        if _private(value.__module__):
            problems.append(f"{module.__name__}.{name}.__module__ is {value.__module__}")
    assert problems == []


def test_no_public_module_exports_a_name_by_accident(module: ModuleType) -> None:
    # vars(), not dir(): a lazy module's __dir__ answers __all__ whatever it holds
    stray = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)  # submodules and `import typing`
        and value is not __future__.annotations
    } - set(module.__all__)
    assert stray == set(), f"{module.__name__} holds names it does not export: {sorted(stray)}"


def test_every_other_module_is_private_by_name() -> None:
    package = ROOT / "src" / "baqup_agent"
    public = []
    for entry in package.iterdir():
        if entry.name.startswith((".", "_")) or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir() and entry.name not in PUBLIC_DIRS and any(entry.glob("*.py")):
            public.append(entry.name)
        if entry.is_file() and entry.name not in PUBLIC_FILES:
            public.append(entry.name)
    assert public == [], f"rename to a leading underscore or export on purpose: {public}"


def test_objects_from_private_modules_show_the_public_path() -> None:
    for name in ("Context", "DataError", "Logger", "SecretFile", "run"):
        value = getattr(baqup_agent, name)
        assert value.__module__ == "baqup_agent", name
    assert repr(baqup_agent.Context) == "<class 'baqup_agent.Context'>"
    # what a traceback or a pickle names is importable
    error = pickle.loads(pickle.dumps(baqup_agent.DataError("bad archive")))
    assert type(error) is baqup_agent.DataError and str(error) == "bad archive"
    from baqup_agent.config import load_config

    assert load_config.__module__ == "baqup_agent.config"
    assert load_config is baqup_agent.load_config


def test_the_public_path_is_given_however_the_name_is_first_reached() -> None:
    """Fresh interpreter: the runtime imports its classes by their private path first
    (as running a job does); the package still hands them out under its own name."""
    code = (
        "from baqup_agent._agent import Context; from baqup_agent._errors import DataError\n"
        "import baqup_agent\n"
        "print(baqup_agent.Context.__module__, baqup_agent.DataError.__module__,"
        " Context is baqup_agent.Context)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["baqup_agent", "baqup_agent", "True"]


def test_documented_import_paths_work() -> None:
    """The import lines of README.md and docs/ run (the paths authors copy)."""
    import re

    import_line = re.compile(r"\s*(from baqup_agent\S* import [\w, ]+|import baqup_agent\S*)$")
    lines = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            match = import_line.match(line)
            if match:
                lines.add(match.group(1).strip().rstrip(","))
    assert lines, "the docs show imports"
    private = sorted(line for line in lines if re.search(r"baqup_agent\S*\._", line.split()[1]))
    assert private == [], f"docs import private modules: {private}"
    code = "\n".join(sorted(lines))
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)


def test_type_hints_of_published_classes_still_resolve() -> None:
    """``typing.get_type_hints`` looks annotations up in the module ``__module__`` names;
    a class given the public one keeps hints that resolve (subclasses in agents too)."""
    import typing

    class MyAgent(baqup_agent.Agent):
        label: str = "x"

    assert typing.get_type_hints(MyAgent)["label"] is str
    for name in ("baqup_agent", "baqup_agent.config", "baqup_agent.testing"):
        module = importlib.import_module(name)
        for export in module.__all__:
            value = getattr(module, export)
            if inspect.isclass(value) and value.__module__ == name:
                typing.get_type_hints(value)
