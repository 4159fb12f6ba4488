"""§7 Security: canary secrets never appear in anything the agent produced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from baqup_agent.conformance.canary import CanaryScanner, Leak
from baqup_agent.conformance.checks._base import CheckInput, must
from baqup_agent.conformance.observed import Run
from baqup_agent.conformance.report import Finding
from baqup_agent.contract.wire import MANIFEST_FILE


def secrets(inp: CheckInput) -> Iterator[Finding]:
    """No canary, in any spelling, in logs, messages, Redis, output names or contents."""
    scanner = CanaryScanner({**inp.ctx.canaries, **inp.ctx.real_secrets})
    seen: set[tuple[str, str, str]] = set()
    for run in inp.runs:
        leaks = scanner.scan_text("\n".join(run.stderr), "stderr")
        leaks += scanner.scan_text("\n".join(run.stdout), "stdout")
        leaks += scanner.scan_text("\n".join(m.raw for m in run.messages), "bus messages")
        leaks += scanner.scan_tree(run.staging, decompress=_compressed_artifacts(run.output))
        leaks += scanner.scan_tree(run.target)
        for leak in leaks:
            yield from _report(leak, run, seen)
    for key, value in inp.redis_dump:
        for leak in scanner.scan_text(key, f"Redis key name {key}"):
            yield from _report(leak, None, seen)
        for leak in scanner.scan_text(value, f"Redis key {key}"):
            yield from _report(leak, None, seen)


def _report(leak: Leak, run: Run | None, seen: set[tuple[str, str, str]]) -> Iterator[Finding]:
    key = (leak.variable, leak.form, leak.place)
    if key in seen:
        return
    seen.add(key)
    yield must(
        f"the {leak.form} form of {leak.variable}'s value appears in {leak.place}",
        run,
        leak.context,
    )


def _compressed_artifacts(output: Path) -> dict[Path, str]:
    """Artifact path -> compression, from the published manifest (when there is one)."""
    try:
        data = json.loads((output / MANIFEST_FILE).read_text(encoding="utf-8"))
        return {
            output / a["filename"]: a["compression"]
            for a in data.get("artifacts", [])
            if isinstance(a, dict) and a.get("compression") in ("zstd", "gzip")
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
