"""``Secret`` and the redactor: no leak through any formatting or serialisation path."""

from __future__ import annotations

import copy
import json
import pickle
import re
import traceback
from urllib.parse import quote, quote_plus

import orjson
import pytest
from pydantic import BaseModel

from baqup_agent._redaction import MIN_SECRET_LENGTH, REDACTED, REDACTOR, Redactor
from baqup_agent._secret import Secret

VALUE = "s3cr3t-canary-Ω"


def test_preview_behaviour() -> None:
    s = Secret(VALUE)
    assert str(s) == "[REDACTED]" and repr(s) == "Secret([REDACTED])"
    assert s.reveal() == VALUE and len(s) == len(VALUE) and s
    assert not Secret("")
    assert Secret(s).reveal() == VALUE
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_formatting_paths() -> None:
    s = Secret(VALUE)
    texts = [
        f"{s}",
        f"{s!r}",
        f"{s!s}",
        f"{s:>30}",
        format(s),
        "%s %r" % (s, s),  # noqa: UP031
        "{} {!r}".format(s, s),  # noqa: UP032
        repr([s, {"k": s}, (s,)]),
        str({s: 1}),
    ]
    assert all(VALUE not in t for t in texts)
    assert f"{s:>12}" == "  [REDACTED]"


def test_pickle_is_refused_copy_keeps_the_object() -> None:
    s = Secret(VALUE)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(s, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"password": s})
    assert copy.copy(s) is s and copy.deepcopy({"k": s})["k"] is s


def test_json_serialisation() -> None:
    s = Secret(VALUE)
    with pytest.raises(TypeError):
        json.dumps({"k": s})
    assert json.dumps({"k": s}, default=str) == '{"k": "[REDACTED]"}'
    assert orjson.dumps({"k": s}, default=str) == b'{"k":"[REDACTED]"}'
    with pytest.raises(TypeError):
        orjson.dumps(s)


def test_pydantic_field() -> None:
    class Model(BaseModel):
        password: Secret
        optional: Secret | None = None

    m = Model(password=VALUE)  # type: ignore[arg-type]
    assert isinstance(m.password, Secret) and m.password == VALUE
    assert m.model_dump_json() == '{"password":"[REDACTED]","optional":null}'
    assert m.model_dump()["password"] is m.password
    assert m.model_dump(mode="json")["password"] == REDACTED
    for text in (repr(m), str(m), str(m.model_dump())):
        assert VALUE not in text
    assert Model.model_json_schema()["properties"]["password"]["writeOnly"] is True
    with pytest.raises(ValueError, match="must be a string") as info:
        Model(password=42)  # type: ignore[arg-type]
    assert "must be a string" in str(info.value)


def test_traceback_with_locals_never_prints_it() -> None:
    def fail(password: Secret) -> None:
        raise RuntimeError("connection refused")

    try:
        fail(Secret(VALUE))
    except RuntimeError as exc:
        tb = traceback.TracebackException.from_exception(exc, capture_locals=True)
        text = "".join(tb.format())
    assert "password = Secret([REDACTED])" in text and VALUE not in text


def test_equality_is_constant_time_and_total() -> None:
    s = Secret(VALUE)
    assert s == VALUE and s == Secret(VALUE) and s == VALUE
    assert s != "other" and s != VALUE + "x" and s != ""
    assert (s == 5) is False and s != None  # noqa: E711
    assert hash(s) == hash(Secret(VALUE)) and len({s, Secret(VALUE)}) == 1


def test_registration_with_the_redactor() -> None:
    Secret(VALUE)
    assert VALUE in REDACTOR
    assert REDACTOR.redact(f"a {VALUE} b") == f"a {REDACTED} b"


def test_redactor_forms() -> None:
    r = Redactor()
    value = 'p@ss "w/rd"\\é+ x'
    r.register(value)

    forms = [
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        quote(value, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")),
        quote_plus(value, safe=""),
        quote(value),
    ]
    for form in forms:
        assert REDACTED in r.redact(f"<{form}>"), form
        assert r.matches(f"<{form}>") and r.matches(f"<{form}>".encode())
    assert not r.matches("nothing here") and not r.matches(b"nothing")


def test_url_password_and_stripped_value_are_registered() -> None:
    r = Redactor()
    r.register("redis://user:pa%2Fss-word@redis:6379/0")
    assert r.redact("auth failed for pa/ss-word") == f"auth failed for {REDACTED}"
    r.register("  padded-secret\n")
    assert r.redact("x padded-secret y") == f"x {REDACTED} y"


def test_short_and_empty_secrets_never_blank_the_output() -> None:
    r = Redactor()
    for value in ("", "a", "ab"[: MIN_SECRET_LENGTH - 1]):
        r.register(value)
    assert not r and r.redact("a normal line about abc") == "a normal line about abc"


def test_long_secret_is_redacted_without_a_huge_regex() -> None:
    r = Redactor()
    pem = "-----BEGIN KEY-----\n" + "A" * 3000 + "\n-----END KEY-----"
    r.register(pem)
    line = json.dumps({"msg": pem})
    assert pem not in r.redact(pem) and r.matches(line) and r.matches(line.encode())
    assert REDACTED in r.redact(line)


def test_surrogates_do_not_break_registration() -> None:
    r = Redactor()
    r.register("bad\udcffsecret")
    assert r.redact("x bad\udcffsecret y") == f"x {REDACTED} y"


def test_redact_tree() -> None:
    r = Redactor()
    r.register("12345")
    r.register("key-secret")
    tree = {"key-secret": ["12345", 12345, 1.5, None, True, {"n": "a 12345 b"}]}
    assert r.redact_tree(tree) == {
        REDACTED: [REDACTED, REDACTED, 1.5, None, True, {"n": f"a {REDACTED} b"}]
    }
