"""The two distributions this repository builds: baqup-schema (packages/baqup-schema/) and
baqup-agent (the top level). Their wheels carry the preview's licence and metadata, build
without a packaging warning, and baqup-schema installs and validates configs alone."""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import baqup_agent

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {"baqup-schema": ROOT / "packages" / "baqup-schema", "baqup-agent": ROOT}
PACKAGES = {"baqup-schema": "baqup_schema", "baqup-agent": "baqup_agent"}
LICENSE_EXPRESSION = "LicenseRef-Fair-Source-1.0"
PROJECT_URLS = {"Homepage", "Documentation", "Repository", "Issues"}
# `-W error`: any warning of the build backend (a deprecated licence form, say) fails it
BUILD = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both wheels, built offline (the dev extra installs the build backend) from a copy
    of each project, so that the build's own build/ and egg-info stay out of the tree."""
    work = tmp_path_factory.mktemp("dists")
    out = work / "wheels"
    built = {}
    for name, project in PROJECTS.items():
        copy = work / name
        copy.mkdir()
        for item in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(project / item, copy / item)
        ignore = shutil.ignore_patterns("*.egg-info", "__pycache__")
        shutil.copytree(project / "src", copy / "src", ignore=ignore)
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", BUILD, str(out)],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        built[name] = out / done.stdout.splitlines()[-1]
    return built


def _read(wheel: Path) -> tuple[Message, dict[str, bytes]]:
    with zipfile.ZipFile(wheel) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    meta = next(n for n in files if n.endswith(".dist-info/METADATA"))
    return email.parser.BytesParser().parsebytes(files[meta]), files


@pytest.mark.parametrize("name", PROJECTS)
def test_wheel_metadata_carries_licence_and_preview_fields(
    wheels: dict[str, Path], name: str
) -> None:
    meta, files = _read(wheels[name])
    assert meta["Name"] == name
    assert meta["Version"] == baqup_agent.__version__  # released together, same version
    # PEP 639: an SPDX expression and the file, no legacy License field or classifier
    assert meta["License-Expression"] == LICENSE_EXPRESSION
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None
    classifiers = meta.get_all("Classifier") or []
    assert not [c for c in classifiers if c.startswith("License ::")]
    dist_info = f"{PACKAGES[name]}-{meta['Version']}.dist-info"
    assert files[f"{dist_info}/licenses/LICENSE"] == (PROJECTS[name] / "LICENSE").read_bytes()

    assert "hello@baqup.io" in meta["Author-email"]
    assert "baqupio" in meta["Author-email"]
    assert {"baqup", "backup"} <= set(meta["Keywords"].split(","))
    status = [c for c in classifiers if c.startswith("Development Status ::")]
    assert status == ["Development Status :: 3 - Alpha"]  # the preview said 1 - Planning
    assert {
        "Intended Audience :: Developers",
        "Topic :: System :: Archiving :: Backup",
        "Programming Language :: Python :: 3",
        "Typing :: Typed",
    } <= set(classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) == PROJECT_URLS
    assert all(u.startswith("https://github.com/baqupio/") for u in urls.values())
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Summary"]
    assert meta["Description-Content-Type"] == "text/markdown"


def test_agent_depends_on_exactly_the_schema_dist_built_beside_it(
    wheels: dict[str, Path],
) -> None:
    agent, _ = _read(wheels["baqup-agent"])
    schema, _ = _read(wheels["baqup-schema"])
    requires = agent.get_all("Requires-Dist") or []
    assert f"baqup-schema=={schema['Version']}" in requires
    # the runtime's heavy dependencies belong to the agent, never to baqup-schema
    schema_dists = schema.get_all("Requires-Dist")
    assert schema_dists is not None, "baqup-schema declares no Requires-Dist"
    schema_requires = {re.split(r"[<>=!~ ;\[]", r)[0] for r in schema_dists}
    assert not schema_requires & {"redis", "zstandard", "baqup-agent"}


def test_each_wheel_holds_its_own_package(wheels: dict[str, Path]) -> None:
    _, schema_files = _read(wheels["baqup-schema"])
    _, agent_files = _read(wheels["baqup-agent"])
    assert not [n for n in schema_files if n.startswith("baqup_agent/")]
    assert not [n for n in agent_files if n.startswith("baqup_schema/")]
    packaged = {n.rsplit("/", 1)[1] for n in schema_files if "/contract/schemas/" in n}
    assert packaged == {p.name for p in (ROOT / "schema").glob("*.json")}
    assert {"baqup_schema/py.typed", "baqup_schema/contract/exit_code.py"} <= set(schema_files)
    assert {"baqup_agent/py.typed", "baqup_agent/contract/exit_code.py"} <= set(agent_files)


def test_licence_files_state_the_preview_terms() -> None:
    """Both name the Licensor, the use limitation and the pointers of the preview's
    licence; they differ only in the Software line."""
    texts = {name: (p / "LICENSE").read_text(encoding="utf-8") for name, p in PROJECTS.items()}
    for name, text in texts.items():
        assert text.startswith("Fair Source License, Version 1.0\n")
        assert "\nLicensor: baqupio\n" in text
        assert f"\nSoftware: {name}\n" in text
        assert re.search(r"^Copyright \(c\) 20\d\d baqupio$", text, re.MULTILINE)
        for term in (
            "annual gross\n    revenue of less than USD $1,000,000 AND fewer than 10 employees",
            "registered non-profit organisation",
            "educational institution",
            "personal, non-commercial purposes",
            "All other use requires a commercial license obtained from the Licensor.",
            "https://github.com/baqupio/baqup/blob/main/LICENSE",
            "https://github.com/baqupio/baqup/blob/main/LICENSING.md",
        ):
            assert term in text, (name, term)
        assert "users" not in text.lower().split("use limitation:")[1].split("\n")[0]
    same = {re.sub(r"(?m)^Software: .*$", "Software: -", t) for t in texts.values()}
    assert len(same) == 1


def test_baqup_schema_alone_validates_without_the_runtime(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    """A controller's install: the baqup-schema wheel (never a baqup-schema from an index)
    and its dependencies in a fresh venv; good and bad agent configs, no redis, no zstd."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-compile",
    ]
    done = subprocess.run(
        [*map(str, install), str(wheels["baqup-schema"])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    probe = Path(__file__).with_name("schema_only_probe.py")
    schema = ROOT / "examples" / "filesystem_agent" / "agent-schema.json"
    # -I: neither this checkout nor PYTHONPATH is on the path, only the venv
    done = subprocess.run(
        [str(python), "-I", str(probe), str(schema)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["good"] == [True, []]
    assert report["bad"] == [
        False,
        [
            ["BAQUP_FS_SOURCE", "required"],
            ["BAQUP_FS_ZSTD_LEVEL", "maximum"],
            ["BAQUP_JOB_ID", "required"],
        ],
    ]
    assert report["loaded"] == {"secret": True, "threads": -1}
    assert report["env_error"] == {
        "variables": ["BAQUP_REDIS_URL", "BAQUP_ROLE"],
        "exit_code": 64,
        "quotes_secret": False,
    }
    assert "baqup-schema" in report["distributions"]
    assert not {"redis", "zstandard", "baqup-agent"} & set(report["distributions"])
    assert report["importable"] == {"redis": False, "zstandard": False, "baqup_agent": False}


def test_baqup_schema_never_imports_the_runtime() -> None:
    """Every import in baqup_schema's sources, lazy ones included, stays inside it."""
    package = PROJECTS["baqup-schema"] / "src" / "baqup_schema"
    offenders = [
        f"{path.relative_to(package)}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*(from|import)\s+baqup_agent\b", line)
    ]
    assert not offenders
