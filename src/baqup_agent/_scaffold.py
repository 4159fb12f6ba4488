"""``baqup-agent new NAME``: a ready project for a new agent.

The files come from ``scaffold_templates/`` through ``string.Template``: the variants
(role, kind) are whole fragments chosen here, so the templates need no logic, and the
command adds no runtime dependency (jinja2 would be one for every agent image, for a
command run once per project).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from baqup_agent import __version__
from baqup_agent.contract import ExitCode

NAME_MAX = 64
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
ROLES = ("backup", "restore", "both")
KINDS = ("directory", "command")


class ScaffoldError(Exception):
    """A project that cannot be made, with the exit code to report."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_name(name: str) -> None:
    """Raise ``ScaffoldError`` (64) unless ``name`` can name the directory, the
    distribution and the agent."""
    if len(name) > NAME_MAX or not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= NAME_MAX and name.isprintable() else repr(name[:NAME_MAX])
        raise ScaffoldError(
            f"invalid NAME {shown}: lowercase letters, digits and single dashes, starting "
            f"with a letter, at most {NAME_MAX} characters (for example: mysql-agent)",
            ExitCode.USAGE_CONFIG_ERROR,
        )


def _template(filename: str) -> Template:
    text = resources.files("baqup_agent.scaffold_templates").joinpath(filename).read_text()
    return Template(text)


def _schema(name: str, prefix: str, roles: set[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[dict[str, Any]] = []
    for role, var, what in (("backup", "SOURCE", "What to back up"),
                            ("restore", "TARGET", "Where to restore to")):  # fmt: skip
        if role in roles:
            properties[f"{prefix}_{var}"] = {
                "description": f"{what} ({role} role).",
                "type": "string",
                "minLength": 1,
            }
            required.append({
                "if": {"properties": {"BAQUP_ROLE": {"const": role}}, "required": ["BAQUP_ROLE"]},
                "then": {"required": [f"{prefix}_{var}"]},
            })  # fmt: skip
    properties[f"{prefix}_PASSWORD"] = {
        "description": "A secret of the agent (a password, a token): never logged or written "
        f"anywhere; give it as {prefix}_PASSWORD_FILE, a file holding it.",
        "type": "string",
        "writeOnly": True,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{_class_name(name)}Config",
        "description": f"Variables of {name}; the SDK merges the base contract (BAQUP_*) in.",
        "type": "object",
        "properties": properties,
        "allOf": required,
    }


def _class_name(name: str) -> str:
    words = name.split("-")
    return "".join(w.capitalize() for w in words) + ("" if words[-1] == "agent" else "Agent")


def render(name: str, role: str, kind: str) -> dict[str, str]:
    """The project's files (relative path -> content) for ``name``, ``role``, ``kind``."""
    check_name(name)
    roles = {"backup", "restore"} if role == "both" else {role}
    prefix = name.upper().replace("-", "_")
    values: dict[str, str] = {
        "name": name,
        "title": name.replace("-", " ").capitalize(),
        "class_name": _class_name(name),
        "prefix": prefix,
        "role": role,
        "first_role": "backup" if "backup" in roles else "restore",
        "sdk_version": __version__,
        "path_import": "from pathlib import Path\n\n" if kind == "directory" else "",
    }

    def fill(filename: str, **extra: str) -> str:
        return _template(filename).substitute(values, **extra)

    methods = "".join(fill(f"{r}_{kind}.py.tmpl") for r in ("backup", "restore") if r in roles)
    files = {"agent.py": fill("agent.py.tmpl", methods=methods)}
    files["agent-schema.json"] = json.dumps(_schema(name, prefix, roles), indent=2) + "\n"
    files["pyproject.toml"] = fill("pyproject.toml.tmpl")
    files["Dockerfile"] = fill(
        "Dockerfile.tmpl",
        tool_install=""
        if kind == "directory"
        else "# the command-line tool the agent wraps, for example:\n"
        "# RUN apt-get update && apt-get install -y --no-install-recommends your-tool "
        "&& rm -rf /var/lib/apt/lists/*\n",
    )
    files["README.md"] = fill("README.md.tmpl", **_readme_values(prefix, roles))
    files["tests/__init__.py"] = ""
    files["tests/test_agent.py"] = fill("test_agent.py.tmpl", **_test_values(roles, kind, values))
    files["tests/test_conformance.py"] = fill(
        "test_conformance.py.tmpl", **_conformance_values(prefix, roles, kind)
    )
    files[".gitignore"] = ".venv/\n__pycache__/\n*.egg-info/\nbuild/\n"
    return files


def _readme_values(prefix: str, roles: set[str]) -> dict[str, str]:
    if "backup" in roles:
        run_vars = f"{prefix}_SOURCE=$HOME/data"
        output = "The output appears in `/tmp/staging/job-1/` (artifacts and `manifest.json`)."
    else:
        run_vars = f"BAQUP_RESTORE_SOURCE=/tmp/staging/job-0 {prefix}_TARGET=/tmp/restored"
        output = "`BAQUP_RESTORE_SOURCE` is the published output of a backup."
    methods = {"backup": "`backup` method", "restore": "`restore` method"}
    text = " and ".join(methods[r] for r in ("backup", "restore") if r in roles)
    text = text.replace(" method and `restore` method", " and `restore` methods")
    return {"run_vars": run_vars, "output_text": output, "roles_text": text}


def _test_values(roles: set[str], kind: str, values: dict[str, str]) -> dict[str, str]:
    imports = ["job_env", "run_agent"]
    fragments = []
    if "backup" in roles:
        fragments.append(_template("test_backup.py.tmpl").substitute(values))
    if roles == {"backup", "restore"}:
        fragments.append(_template("test_round_trip.py.tmpl").substitute(values))
    elif roles == {"restore"}:
        imports.insert(1, "publish_output")
        fragment = _template("test_restore.py.tmpl")
        fragments.append(fragment.substitute(values, **_restore_values(kind)))
    variables = "".join(
        f'{var} = "{values["prefix"]}_{var}"  # the agent\'s {role} variable\n'
        for role, var in (("backup", "SOURCE"), ("restore", "TARGET"))
        if role in roles
    )
    return {
        "testing_imports": ", ".join(imports),
        "tests": "".join(fragments),
        "variables": f"\n{variables}",
    }


def _restore_values(kind: str) -> dict[str, str]:
    if kind == "directory":
        helper = (
            "\n\ndef tar_bytes(root: Path) -> bytes:\n"
            "    import io\n    import tarfile\n\n"
            "    raw = io.BytesIO()\n"
            '    with tarfile.open(fileobj=raw, mode="w") as tar:\n'
            '        tar.add(root, arcname=".")\n'
            "    return raw.getvalue()\n"
        )
        return {
            "helper": helper,
            "artifact": "data.tar.zst",
            "artifact_content": 'tar_bytes(sample_tree(tmp_path / "source"))',
            "restore_check": '    assert (target / "hello.txt").read_text() == "hello\\n"\n',
        }
    return {
        "helper": "",
        "artifact": "dump.zst",
        "artifact_content": 'b"a dump of the tool"',
        "restore_check": "",
    }


def _conformance_values(prefix: str, roles: set[str], kind: str) -> dict[str, str]:
    env = []
    if "backup" in roles:
        env.append(f'"{prefix}_SOURCE": "{{fixture}}"')
    if "restore" in roles:
        env.append(f'"{prefix}_TARGET": "{{target}}"')
    extra = ""
    if kind == "command":
        extra = (
            "\n    # the tool's dump is not a tar stream: the hostile-archive check does not"
            "\n    # apply (drop this line if the artifact is a tar)"
            "\n    artifact_not_tar=True,"
        )
    return {"conformance_env": ", ".join(env), "conformance_extra": extra}


def create_project(target: Path, name: str, role: str = "both", kind: str = "directory") -> None:
    """Write the project for ``name`` into the new directory ``target``.

    Nothing half-written: the files go to a temporary directory beside ``target``,
    renamed into place at the end. ``ScaffoldError``: 64 for a bad name, role or kind,
    73 when ``target`` exists or cannot be made.
    """
    if role not in ROLES or kind not in KINDS:
        raise ScaffoldError(
            f"--role must be one of {', '.join(ROLES)} and --kind one of {', '.join(KINDS)}",
            ExitCode.USAGE_CONFIG_ERROR,
        )
    files = render(name, role, kind)
    if os.path.lexists(target):
        raise ScaffoldError(
            f"{target} already exists: not overwritten", ExitCode.CANT_CREATE_OUTPUT
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    except OSError as exc:
        raise ScaffoldError(
            f"cannot create {target}: {exc.strerror}", ExitCode.CANT_CREATE_OUTPUT
        ) from exc
    try:
        for relative, content in files.items():
            path = work / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        work.chmod(0o755)  # mkdtemp makes it private
        # rename(2) fails on a directory that is not empty or on a file appeared since
        # the check above; an empty directory made meanwhile is replaced, losing nothing
        os.rename(work, target)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ScaffoldError(
            f"cannot create {target}: {exc.strerror}", ExitCode.CANT_CREATE_OUTPUT
        ) from exc


def new_command(args: argparse.Namespace) -> int:
    """``baqup-agent new NAME [--role ROLE] [--kind KIND] [--directory DIR]``."""
    target = Path(args.directory) if args.directory else Path(args.name)
    try:
        create_project(target, args.name, args.role, args.kind)
    except ScaffoldError as exc:
        print(f"baqup-agent new: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(f"created {target}/: agent.py, agent-schema.json, tests/, Dockerfile, README.md")
    print(f"next: cd {target} && python -m venv .venv && .venv/bin/pip install -e '.[test]'")
    print("      .venv/bin/pytest   (fails with 'not implemented' until agent.py is written)")
    return int(ExitCode.SUCCESS)
