"""Checks of an agent's container files, without building an image: a Dockerfile and a
Kubernetes Job. Each ``*_problems`` function returns what is wrong, one sentence per
problem, empty when the file is fine.

Dockerfile: a small Python base, a numeric non-root ``USER``, ``STOPSIGNAL SIGTERM``,
an exec-form ``ENTRYPOINT`` (a shell as PID 1 would not pass SIGTERM on), no secret in
any layer (no ``ENV``/``ARG`` carrying a secret variable or a secret-looking value, no
secret-looking file copied in), and every copied file present in the repository.

Job: secrets only as mounted files named by ``*_FILE``, ``terminationGracePeriodSeconds``
above ``BAQUP_GRACE_PERIOD``, the staging directory on a writable volume, a non-root
user and a read-only root filesystem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baqup_schema.compiled_schema import config_schema

ROOT = Path(__file__).resolve().parents[2]
BASE_DEFAULTS = {
    name: spec.get("default")
    for name, spec in json.loads((ROOT / "schema" / "config.json").read_text())[
        "properties"
    ].items()
}
SMALL_BASE = re.compile(r"^python:\d+(\.\d+)*-(slim|alpine)[\w.-]*(@sha256:[0-9a-f]{64})?$")
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY", re.I)
CREDENTIAL_URL = re.compile(r"://[^/\s:@]*:[^/\s@]+@")
SECRET_FILES = re.compile(r"(^|/)(\.env|id_rsa|id_ed25519|[^/]*\.(pem|key|p12|pfx))$")


def secret_variables(agent_schema: Path) -> set[str]:
    """The ``writeOnly`` variables of the base contract merged with ``agent_schema``."""
    return {n for n, v in config_schema(agent_schema).variables.items() if v.secret}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; ``stage``
    counts ``FROM`` lines (the last stage is the image)."""
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def _env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """(name, value) of an ENV or ARG (``NAME=value`` pairs or the old ``NAME value``)."""
    args = instruction.args
    if "=" not in args.split(" ", 1)[0]:
        name, _, value = args.partition(" ")
        return [(name, value.strip())] if instruction.keyword == "ENV" else [(name, "")]
    pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\'[^\']*\'|\S*)', args)
    return [(n, v.strip("\"'")) for n, v in pairs]


def dockerfile_problems(text: str, secrets: set[str], context: Path = ROOT) -> list[str]:
    """What is wrong with a Dockerfile of an agent whose secret variables are ``secrets``;
    ``context`` is the build context the ``COPY`` sources are relative to."""
    found = parse_dockerfile(text)
    problems: list[str] = []
    if not found or found[0].keyword not in ("FROM", "ARG"):
        return ["not a Dockerfile: the first instruction must be FROM"]
    last = max(i.stage for i in found)
    final = [i for i in found if i.stage == last]
    image = final[0].args.split()[0] if final and final[0].keyword == "FROM" else ""
    if not SMALL_BASE.match(image):
        problems.append(f"the image's base {image!r} is not a small Python base (-slim/-alpine)")
    users = [i.args for i in final if i.keyword == "USER"]
    uid = users[-1].split(":")[0] if users else ""
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"the image must run as a numeric non-root USER, not {uid or 'root'!r}")
    if [i.args for i in final if i.keyword == "STOPSIGNAL"][-1:] != ["SIGTERM"]:
        problems.append("the image must declare STOPSIGNAL SIGTERM")
    entry = [i.args for i in final if i.keyword == "ENTRYPOINT"][-1:]
    try:
        exec_form = bool(entry) and isinstance(json.loads(entry[0]), list)
    except ValueError:
        exec_form = False
    if not exec_form:
        problems.append("ENTRYPOINT must be in exec form (a JSON array): a shell eats SIGTERM")
    for ins in found:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            for name, value in _env_pairs(ins):
                if name in secrets or (SECRET_WORDS.search(name) and not name.endswith("_FILE")):
                    problems.append(f"{ins.keyword} {name} puts a secret into a layer")
                elif CREDENTIAL_URL.search(value):
                    problems.append(f"{ins.keyword} {name} holds a URL with a password")
        if ins.keyword in ("COPY", "ADD"):
            words = [w for w in ins.args.split() if not w.startswith("--")]
            from_stage = "--from=" in ins.args
            for source in words[:-1]:
                if SECRET_FILES.search(source):
                    problems.append(f"{ins.keyword} {source} copies a secret into a layer")
                elif not from_stage and not (context / source).exists():
                    problems.append(f"{ins.keyword} {source}: no such file in the build context")
    return problems


def _grace_period(env: dict[str, str]) -> float:
    return float(env.get("BAQUP_GRACE_PERIOD", BASE_DEFAULTS["BAQUP_GRACE_PERIOD"]))


def job_problems(doc: Any, secrets: set[str]) -> list[str]:
    """What is wrong with a Kubernetes Job (parsed YAML) running an agent whose secret
    variables are ``secrets``."""
    if not isinstance(doc, dict) or doc.get("kind") != "Job":
        return ["not a Kubernetes Job"]
    problems: list[str] = []
    if doc.get("apiVersion") != "batch/v1":
        problems.append("apiVersion must be batch/v1")
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy must be Never: the controller decides on retries")
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    pod_security = pod.get("securityContext", {})
    containers = pod.get("containers", [])
    if not containers:
        problems.append("the Job has no container")
    for c in containers:
        name = c.get("name", "?")
        env = {e["name"]: e for e in c.get("env", [])}
        values = {n: str(e.get("value", "")) for n, e in env.items()}
        security = {**pod_security, **c.get("securityContext", {})}
        if not security.get("runAsNonRoot") or security.get("runAsUser") == 0:
            problems.append(f"{name}: must run as non-root (runAsNonRoot, runAsUser != 0)")
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if security.get("allowPrivilegeEscalation", True):
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        grace = pod.get("terminationGracePeriodSeconds")
        if not isinstance(grace, (int, float)) or grace <= _grace_period(values):
            problems.append(
                f"{name}: terminationGracePeriodSeconds ({grace}) must be above "
                f"BAQUP_GRACE_PERIOD ({_grace_period(values):g})"
            )
        mounts = c.get("volumeMounts", [])
        staging = values.get("BAQUP_STAGING_DIR") or BASE_DEFAULTS["BAQUP_STAGING_DIR"]
        if not any(m["mountPath"] == staging and not m.get("readOnly") for m in mounts):
            problems.append(f"{name}: the staging directory {staging} needs a writable volume")
        secret_dirs = [
            m["mountPath"].rstrip("/") + "/" for m in mounts if m.get("name") in secret_volumes
        ]
        for var in secrets & set(env):
            problems.append(f"{name}: {var} is set in the environment; mount it as {var}_FILE")
        for var in {v for v in env if v.endswith("_FILE") and v[: -len("_FILE")] in secrets}:
            if not any(values[var].startswith(d) for d in secret_dirs):
                problems.append(f"{name}: {var} must name a file in a mounted secret volume")
        words = " ".join(str(w) for w in [*c.get("command", []), *c.get("args", [])])
        if SECRET_WORDS.search(words) or CREDENTIAL_URL.search(words):
            problems.append(f"{name}: a secret-looking value on the command line")
    return problems
