"""Example agent: a directory backed up as one zstd-compressed tar stream.

Backup walks BAQUP_FS_SOURCE and streams a tar archive, in one pass, through the SDK's
artifact writer (zstd, sha256, size computed as the bytes go to disk; constant memory).
Restore extracts the verified archive into BAQUP_FS_TARGET; no entry can escape it.

    BAQUP_JOB_ID=job-1 BAQUP_AGENT_ID=fs-1 BAQUP_ROLE=backup BAQUP_STAGING_DIR=/tmp/st \\
        BAQUP_FS_SOURCE=/data python examples/filesystem_agent/agent.py
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict
from pathlib import Path

from baqup_agent import Agent, Context, ResourceUnavailable

ARTIFACT = "files.tar.zst"
METADATA_SCHEMA = Path(__file__).with_name("source-metadata-schema.json")
# tar's format (POSIX ustar), which no schema holds: literals, so that the agent's start
# does not pay for importing tarfile (and shutil, bz2, lzma) for two numbers
BLOCKSIZE = 512
RECORDSIZE = 20 * BLOCKSIZE


def tree_size(root: Path) -> tuple[int, int]:
    """(entries, bytes of the tar stream) of the tree below ``root``.

    A tar stream has a 512-byte header per entry, file data padded to 512 bytes, two
    end blocks, all padded to tar's 10 KiB record: progress counts those bytes, so this
    is its total (exact unless names need PAX headers or files are hard-linked).
    """
    entries, size = 0, 2 * BLOCKSIZE
    folders = [str(root)]
    while folders:  # scandir's entries stat without joining paths in Python: one pass is cheap
        with os.scandir(folders.pop()) as listing:
            for entry in listing:
                st = entry.stat(follow_symlinks=False)
                entries += 1
                data = st.st_size if stat.S_ISREG(st.st_mode) else 0
                size += BLOCKSIZE + -(-data // BLOCKSIZE) * BLOCKSIZE
                if stat.S_ISDIR(st.st_mode):
                    folders.append(entry.path)
    return entries, -(-size // RECORDSIZE) * RECORDSIZE


class FilesystemAgent(Agent):
    """Back up a directory to ``files.tar.zst``; restore it into a target directory."""

    name = "filesystem"
    version = "1.0.0"
    config_schema = "agent-schema.json"

    def backup(self, ctx: Context) -> None:
        source = Path(ctx.config["BAQUP_FS_SOURCE"])
        if not source.is_dir():
            raise ResourceUnavailable(f"source directory {source} does not exist")
        entries, size = tree_size(source)  # totals first, so progress has a percentage
        ctx.set_totals(bytes=size, items=entries)
        level, threads = ctx.config["BAQUP_FS_ZSTD_LEVEL"], ctx.config["BAQUP_FS_THREADS"]
        with ctx.artifact(ARTIFACT, level=level, threads=threads, count_progress=True) as out:
            stats = ctx.create_tar(out, source)
        # Restore reads these back for its progress totals.
        ctx.source_metadata.update(source=str(source), tar_bytes=out.bytes_in, **asdict(stats))

    def restore(self, ctx: Context) -> None:
        target = Path(ctx.config["BAQUP_FS_TARGET"])
        meta = ctx.source.checked_metadata(METADATA_SCHEMA)  # wrong types: DataError, 65
        entries = sum(
            meta.get(kind, 0) for kind in ("files", "directories", "symlinks", "hardlinks")
        )
        ctx.set_totals(bytes=meta.get("tar_bytes"), items=entries or None)
        with ctx.open_artifact(ARTIFACT) as stream:
            ctx.extract_tar(stream, target)


if __name__ == "__main__":
    FilesystemAgent.main()
