"""Canary secrets and the search for them in everything an agent produced.

The suite keeps its own list of spellings instead of reusing the SDK's redactor: the
judge must not share code with what it judges, or a form the redactor forgets would
be forgotten by the check too.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

_CHUNK = 1 << 20


def make_canary(label: str) -> str:
    """A unique fake secret whose raw, JSON, URL and base64 spellings all differ.

    ``+``, ``/`` and ``@`` change under URL-encoding; the label keeps evidence readable.
    """
    return f"Cn4ry-{label}-{secrets.token_hex(6)}+p/w@x"


def _lower_percent(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def spellings(value: str) -> dict[str, str]:
    """Name of the encoding -> how ``value`` looks in it (distinct spellings only)."""
    raw = value.encode("utf-8")
    forms = {
        "raw": value,
        "json-escaped": json.dumps(value)[1:-1],
        "json-escaped-unicode": json.dumps(value, ensure_ascii=False)[1:-1],
        "json-escaped-slash": json.dumps(value)[1:-1].replace("/", "\\/"),
        "python-repr": repr(value)[1:-1],
        "url-encoded": quote(value, safe=""),
        "url-encoded-lower": _lower_percent(quote(value, safe="")),
        "url-encoded-plus": quote_plus(value, safe=""),
        "url-encoded-plus-lower": _lower_percent(quote_plus(value, safe="")),
        "url-path": quote(value),
        "base64": base64.b64encode(raw).decode("ascii"),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode("ascii"),
    }
    forms["base64-unpadded"] = forms["base64"].rstrip("=")
    out: dict[str, str] = {}
    for name, form in forms.items():
        if form not in out.values():
            out[name] = form
    return out


@dataclass(frozen=True)
class Leak:
    """Where a canary was found and in which spelling."""

    variable: str
    form: str
    place: str
    context: str


class CanaryScanner:
    """Finds any spelling of any canary in text, bytes and files."""

    def __init__(self, canaries: dict[str, str]) -> None:
        # variable name -> canary; every spelling is searched as bytes
        self._needles: list[tuple[str, str, bytes]] = [
            (var, form, spelled.encode("utf-8"))
            for var, value in canaries.items()
            for form, spelled in spellings(value).items()
        ]
        self._overlap = max((len(n) for _, _, n in self._needles), default=1)

    def scan_bytes(self, data: bytes, place: str) -> list[Leak]:
        """Leaks in one buffer."""
        leaks = []
        for var, form, needle in self._needles:
            at = data.find(needle)
            if at >= 0:
                context = data[max(0, at - 60) : at + len(needle) + 60]
                # the evidence shows where, never the value (it may be a real secret)
                for other_var, _, other in self._needles:
                    context = context.replace(other, f"[{other_var}]".encode())
                leaks.append(Leak(var, form, place, context.decode("utf-8", "replace")))
        return leaks

    def scan_text(self, text: str, place: str) -> list[Leak]:
        """Leaks in a string."""
        return self.scan_bytes(text.encode("utf-8", "surrogateescape"), place)

    def scan_stream(self, read: Callable[[int], bytes], place: str) -> list[Leak]:
        """Leaks in a byte stream (its ``read``), in chunks overlapping by the longest spelling."""
        leaks: dict[tuple[str, str], Leak] = {}
        tail = b""
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                break
            window = tail + chunk
            for leak in self.scan_bytes(window, place):
                leaks.setdefault((leak.variable, leak.form), leak)
            tail = window[-self._overlap :]
        return list(leaks.values())

    def scan_tree(self, root: Path, *, decompress: dict[Path, str] | None = None) -> list[Leak]:
        """Leaks in the names and contents of every file under ``root``.

        ``decompress`` maps artifact paths to their compression (from a manifest), so
        that a secret inside a compressed archive is found as well.
        """
        leaks: list[Leak] = []
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            leaks += self.scan_text(rel, f"file name {rel}")
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as f:
                leaks += self.scan_stream(f.read, f"file {rel}")
            kind = (decompress or {}).get(path)
            if kind in ("zstd", "gzip"):
                try:
                    with _decompressed(path, kind) as read:
                        leaks += self.scan_stream(read, f"file {rel} (decompressed {kind})")
                except Exception:  # a corrupt artifact is the manifest check's business
                    continue
        return leaks


def _walk(root: Path) -> Iterator[Path]:
    if not root.exists():
        return
    yield from sorted(root.rglob("*"))


@contextlib.contextmanager
def _decompressed(path: Path, kind: str) -> Iterator[Callable[[int], bytes]]:
    """The ``read`` of a decompressing stream over an artifact."""
    with path.open("rb") as raw:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=raw) as gz:
                yield gz.read
        else:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as zr:
                yield zr.read
