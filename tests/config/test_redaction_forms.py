"""Property test (in-process, many examples): every form a random secret takes on its way
into a log line or an error summary is redacted, in both log formats."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baqup_agent import _errors as errors
from baqup_agent._logger import Logger
from baqup_agent._redaction import Redactor

_HOSTILE = st.sampled_from(
    list("'\"\\`$%&+/:;=?@#[] \t\n\r\x01\x1b\x7f\x85\u2028äΩ日€😀")
) | st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
SECRETS = st.builds(
    lambda a, b: a + "Zq7" + b,  # a core no output holds by chance
    st.text(_HOSTILE, max_size=8),
    st.text(_HOSTILE, max_size=8),
)

CARRIERS: dict[str, Callable[[str], Any]] = {
    "raw": lambda pw: pw,
    "repr": repr,
    "f-string": lambda pw: f"value={pw!r}",
    "ascii": ascii,
    "json": json.dumps,
    "json-ascii-off": lambda pw: json.dumps({"pw": pw}, ensure_ascii=False),
    "bytes": lambda pw: pw.encode(),
    "bytes-repr": lambda pw: repr(pw.encode()),
    "url": lambda pw: f"postgres://u:{quote(pw, safe='')}@h/db",
    "query": lambda pw: f"?token={quote_plus(pw)}",
    "key-error": lambda pw: str(KeyError(pw)),
    "os-error": lambda pw: str(OSError(13, "denied", pw)),
    "args": lambda pw: str(Exception("failed", pw)),
    "nested": lambda pw: {"list": [pw, repr(pw)], pw: 1},
    # repr() of a text holding both quote characters: single quotes, ' escaped as \'
    "repr-both-quotes": lambda pw: repr(f"'{pw}\""),
    "ascii-both-quotes": lambda pw: ascii(f"'{pw}\""),
    "bytes-repr-both-quotes": lambda pw: repr(f"'{pw}\"".encode()),
    "repr-twice": lambda pw: repr(repr(pw)),
}


def forms(value: str) -> set[str]:
    raw = value.encode()
    base = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(raw)[2:-1],
        quote(value, safe=""),
        quote_plus(value),
    }
    twice = {json.dumps(f)[1:-1] for f in base} | {
        json.dumps(f, ensure_ascii=False)[1:-1] for f in base
    }
    return {f for f in base | twice if "Zq7" in f}


@settings(max_examples=150, deadline=None)
@given(secret=SECRETS, carrier=st.sampled_from(sorted(CARRIERS)))
def test_every_form_is_redacted(secret: str, carrier: str) -> None:
    redactor = Redactor()  # not the process-wide one: other tests' secrets stay as they are
    redactor.register(secret)
    value = CARRIERS[carrier](secret)
    out: list[str] = []
    for fmt in ("json", "text"):
        stream = io.StringIO()
        log = Logger("j", "a", format=fmt, stream=stream, redactor=redactor)
        log.error(f"got {value}", field=value, exc=RuntimeError(value))
        out.append(stream.getvalue())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(errors, "redact", redactor.redact)
        out.append(errors.summarize(ValueError(value)))
    text = "\n".join(out)
    for form in forms(secret):
        assert form not in text, f"{carrier}: {form!r} leaked"
    assert "Zq7" not in text, f"{carrier}: part of the secret leaked"
    json.loads(out[0])  # the line stays valid JSON
