"""The leak test: known secrets pushed through every output path; zero occurrences anywhere.

Secrets enter as config values (environment and NAME_FILE), as ``Secret`` objects and
as plain strings; every byte the logger (JSON and text, stdlib bridge included),
config errors, error summaries and serialisers produce is collected and scanned for
each secret's raw, JSON-escaped and URL-encoded spellings.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
import pytest
from pydantic import BaseModel

from baqup_agent._errors import ConfigError, classify
from baqup_agent._logger import Logger
from baqup_agent._secret import Secret
from baqup_agent.config import load_config

URL_PASSWORD = "r3d!s-pw/+x"
SECRETS = {
    "BAQUP_REDIS_URL": f"redis://user:{quote(URL_PASSWORD, safe='')}@redis:6379/0",
    "FS_TOKEN": 'tok"en\\with\nnewline-Ω',
    "FILE": "日本語の-file-secret &=?",
}
PLAIN = "plain-string-secret/42"  # registered through a Secret, used as a str
VALUES = [*SECRETS.values(), URL_PASSWORD, PLAIN]


def spellings(value: str) -> set[str]:
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),
    }


@pytest.fixture
def output() -> Iterator[list[str]]:
    """Everything produced; the test body appends to it, the scan runs at teardown."""
    produced: list[str] = []
    yield produced
    blob = "\n".join(produced)
    assert len(produced) > 20
    for value in VALUES:
        for form in spellings(value):
            assert form not in blob, f"leaked {form!r}"


def test_no_secret_escapes(
    output: list[str], tmp_path: Path, agent_schema: Path, env: dict[str, str]
) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRETS["FILE"] + "\n")
    secret_file.chmod(0o600)
    schema = json.loads(agent_schema.read_text())
    schema["properties"]["FS_KEY"] = {"type": "string", "writeOnly": True}
    agent_schema.write_text(json.dumps(schema))
    env |= {
        "BAQUP_REDIS_URL": SECRETS["BAQUP_REDIS_URL"],
        "FS_TOKEN": SECRETS["FS_TOKEN"],
        "FS_KEY_FILE": str(secret_file),
        "FS_HOST": "db",
    }
    config = load_config(agent_schema, environ=env)
    plain = Secret(PLAIN).reveal()
    revealed = [config["BAQUP_REDIS_URL"].reveal(), config["FS_TOKEN"].reveal(), plain]
    revealed.append(config["FS_KEY"].reveal())
    assert revealed[-1] == SECRETS["FILE"]

    # the config itself: repr, str, typed model, JSON
    output += [repr(config), str(config), repr(config.base), config.base.model_dump_json()]
    output.append(json.dumps(config, default=str))
    output.append(orjson.dumps(config, default=str).decode())

    # invalid configs: a secret with a bad value, both NAME and NAME_FILE set
    bad_env = {**env, "FS_TOKEN": "short!", "BAQUP_REDIS_URL": f"http://x:{URL_PASSWORD}@h"}
    bad_env["FS_KEY"] = plain
    with pytest.raises(ConfigError) as info:
        load_config(agent_schema, environ=bad_env)
    output += [str(info.value), repr(info.value.problems), classify(info.value).message]

    # the logger in both formats, through every path
    for fmt in ("json", "text"):
        stream = io.StringIO()
        log = Logger("job-1", "fs-agent-1", level="TRACE", format=fmt, stream=stream)
        bound = log.bind(token=config["FS_TOKEN"], url=revealed[0])
        for value in revealed:
            secret = Secret(value)
            log.info(f"as Secret {secret} and as text {value}")
            log.info("fields", s=secret, raw=value, nested={"k": [value, {value: 1}]})
            log.info(f"json-escaped {json.dumps(value)} url-encoded {quote(value, safe='')}")
            log.debug("plus-encoded", q=quote_plus(value, safe=""), path=quote(value))
            bound.warn("bound fields and a per-call one", extra=value)
            try:
                raise RuntimeError(f"connect failed: {value}")
            except RuntimeError as exc:
                log.error("with exception", exc=exc)
                output.append(classify(exc).message)
        # the stdlib bridge
        root = logging.getLogger()
        saved = list(root.handlers), root.level
        handler = log.install_logging_bridge(capture_warnings=False)
        try:
            lib = logging.getLogger("driver")
            for value in revealed:
                lib.warning("auth failed for %s", value, extra={"dsn": value})
                try:
                    raise ConnectionError(value)
                except ConnectionError:
                    lib.exception("retrying %r", value)
        finally:
            root.removeHandler(handler)
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
        output.append(stream.getvalue())

    # serialisers and copies of Secret objects
    secrets = [Secret(v) for v in revealed]
    for s in secrets:
        output += [str(s), repr(s), f"{s}", f"{s!r}", format(s, ">40"), "%s" % s]  # noqa: UP031
        output += [repr(copy.copy(s)), repr(copy.deepcopy([s]))]
        with pytest.raises(TypeError) as refused:
            pickle.dumps(s)
        output.append(str(refused.value))
    output += [repr(secrets), str({"k": secrets}), json.dumps(secrets, default=str)]

    class Model(BaseModel):
        password: Secret
        others: list[Secret]

    model = Model(password=secrets[0], others=secrets)
    output += [repr(model), model.model_dump_json(), json.dumps(model.model_dump(), default=str)]

    output.append(traceback_with_locals(secrets[1]))


def traceback_with_locals(secret: Secret) -> str:
    """A traceback showing locals, of frames whose only secret is a Secret object."""

    def connect(password: Secret) -> None:
        raise ConnectionError("refused")

    try:
        connect(secret)
    except ConnectionError as exc:
        text = "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
    assert "password = Secret([REDACTED])" in text
    return text
