"""``load_config``: the Config object, typed access, NAME_FILE secrets, schema problems."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from baqup_agent._errors import ConfigError, ConfigProblem, SchemaError
from baqup_agent._redaction import REDACTOR
from baqup_agent._secret import Secret
from baqup_agent.config import Config, load_config
from baqup_agent.contract import BaseConfig, LogLevelName, Role
from baqup_agent.schema import read_secret_file

BASE = {"BAQUP_JOB_ID": "job-7", "BAQUP_AGENT_ID": "agent-7", "BAQUP_ROLE": "backup"}


def secret_file(tmp_path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def only_problem(env: dict[str, str]) -> ConfigProblem:
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    (problem,) = info.value.problems
    return problem


def test_base_contract_alone_and_typed_access() -> None:
    env = {**BASE, "BAQUP_LOG_LEVEL": "DEBUG", "BAQUP_REDIS_URL": "redis://:pw-canary@r:6379/0"}
    config = load_config(environ=env)
    assert isinstance(config, Config) and isinstance(config, dict)
    assert config["BAQUP_JOB_ID"] == "job-7" == config.job_id
    assert config.agent_id == "agent-7" and config.role is Role.BACKUP
    base = config.base
    assert isinstance(base, BaseConfig) and base is config.base  # built once
    assert base.BAQUP_LOG_LEVEL is LogLevelName.DEBUG and base.BAQUP_HEARTBEAT_INTERVAL == 10
    assert isinstance(base.BAQUP_REDIS_URL, Secret)
    assert base.BAQUP_REDIS_URL.reveal() == "redis://:pw-canary@r:6379/0"
    for text in (repr(base), str(base), base.model_dump_json(), repr(base.model_dump())):
        assert "canary" not in text


def test_secret_from_file_strips_one_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pw-canary-file\n\n")
    config = load_config(environ={**BASE, "BAQUP_REDIS_PASSWORD_FILE": str(path)})
    value = config["BAQUP_REDIS_PASSWORD"]
    assert isinstance(value, Secret) and value.reveal() == "pw-canary-file\n"
    assert "pw-canary-file\n" in REDACTOR and "pw-canary-file" in REDACTOR
    assert read_secret_file("X_FILE", str(secret_file(tmp_path, "crlf\r\n"))) == "crlf"
    assert read_secret_file("X_FILE", str(secret_file(tmp_path, "none"))) == "none"


def test_secret_file_through_a_symlink(tmp_path: Path) -> None:
    target = secret_file(tmp_path, "linked-canary")
    link = tmp_path / "link"
    link.symlink_to(target)
    config = load_config(environ={**BASE, "BAQUP_REDIS_PASSWORD_FILE": str(link)})
    assert config["BAQUP_REDIS_PASSWORD"] == "linked-canary"


def test_secret_and_file_both_set(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "from-file")
    env = {**BASE, "BAQUP_REDIS_PASSWORD": "pw-canary-env", "BAQUP_REDIS_PASSWORD_FILE": str(path)}
    problem = only_problem(env)
    assert problem.variable == "BAQUP_REDIS_PASSWORD_FILE"
    assert problem.message == "is set together with BAQUP_REDIS_PASSWORD; set only one of them"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "cannot read the file it names: No such file or directory"),
        ("directory", "does not name a regular file"),
        ("fifo", "does not name a regular file"),
        ("world-writable", "names a world-writable file"),
        ("binary", "names a file that is not UTF-8 text"),
        ("huge", "names a file larger than 1 MiB"),
        ("nul-path", "cannot read the file it names: invalid path"),
    ],
)
def test_bad_secret_files(tmp_path: Path, kind: str, message: str) -> None:
    def fifo() -> Path:
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"

    makers: dict[str, Callable[[], Path | str]] = {
        "missing": lambda: tmp_path / "nope",
        "directory": lambda: tmp_path,
        "fifo": fifo,
        "world-writable": lambda: secret_file(tmp_path, "ww-canary", 0o666),
        "binary": lambda: secret_file(tmp_path, b"\xff\xfe-canary"),
        "huge": lambda: secret_file(tmp_path, "c" * (1 << 20) + "x"),
        "nul-path": lambda: "/tmp/a\x00b",
    }
    path = makers[kind]()
    problem = only_problem({**BASE, "BAQUP_REDIS_PASSWORD_FILE": str(path)})
    assert problem.variable == "BAQUP_REDIS_PASSWORD_FILE"
    assert problem.message.startswith(message)
    assert str(tmp_path) not in problem.message and "canary" not in problem.message


def test_unreadable_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = secret_file(tmp_path, "unreadable-canary", 0o000)
    if os.geteuid() == 0:  # root reads any file: make open() fail as it would for a user
        real_open = os.open

        def deny(file: str, *args: int) -> int:
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied")
            return real_open(file, *args)

        monkeypatch.setattr(os, "open", deny)
    problem = only_problem({**BASE, "BAQUP_REDIS_PASSWORD_FILE": str(path)})
    assert problem.message == "cannot read the file it names: Permission denied"


def test_secret_pasted_into_the_file_variable_is_not_echoed() -> None:
    problem = only_problem({**BASE, "BAQUP_REDIS_PASSWORD_FILE": "pasted-canary-password"})
    assert "canary" not in problem.message


def test_file_problem_does_not_also_report_required(tmp_path: Path) -> None:
    schema = tmp_path / "a.json"
    schema.write_text(
        json.dumps({"required": ["APP_KEY"], "properties": {"APP_KEY": {"writeOnly": True}}})
    )
    with pytest.raises(ConfigError) as info:
        load_config(schema, environ={**BASE, "APP_KEY_FILE": str(tmp_path / "none")})
    assert [p.variable for p in info.value.problems] == ["APP_KEY_FILE"]


def test_missing_or_broken_agent_schema_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_config(tmp_path / "absent.json", environ=BASE)
    assert info.value.exit_code == 64 and info.value.problems[0].variable == "schema"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"properties": {"X": {"type": 5}}}))
    with pytest.raises(SchemaError, match="invalid schema"):
        load_config(broken, environ=BASE)
    dangling = tmp_path / "dangling.json"
    dangling.write_text(json.dumps({"properties": {"X": {"$ref": "#/$defs/Nope"}}}))
    with pytest.raises(SchemaError, match="cannot be resolved"):
        load_config(dangling, environ=BASE)


def test_schema_as_mapping() -> None:
    schema = {"properties": {"APP_N": {"type": "integer", "default": 4}}}
    assert load_config(schema, environ=BASE)["APP_N"] == 4


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BAQUP_"):
            monkeypatch.delenv(name)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    assert load_config().job_id == "job-7"
