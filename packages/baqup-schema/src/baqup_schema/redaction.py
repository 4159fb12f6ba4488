"""The registry of known secret values and the redaction of text that may hold them.

Every ``Secret`` registers its value here, so a secret that reaches a log line or a
bus message as a plain string is still caught: in its raw form and in the forms it
takes on the way (JSON-escaped, ``repr()`` of the text and of its UTF-8 bytes,
URL-encoded, base64, and each of those JSON-escaped once more by the line). Values
shorter than ``MIN_SECRET_LENGTH`` are not searched for: replacing every "a" would
destroy the output without protecting anything (an empty secret turned a peer's logs
into asterisks).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple
from urllib.parse import quote, quote_plus, unquote, urlsplit

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 3
# Forms longer than this are searched with str.find instead of the regex: compiling a
# pattern costs time linear in its length in pure Python (a PEM key took seconds).
_REGEX_MAX_FORM = 256

_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _lower_percent(text: str) -> str:
    return _PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), text)


def _b64(value: str, *, urlsafe: bool, pad: bool) -> str:
    raw = _utf8(value)
    token = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode("ascii")
    return token if pad else token.rstrip("=")


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(?:x([0-9a-f]{2})|u(d[89a-f][0-9a-f]{2})|\\)")


# Hand-written rather than the codecs' ``surrogateescape`` + ``backslashreplace``: those
# give the same ``\xNN`` but leave a path's own backslashes as they are, so the result
# could not be undone. Measured: 1.4 us for a 42-character path without surrogates
# (one regex search, the common case), 25 us for one with them.
def escape_surrogates(text: str) -> str:
    """``text`` made encodable as UTF-8, reversibly (``unescape_surrogates``).

    A path that is not UTF-8 reaches Python as a str with lone surrogates
    (``os.fsdecode``), which JSON encoders refuse: each undecodable byte is written
    ``\\xNN`` (as ``ls -b`` and Python's bytes repr show it), any other lone surrogate
    ``\\udXXX``, and a backslash ``\\\\`` so the escape can be undone. Text without
    lone surrogates is returned unchanged (no escaping at all).
    """
    if not _SURROGATE.search(text):
        return text

    def one(char: str) -> str:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            return f"\\x{code - 0xDC00:02x}"
        if 0xD800 <= code <= 0xDFFF:
            return f"\\u{code:04x}"
        return "\\\\" if char == "\\" else char

    return "".join(one(c) for c in text)


def unescape_surrogates(text: str) -> str:
    """The text ``escape_surrogates`` was given, from an escaped one (``os.fsencode`` it
    for the path's bytes). Apply it only to text that held lone surrogates: see
    docs/logging.md."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return chr(0xDC00 + int(match.group(1), 16))
        if match.group(2):
            return chr(int(match.group(2), 16))
        return "\\"

    return _ESCAPED.sub(one, text)


def _utf8(value: str) -> bytes:
    # surrogateescape: a value read from a non-UTF-8 environment keeps its bytes
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


_BOTH_QUOTES = "'\""

# Every spelling of a value that output may contain. base64 covers the value encoded
# alone: the encoder's alignment decides the spelling, so a value embedded mid-stream
# is out of reach (a documented limit).
_ENCODINGS: tuple[Callable[[str], str], ...] = (
    lambda v: v,
    lambda v: json.dumps(v)[1:-1],  # JSON-escaped, non-ASCII as \uXXXX
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],  # JSON-escaped as orjson writes it
    lambda v: repr(v)[1:-1],  # repr: KeyError(pw), f"{pw!r}", OSError's filename, locals
    lambda v: ascii(v)[1:-1],  # repr with non-ASCII escaped (ascii(), %a)
    lambda v: repr(_utf8(v))[2:-1],  # repr of its UTF-8 bytes: b'p\xc3\xa4ss'
    # the same three inside a text holding both quote characters, which repr() quotes
    # with ' and escapes ' as \' (a repr in a list's repr, a message quoting a repr)
    lambda v: repr(v + _BOTH_QUOTES)[1:-4],
    lambda v: ascii(v + _BOTH_QUOTES)[1:-4],
    lambda v: repr(_utf8(v) + _BOTH_QUOTES.encode())[2:-4],
    escape_surrogates,  # as logs and bus messages carry text that is not UTF-8
    lambda v: quote(v, safe=""),
    lambda v: _lower_percent(quote(v, safe="")),
    lambda v: quote_plus(v, safe=""),
    lambda v: _lower_percent(quote_plus(v, safe="")),
    quote,  # URL path form: keeps "/"
    lambda v: _b64(v, urlsafe=False, pad=True),
    lambda v: _b64(v, urlsafe=False, pad=False),
    lambda v: _b64(v, urlsafe=True, pad=True),
    lambda v: _b64(v, urlsafe=True, pad=False),
)

# A JSON line escapes each of those once more (a repr in a message, a json.dumps in a
# field): every form is also searched for in both of the JSON spellings of it. Measured
# (timeit, Python 3.11, 5 hostile secrets registered, a 200-byte line that
# holds none): 41 forms instead of 29, ``matches`` 16.7 us instead of 11.9 us a line.
_LINE_ESCAPES: tuple[Callable[[str], str], ...] = (
    lambda f: json.dumps(f)[1:-1],
    lambda f: json.dumps(f, ensure_ascii=False)[1:-1],
)

# A repr of a text that holds a repr (a list of reprs, an error quoting a repr) escapes
# the form's backslashes and quotes once more, before any JSON line escape. Measured as
# above (5 hostile secrets): 73 forms instead of 53, ``matches`` 10-13 us instead of
# 5-7 us a line; ``make bench`` logging row with 2 plain secrets: 5.3 us, unchanged.
_REPR_AGAIN: tuple[Callable[[str], str], ...] = (
    lambda f: repr(f)[1:-1],
    lambda f: repr(f + _BOTH_QUOTES)[1:-4],
)


def _forms(value: str) -> set[str]:
    """The searchable spellings of ``value`` (each at least MIN_SECRET_LENGTH long)."""
    forms: set[str] = set()
    for encode in _ENCODINGS:
        try:
            form = encode(value)
        except UnicodeError:  # lone surrogates cannot be URL-encoded; other forms apply
            continue
        forms.add(form)
    forms |= {again(f) for f in forms for again in _REPR_AGAIN}
    forms |= {escape(f) for f in forms for escape in _LINE_ESCAPES}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _url_password(value: str) -> str | None:
    """The password of a URL-shaped secret (``redis://:pw@host``), which also leaks alone."""
    if "://" not in value or "@" not in value:
        return None
    try:
        password = urlsplit(value).password
    except ValueError:
        return None
    return unquote(password) if password else None


class _Search(NamedTuple):
    """What ``redact`` and ``matches`` search for: short forms by regex, long ones literally."""

    pattern: re.Pattern[str] | None
    bytes_pattern: re.Pattern[bytes] | None
    long: tuple[str, ...]
    long_bytes: tuple[bytes, ...]


_NOTHING = _Search(None, None, (), ())


class Redactor:
    """A set of secret values and the compiled patterns that find any of their forms.

    Thread-safe. ``redact`` and ``matches`` are the hot path (every log line goes
    through one of them): with nothing registered they cost one attribute check; the
    pattern is rebuilt lazily, once after any number of registrations.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._stale = False
        self._search: _Search = _NOTHING

    def register(self, value: str) -> None:
        """Remember ``value`` as a secret (ignored when shorter than MIN_SECRET_LENGTH).

        A URL's password is registered as well (it leaks on its own, in a driver's
        error message say, more often than the whole URL does), and so is the value
        without surrounding whitespace (a secret file's extra newline is rarely used).
        """
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        variants = (value, value.strip(), _url_password(value))
        with self._lock:
            for v in variants:
                if v is not None and len(v) >= MIN_SECRET_LENGTH and v not in self._values:
                    self._values.add(v)
                    self._forms |= _forms(v)
            self._stale = True

    def _compile(self) -> None:
        with self._lock:
            if not self._stale:
                return
            # longest first, so a form that contains another one is replaced whole
            ordered = sorted(self._forms, key=lambda f: (-len(f), f))
            long = tuple(f for f in ordered if len(f) > _REGEX_MAX_FORM)
            text = "|".join(re.escape(f) for f in ordered if len(f) <= _REGEX_MAX_FORM)
            # one attribute, replaced whole: a reader never mixes two generations
            self._search = _Search(
                re.compile(text) if text else None,
                re.compile(text.encode("utf-8", "surrogatepass")) if text else None,
                long,
                tuple(f.encode("utf-8", "surrogatepass") for f in long),
            )
            self._stale = False

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        """``text`` with every known secret form replaced by ``[REDACTED]``."""
        if self._stale:
            self._compile()
        search = self._search
        for form in search.long:
            text = text.replace(form, REDACTED)
        return text if search.pattern is None else search.pattern.sub(REDACTED, text)

    def matches(self, data: str | bytes) -> bool:
        """Whether ``data`` (text, or UTF-8 bytes) holds any known secret form."""
        if self._stale:
            self._compile()
        search = self._search
        if isinstance(data, bytes):
            if search.bytes_pattern is not None and search.bytes_pattern.search(data):
                return True
            return bool(search.long_bytes) and any(f in data for f in search.long_bytes)
        if search.pattern is not None and search.pattern.search(data):
            return True
        return bool(search.long) and any(f in data for f in search.long)

    def redact_tree(self, obj: object) -> object:
        """A copy of a JSON-like structure with every string, key and scalar redacted.

        A scalar that is not a string (an integer equal to a numeric secret) becomes
        ``[REDACTED]`` when its text holds a secret; other objects become their
        redacted ``str()`` (a Secret's is ``[REDACTED]`` already).
        """
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Enum):
            return self.redact_tree(obj.value)
        if isinstance(obj, dict):
            return {self.redact(str(k)): self.redact_tree(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [self.redact_tree(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float)):
            return REDACTED if self.matches(json.dumps(obj)) else obj  # as JSON writes it
        return self.redact(str(obj))

    def clear(self) -> None:
        """Forget every value (for tests)."""
        with self._lock:
            self._values.clear()
            self._forms.clear()
            self._search = _NOTHING
            self._stale = False


REDACTOR = Redactor()
"""The process-wide registry: Secrets register here and the logger, bus and error
summaries redact with it."""


def redact(text: str) -> str:
    """Redact ``text`` with the process-wide registry."""
    return REDACTOR.redact(text)
