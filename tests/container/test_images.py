"""The examples' Dockerfiles and Kubernetes Job, checked without building anything: the
real files pass, and every kind of mistake the checks name is caught."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: installed with the dev dependencies (datamodel-code-generator)
from hypothesis import given
from hypothesis import strategies as st

from tests.container.images import (
    BASE_DEFAULTS,
    ROOT,
    dockerfile_problems,
    job_problems,
    secret_variables,
)

EXAMPLES = ROOT / "examples"
AGENTS = sorted(p.parent for p in EXAMPLES.glob("*/Dockerfile"))
JOB = EXAMPLES / "filesystem_agent" / "k8s-job.yaml"
DOC = (ROOT / "docs" / "containers.md").read_text()


def secrets_of(agent_dir: Path) -> set[str]:
    return secret_variables(agent_dir / "agent-schema.json")


def test_every_example_agent_has_a_dockerfile() -> None:
    agents = sorted(p.parent for p in EXAMPLES.glob("*/agent.py"))
    assert agents and agents == AGENTS


@pytest.mark.parametrize("agent_dir", AGENTS, ids=lambda p: p.name)
def test_the_example_dockerfiles_pass(agent_dir: Path) -> None:
    text = (agent_dir / "Dockerfile").read_text()
    assert dockerfile_problems(text, secrets_of(agent_dir)) == []
    # the image runs this example, and the docs show how to build it
    assert f"examples/{agent_dir.name}/agent.py" in text
    assert f"docker build -f examples/{agent_dir.name}/Dockerfile" in DOC


def test_the_example_job_passes() -> None:
    doc = yaml.safe_load(JOB.read_text())
    assert job_problems(doc, secrets_of(JOB.parent)) == []
    assert "examples/filesystem_agent/k8s-job.yaml" in DOC


def test_the_job_uses_the_image_user() -> None:
    """The Job's runAsUser is the image's USER (files on volumes get the same owner)."""
    doc = yaml.safe_load(JOB.read_text())
    uid = doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    dockerfile = (JOB.parent / "Dockerfile").read_text()
    assert re.search(rf"^USER {uid}:", dockerfile, re.M)


# -- every mistake is caught ---------------------------------------------------------------

GOOD_DOCKERFILE = (EXAMPLES / "filesystem_agent" / "Dockerfile").read_text()
FS_SECRETS = secrets_of(EXAMPLES / "filesystem_agent")

DOCKERFILE_MISTAKES: dict[str, Callable[[str], str]] = {
    "big base": lambda t: t.replace("FROM python:3.12-slim\n", "FROM python:3.12\n"),
    "no user": lambda t: re.sub(r"^USER .*\n", "", t, flags=re.M),
    "root user": lambda t: re.sub(r"^USER .*$", "USER root", t, flags=re.M),
    "uid 0": lambda t: re.sub(r"^USER .*$", "USER 0:0", t, flags=re.M),
    "named user": lambda t: re.sub(r"^USER .*$", "USER baqup", t, flags=re.M),
    "no stopsignal": lambda t: t.replace("STOPSIGNAL SIGTERM\n", ""),
    "other stopsignal": lambda t: t.replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL"),
    "shell entrypoint": lambda t: re.sub(
        r"^ENTRYPOINT .*$", "ENTRYPOINT python /app/agent.py", t, flags=re.M
    ),
    "password env": lambda t: t + "ENV BAQUP_REDIS_PASSWORD=hunter2\n",
    "url env": lambda t: t + "ENV BAQUP_REDIS_URL redis://redis:6379/0\n",
    "password arg": lambda t: t.replace(
        "FROM python:3.12-slim\n", "FROM python:3.12-slim\nARG DB_PASSWORD\n"
    ),
    "token env": lambda t: t + 'ENV API_TOKEN="abc"\n',
    "credential url": lambda t: t + "ENV UPSTREAM=https://user:pw@example.com/x\n",
    "env file copied": lambda t: t + "COPY .env /app/\n",
    "key copied": lambda t: t + "COPY deploy/tls.key /app/\n",
    "missing source": lambda t: t.replace("/agent-schema.json", "/agent-schema.jsn"),
}


@pytest.mark.parametrize("mistake", sorted(DOCKERFILE_MISTAKES))
def test_each_dockerfile_mistake_alone_is_caught(mistake: str) -> None:
    text = DOCKERFILE_MISTAKES[mistake](GOOD_DOCKERFILE)
    assert text != GOOD_DOCKERFILE
    assert len(dockerfile_problems(text, FS_SECRETS)) == 1


@given(st.lists(st.sampled_from(sorted(DOCKERFILE_MISTAKES)), min_size=1, unique=True))
def test_dockerfile_mistakes_together_are_caught(mistakes: list[str]) -> None:
    text = GOOD_DOCKERFILE
    for mistake in mistakes:
        text = DOCKERFILE_MISTAKES[mistake](text)
    assert dockerfile_problems(text, FS_SECRETS), mistakes


def test_a_secret_file_variable_is_fine_in_an_env() -> None:
    text = GOOD_DOCKERFILE + "ENV BAQUP_REDIS_PASSWORD_FILE=/run/secrets/baqup/redis-password\n"
    assert dockerfile_problems(text, FS_SECRETS) == []


GOOD_JOB = yaml.safe_load(JOB.read_text())


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(doc)["containers"][0]
    return container


def _set_env(doc: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in _container(doc)["env"] if e["name"] != name]
    _container(doc)["env"] = [*env, {"name": name, "value": value}]


def _staging_mount(doc: dict[str, Any]) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = _container(doc)["volumeMounts"]
    (mount,) = [m for m in mounts if m["name"] == "staging"]
    return mount


def _default_grace_above(doc: dict[str, Any]) -> None:
    env = [e for e in _container(doc)["env"] if e["name"] != "BAQUP_GRACE_PERIOD"]
    _container(doc)["env"] = env
    _pod(doc)["terminationGracePeriodSeconds"] = BASE_DEFAULTS["BAQUP_GRACE_PERIOD"]


JOB_MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    # Each mistake applies after any other (the combined test draws them in any order):
    # with no pod grace left, "grace not above" compares with the default it would get.
    "no termination grace": lambda d: _pod(d).pop("terminationGracePeriodSeconds", None),
    "grace not above": lambda d: _set_env(
        d,
        "BAQUP_GRACE_PERIOD",
        str(_pod(d).get("terminationGracePeriodSeconds", BASE_DEFAULTS["BAQUP_GRACE_PERIOD"])),
    ),
    "default grace above": _default_grace_above,
    "password in env": lambda d: _set_env(d, "BAQUP_REDIS_PASSWORD", "hunter2"),
    "url from secretKeyRef": lambda d: _container(d)["env"].append(
        {"name": "BAQUP_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
    ),
    "secret file outside a secret volume": lambda d: _set_env(
        d, "BAQUP_REDIS_PASSWORD_FILE", "/var/lib/baqup/staging/redis-password"
    ),
    "read-only staging": lambda d: _staging_mount(d).__setitem__("readOnly", True),
    "staging elsewhere": lambda d: _set_env(d, "BAQUP_STAGING_DIR", "/scratch"),
    "root": lambda d: _pod(d)["securityContext"].__setitem__("runAsUser", 0),
    "root allowed": lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
    "writable root fs": lambda d: _container(d)["securityContext"].__setitem__(
        "readOnlyRootFilesystem", False
    ),
    "privilege escalation": lambda d: _container(d)["securityContext"].pop(
        "allowPrivilegeEscalation"
    ),
    "restart on failure": lambda d: _pod(d).__setitem__("restartPolicy", "OnFailure"),
    "password in args": lambda d: _container(d).__setitem__(
        "args", ["--redis-url", "redis://:hunter2@redis:6379/0"]
    ),
}


@given(st.lists(st.sampled_from(sorted(JOB_MISTAKES)), min_size=1, max_size=4, unique=True))
def test_job_mistakes_together_are_caught(mistakes: list[str]) -> None:
    doc = copy.deepcopy(GOOD_JOB)
    for mistake in mistakes:
        JOB_MISTAKES[mistake](doc)
    assert job_problems(doc, FS_SECRETS), mistakes


@pytest.mark.parametrize("mistake", sorted(JOB_MISTAKES))
def test_each_job_mistake_alone_is_caught(mistake: str) -> None:
    doc = copy.deepcopy(GOOD_JOB)
    JOB_MISTAKES[mistake](doc)
    assert job_problems(doc, FS_SECRETS)


@pytest.mark.parametrize("doc", [None, [], {"kind": "Deployment"}, {"kind": "Job"}])
def test_not_a_job(doc: Any) -> None:
    assert job_problems(doc, FS_SECRETS)


@pytest.mark.parametrize("agent_dir", AGENTS, ids=lambda p: p.name)
def test_the_images_hold_what_the_agent_reads_and_both_distributions(agent_dir: Path) -> None:
    """Every file the agent reads beside itself (its schemas) is copied into the image, and
    the wheel stage builds baqup-schema, which baqup-agent pins, from this repository."""
    text = (agent_dir / "Dockerfile").read_text()
    for schema in sorted(agent_dir.glob("*.json")):
        assert f"examples/{agent_dir.name}/{schema.name}" in text, schema.name
    assert "COPY packages/baqup-schema" in text
    assert re.search(r"pip wheel .*\./packages/baqup-schema", text)
