"""Property test: random secrets through every carrier of a real agent process leak nowhere.

Each example runs ``leaky_agent.py`` as a subprocess with two random secrets (one a
secret variable, one a ``writeOnly`` property inside an object variable) holding
quotes, backslashes, control characters, non-ASCII and URL-special characters. The
agent pushes them through log messages and fields, exceptions (message, args, repr),
f-strings, ``json.dumps``, bytes, URLs, stdlib logging, warnings, a dying thread, an
unraisable exception, progress messages, a child's environment and the exception that
fails the job (or the job publishes). Standard output and error, every spooled bus
message and every file left in staging or published are scanned for every form of
each secret.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.agent.helpers import events, job_env, process_env, the_result

AGENT = Path(__file__).resolve().parent / "leaky_agent.py"

# characters that break naive redaction: quotes, backslashes, control characters
# (no NUL: an environment cannot hold it), non-ASCII (also U+0085 and U+2028, which
# repr or JSON escape), URL-special characters
_HOSTILE = st.sampled_from(
    list("'\"\\`$%&+/:;=?@#[] \t\n\r\x01\x1b\x7f\x85\u2028äΩ日€😀")
) | st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
_PART = st.text(_HOSTILE, min_size=1, max_size=6)


@st.composite
def secrets(draw: st.DrawFn) -> str:
    """Hostile text around a unique core, so that a hit can only be the secret."""
    core = uuid.uuid4().hex[:8]
    return draw(_PART) + core + draw(_PART)


def forms(value: str) -> set[str]:
    """Every spelling of ``value`` the issue lists, and each once more JSON-escaped."""
    raw = value.encode("utf-8")
    base = {
        value,
        repr(value)[1:-1],
        ascii(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(raw)[2:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),
    }
    escaped = {json.dumps(f)[1:-1] for f in base} | {
        json.dumps(f, ensure_ascii=False)[1:-1] for f in base
    }
    return base | escaped


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    secret=secrets(),
    nested=secrets(),
    final=st.sampled_from(["keyerror", "oserror", "repr", "bytes", "json", "none"]),
    log_format=st.sampled_from(["json", "text"]),
    level=st.sampled_from(["DEBUG", "INFO"]),
)
@example(  # a published output is scanned too
    secret='a\\"\n\x85ä%2F@:pw1',
    nested="\u2028'`$ n2",
    final="none",
    log_format="text",
    level="DEBUG",
)
def test_no_form_of_a_secret_leaves_a_real_agent(
    tmp_path: Path, secret: str, nested: str, final: str, log_format: str, level: str
) -> None:
    staging = tmp_path / uuid.uuid4().hex
    env = job_env(
        staging,
        LEAK_SECRET=secret,
        LEAK_NESTED=json.dumps({"user": "bob", "password": nested}),
        LEAK_FINAL=final,
        BAQUP_LOG_FORMAT=log_format,
        BAQUP_LOG_LEVEL=level,
    )
    proc = subprocess.run(
        [*_python(), str(AGENT)],
        env=process_env(env),
        capture_output=True,
        timeout=60,
    )
    result = the_result(events(staging))
    if final == "none":
        assert proc.returncode == 0 and result["status"] == "success"
        assert (staging / "job-1" / "manifest.json").is_file()  # scanned below
    else:
        assert proc.returncode == {"bytes": 65, "oserror": 74}.get(final, 70)
        assert result["status"] == "failed" and "[REDACTED]" in result["error"]
    outputs = {
        "stdout": proc.stdout.decode("utf-8", "surrogateescape"),
        "stderr": proc.stderr.decode("utf-8", "surrogateescape"),
    }
    for path in staging.rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("utf-8", "surrogateescape")
    assert len(outputs) > 2  # the spool was scanned too
    for name, text in outputs.items():
        for value in (secret, nested):
            for form in forms(value):
                assert form not in text, f"{form!r} of a secret in {name}"
    stderr = outputs["stderr"].splitlines()
    assert any("somelib.driver" in line for line in stderr)  # the carriers really ran
    assert any("py.warnings" in line for line in stderr)
    assert any("uncaught exception in a thread" in line for line in stderr)
    if log_format == "json":  # nothing reached stderr unformatted
        for line in stderr:
            orjson.loads(line)
    failed = [line for line in stderr if "job failed" in line]
    assert len(failed) == (final != "none") and all("reason" in line for line in failed)


def _python() -> list[str]:
    import sys

    return [sys.executable]
