"""§4 Output: atomic publication, the manifest and its checksums, restore round trip."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from baqup_agent.conformance.checks._base import (
    CheckInput,
    NotApplicable,
    exit_text,
    must,
    note,
)
from baqup_agent.conformance.fixture import compare_trees
from baqup_agent.conformance.hostile import outside_changes
from baqup_agent.conformance.observed import Run
from baqup_agent.conformance.report import Finding, Level
from baqup_agent.conformance.runner import expand
from baqup_agent.contract import ExitCode
from baqup_agent.contract.wire import LOCKS_SUBDIR, STAGING_SUBDIR
from baqup_agent.contract.wire import MANIFEST_FILE as MANIFEST
from baqup_agent.schema import contract_errors

_LOCKS = f"{STAGING_SUBDIR}/{LOCKS_SUBDIR}"
_STAGING_DIRS = frozenset({STAGING_SUBDIR, _LOCKS})


def _job_places(job_id: str) -> tuple[str, str, str]:
    """The output, work directory and lock file of ``job_id``, relative to the staging root."""
    return (job_id, f"{STAGING_SUBDIR}/{job_id}", f"{_LOCKS}/{job_id}")


def atomic_publication(inp: CheckInput) -> Iterator[Finding]:
    """While the agent ran, its output was never visible half-written."""
    for run in inp.runs:
        problem = _first_partial_view(run)
        if problem:
            yield must(problem[0], run, problem[1])
        if run.published_after and run.staging_left:
            yield must(f"{STAGING_SUBDIR}/{run.job_id} left behind after publication", run)


def stray_entries(run: Run) -> list[str]:
    """What the run left in its staging root besides what the contract lets it write:
    ``.staging/JOB_ID/``, the output ``JOB_ID/``, the lock ``.staging/.locks/JOB_ID``
    and the spool (``.spool/`` by default)."""
    allowed_dirs = _STAGING_DIRS
    allowed_trees = set(_job_places(run.job_id))
    spool_root = run.spool.parent
    out = []
    for dirpath, dirnames, filenames in os.walk(run.staging):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            rel = path.relative_to(run.staging).as_posix()
            if rel in allowed_trees or path == spool_root or spool_root in path.parents:
                if name in dirnames:
                    dirnames.remove(name)  # not walked: the contract's own places
                continue
            if rel not in allowed_dirs or not path.is_dir():
                out.append(rel)
    return sorted(out)


_WRITES = ("create", "modify", "close-write", "moved-to")


def staging_writes(inp: CheckInput) -> Iterator[Finding]:
    """Inside the staging root, seen as it happened (inotify): the artifacts are complete
    before the manifest is written, the manifest is last, and nothing is written outside
    ``.staging/JOB_ID/``, the output, the lock file and the spool. Without inotify (not
    Linux), the final tree only."""
    for run in inp.runs:
        stray = stray_entries(run)
        if stray:
            yield must(
                "left in the staging root outside .staging/JOB_ID, the output, the lock "
                "file and the spool",
                run,
                ", ".join(stray[:5]),
            )
        if run.staging_events is None:
            yield note("inotify is not available here: only the final tree was judged", run)
            continue
        if run.staging_events_overflowed:
            yield note("the inotify queue overflowed: some writes were not seen", run)
        work = f"{STAGING_SUBDIR}/{run.job_id}/"
        manifest = work + MANIFEST
        manifest_seen = False
        outside: list[str] = []
        after: list[str] = []
        for event in run.staging_events:
            # "listed": there when its directory began to be watched, so written before
            if event.kind not in _WRITES and event.kind != "listed":
                continue
            if not _allowed(run, event.path):
                outside.append(f"{event.kind} {event.path}")
            elif event.path == manifest:
                manifest_seen = True
            elif (
                manifest_seen
                and event.kind != "listed"
                and event.path.startswith(work)
                and not event.is_dir
            ):
                after.append(f"{event.kind} {event.path.removeprefix(work)}")
        if outside and not stray:
            yield must(
                "written in the staging root outside .staging/JOB_ID, the output, the lock "
                "file and the spool (and removed before the end)",
                run,
                ", ".join(outside[:5]),
            )
        if after:
            yield must(
                f"written in .staging/{run.job_id}/ after {MANIFEST}: the manifest must come "
                "last, once every artifact is complete",
                run,
                ", ".join(after[:5]),
            )


def _allowed(run: Run, rel: str) -> bool:
    spool = run.spool.parent
    with contextlib.suppress(ValueError):
        spool_rel = spool.relative_to(run.staging).as_posix()
        if rel == spool_rel or rel.startswith(spool_rel + "/"):
            return True
    return rel in _STAGING_DIRS or any(
        rel == p or rel.startswith(p + "/") for p in _job_places(run.job_id)
    )


def _first_partial_view(run: Run) -> tuple[str, str] | None:
    complete: dict[str, tuple[int, int]] | None = None
    for snap in run.snapshots:
        files = sorted(snap.files)
        if complete is not None:
            if snap.files != complete:
                return "the published output changed after it appeared", f"files {files}"
            continue
        if snap.manifest is None:
            return f"{run.job_id}/ was visible without {MANIFEST}", f"files {files}"
        if snap.manifest == "" or not isinstance(snap.manifest, dict):
            return f"{run.job_id}/{MANIFEST} was visible half-written", f"files {files}"
        listed = {
            a.get("filename") for a in snap.manifest.get("artifacts") or [] if isinstance(a, dict)
        }
        present = set(snap.files) - {MANIFEST}
        if present != listed:
            return (
                f"{run.job_id}/ was visible with files that differ from its manifest",
                f"present {sorted(present)}, listed {sorted(str(x) for x in listed)}",
            )
        complete = snap.files
    return None


def manifest(inp: CheckInput) -> Iterator[Finding]:
    """A successful backup publishes a valid manifest whose sizes and checksums match."""
    for run in inp.runs:
        yield from manifest_findings(run)


def manifest_findings(run: Run) -> Iterator[Finding]:
    """The manifest check for one backup run (also the round trip's precondition)."""
    out = run.output
    if not (out / MANIFEST).is_file():
        yield must(f"no {MANIFEST} published at {out} ({exit_text(run.exit_code)})", run)
        return
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        yield must(f"{MANIFEST} is not JSON: {exc}", run)
        return
    errors = contract_errors("manifest.json", data)
    if errors:
        yield must(f"{MANIFEST} is not valid: " + "; ".join(errors), run)
        return
    if data["job_id"] != run.job_id:
        yield must(f"manifest job_id {data['job_id']!r}, expected {run.job_id!r}", run)
    if data["role"] != "backup":
        yield must(f"manifest role {data['role']!r}, expected 'backup'", run)
    names = [a["filename"] for a in data["artifacts"]]
    if len(set(names)) != len(names):
        yield must("the manifest lists an artifact twice", run, str(names))
    for artifact in data["artifacts"]:
        yield from _artifact_findings(run, out, artifact)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir()}
    unlisted = files - set(names) - {MANIFEST}
    if unlisted:
        yield must(
            "files in the output that the manifest does not list", run, str(sorted(unlisted))
        )


def _artifact_findings(run: Run, out: Path, artifact: dict[str, Any]) -> Iterator[Finding]:
    name = artifact["filename"]
    path = out / name
    if not path.is_file() or path.is_symlink():
        yield must(f"artifact {name} is not a regular file in the output", run)
        return
    size = path.stat().st_size
    if size != artifact["size_bytes"]:
        yield must(
            f"artifact {name}: {size} bytes, the manifest says {artifact['size_bytes']}", run
        )
    algorithm = artifact["checksum_algorithm"]
    digest = file_digest(path, algorithm)
    if digest is None:
        yield note(f"artifact {name}: {algorithm} is not available here, checksum not verified")
    elif digest != artifact["checksum_value"]:
        expected = artifact["checksum_value"]
        yield must(f"artifact {name}: {algorithm} {digest}, the manifest says {expected}", run)


def file_digest(path: Path, algorithm: str) -> str | None:
    """Hex digest of a file, None when the algorithm's module is not installed."""
    if algorithm == "blake3":
        try:
            import blake3
        except ImportError:
            return None
        hasher: Any = blake3.blake3()
    elif algorithm == "blake2b":
        hasher = hashlib.blake2b()
    else:
        hasher = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return str(hasher.hexdigest())


def output_permissions(inp: CheckInput) -> Iterator[Finding]:
    """Published files and directories are not readable by other users."""
    for run in inp.runs:
        if not run.output.exists():
            continue
        for path in [run.output, *run.output.rglob("*")]:
            mode = path.lstat().st_mode & 0o777
            if mode & 0o004:
                rel = path.relative_to(run.staging).as_posix()
                yield must(f"{rel} is world-readable (mode {mode:o})", run)
                break


def round_trip(inp: CheckInput) -> Iterator[Finding]:
    """Restoring the backup's output reproduces the fixture byte for byte."""
    run = _restore_run(inp, "restore")
    command = inp.ctx.compare_command
    if command:
        argv = [expand(a, run, inp.ctx) for a in command]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=inp.ctx.timeout, cwd=inp.ctx.cwd
        )
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            yield must(f"the compare command exited {proc.returncode}", run, output[-2000:])
        return
    for diff in compare_trees(inp.ctx.fixture, run.target):
        yield must(f"restored tree differs from the fixture: {diff}", run, exit_text(run.exit_code))


def restore_verifies(inp: CheckInput) -> Iterator[Finding]:
    """A restore of an output whose artifact does not match its checksum exits 65."""
    run = _restore_run(inp, "restore-corrupt")
    if run.exit_code != int(ExitCode.DATA_ERROR):
        yield must(
            f"{exit_text(run.exit_code)} restoring an artifact that fails its checksum; "
            "expected 65 (DATA_ERROR)",
            run,
        )
    written = sorted(p.relative_to(run.target).as_posix() for p in run.target.rglob("*"))
    if written:
        yield must(
            "the restore wrote into the target before verifying checksums", run, str(written[:5])
        )


def restore_hostile(inp: CheckInput) -> Iterator[Finding]:
    """A restore of an archive whose entries try to escape the target exits 65 and writes
    nothing outside the target."""
    run = _restore_run(inp, "restore-hostile")
    if run.exit_code != int(ExitCode.DATA_ERROR):
        yield must(
            f"{exit_text(run.exit_code)} restoring an archive with entries escaping the target "
            "(.., absolute, symlink out, hard link out); expected 65 (DATA_ERROR)",
            run,
        )
    for change in outside_changes(run.workdir / "outside"):
        yield must(f"the restore wrote outside its target: {change}", run)


def _restore_run(inp: CheckInput, name: str) -> Run:
    run = inp.run(name)
    if run.skipped:
        raise NotApplicable(run.skipped)
    backup = inp.all_runs.get("backup")
    if backup is not None and any(f.level is Level.MUST for f in manifest_findings(backup)):
        raise NotApplicable("the backup's output is not valid (see the manifest check)")
    return run
