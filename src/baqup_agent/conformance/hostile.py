"""A hostile restore input: a published output whose manifest and checksums are valid
but whose tar archive tries to escape the restore target (§4.6, §7.2).

The suite takes the backup scenario's output, finds its first artifact that is a tar
stream (plain, gzip or zstd, as the manifest says), and writes it again with hostile
entries first: a ``..`` path, an absolute path, a symbolic link out of the target with
a write through it, a hard link to a file outside with a write through it. The manifest
gets the new size and checksum, so only the archive's content is wrong. Each entry
aims at a directory beside the target (``outside/``) holding one file, ``victim.txt``;
after the restore that directory must hold exactly that file, unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any

from baqup_agent.contract.wire import MANIFEST_FILE

VICTIM = "victim.txt"
VICTIM_TEXT = b"the restore must not touch this file\n"


class NotTar(Exception):
    """The backup's output holds no artifact the suite can read as a tar stream."""


def make_outside(outside: Path) -> None:
    """The directory the hostile entries aim at, with its victim file."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / VICTIM).write_bytes(VICTIM_TEXT)


def outside_changes(outside: Path) -> list[str]:
    """What a restore changed in ``outside`` (empty when it is as ``make_outside`` left it)."""
    changes = []
    for path in sorted(outside.rglob("*")):
        rel = path.relative_to(outside).as_posix()
        if rel != VICTIM:
            changes.append(f"{rel} was created")
        elif path.is_symlink() or path.read_bytes() != VICTIM_TEXT:
            changes.append(f"{VICTIM} was overwritten")
    if not (outside / VICTIM).exists():
        changes.append(f"{VICTIM} was removed")
    return changes


def hostile_copy(output: Path, copy: Path, outside: Path) -> str:
    """Copy the published ``output`` to ``copy`` with a hostile tar artifact; return its
    name. Raises NotTar when no artifact is a tar stream."""
    manifest = json.loads((output / MANIFEST_FILE).read_text(encoding="utf-8"))
    shutil.copytree(output, copy)
    for artifact in manifest.get("artifacts", []):
        path = copy / artifact["filename"]
        compression = artifact.get("compression", "none")
        try:
            members = _read_tar(path, compression)
        except (tarfile.TarError, OSError, EOFError, ValueError, ImportError):
            continue
        data = _write_tar(_hostile_entries(outside), members, compression=compression)
        path.write_bytes(data)
        artifact["size_bytes"] = len(data)
        artifact["checksum_value"] = _digest(data, artifact["checksum_algorithm"])
        (copy / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return str(artifact["filename"])
    shutil.rmtree(copy, ignore_errors=True)
    raise NotTar("no artifact of the backup's output is a tar stream (plain, gzip or zstd)")


Entry = tuple[tarfile.TarInfo, "bytes | None"]


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _hostile_entries(outside: Path) -> list[Entry]:
    entry = _entry
    victim = outside / VICTIM
    return [
        entry(f"../{outside.name}/dotdot.txt", data=b"escaped with ..\n"),
        entry(str(outside / "absolute.txt"), data=b"escaped with an absolute name\n"),
        entry("sneaky-link", tarfile.SYMTYPE, str(outside)),
        entry("sneaky-link/through-symlink.txt", data=b"written through a symlink\n"),
        entry("hard-link", tarfile.LNKTYPE, str(victim)),
        entry("hard-link", data=b"written through a hard link\n"),
    ]


def _read_tar(path: Path, compression: str) -> list[Entry]:
    with _opened(path, compression) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        out = []
        for info in tar:
            f = tar.extractfile(info) if info.isfile() else None
            out.append((info, f.read() if f is not None else None))
        return out


def _opened(path: Path, compression: str) -> IO[bytes]:
    data = path.read_bytes()
    if compression == "gzip":
        data = gzip.decompress(data)
    elif compression == "zstd":
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    elif compression != "none":
        raise ValueError(compression)
    return io.BytesIO(data)


def _write_tar(*parts: list[Entry], compression: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for part in parts:
            for info, data in part:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(raw))
    return raw


def _digest(data: bytes, algorithm: str) -> str:
    if algorithm == "blake3":
        import blake3

        hasher: Any = blake3.blake3(data)
    elif algorithm == "blake2b":
        hasher = hashlib.blake2b(data)
    else:
        hasher = hashlib.new(algorithm, data)
    return str(hasher.hexdigest())
