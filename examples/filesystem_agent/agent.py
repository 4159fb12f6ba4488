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
import tarfile
from collections.abc import Iterator
from pathlib import Path

from baqup_agent import Agent, ResourceUnavailable
from baqup_agent.agent import Context

ARTIFACT = "files.tar.zst"
COPY_BUFFER = 1 << 20  # tar copies file data in 1 MiB reads (the default is 16 KiB)


def walk(root: Path) -> Iterator[tuple[str, str]]:
    """(path, name in the archive) of every entry under ``root``, sorted, parents first.

    Symbolic links to directories are entries, not descended into.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            yield os.path.join(dirpath, name), os.path.normpath(os.path.join(rel, name))


class FilesystemAgent(Agent):
    """Back up a directory to ``files.tar.zst``; restore it into a target directory."""

    name = "filesystem"
    version = "1.0.0"
    config_schema = "agent-schema.json"

    def backup(self, ctx: Context) -> None:
        source = Path(ctx.config["BAQUP_FS_SOURCE"])
        if not source.is_dir():
            raise ResourceUnavailable(f"source directory {source} does not exist")
        files, size = 0, 0
        for path, _ in walk(source):  # totals first, so progress has a percentage
            st = os.lstat(path)
            files += 1
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
        ctx.set_totals(bytes=size, items=files)
        ctx.source_metadata.update(source=str(source), entries=files, bytes=size)
        ctx.logger.info("backing up", source=str(source), entries=files, bytes=size)

        writer = ctx.artifact(
            ARTIFACT,
            level=ctx.config["BAQUP_FS_ZSTD_LEVEL"],
            threads=ctx.config["BAQUP_FS_THREADS"],
        )
        with writer, tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.copybufsize = COPY_BUFFER
            for path, arcname in walk(source):
                ctx.checkpoint()
                info = tar.gettarinfo(path, arcname)
                if info is None:  # sockets and the like have no tar form
                    ctx.logger.warn("skipped an entry tar cannot store", path=arcname)
                elif info.isreg():
                    with open(path, "rb", buffering=0) as f:
                        tar.addfile(info, ctx.track(f))
                else:
                    tar.addfile(info)
                tar.members.clear()  # tar keeps every member otherwise: memory would grow
                ctx.progress(items=1)

    def restore(self, ctx: Context) -> None:
        target = Path(ctx.config["BAQUP_FS_TARGET"])
        target.mkdir(parents=True, exist_ok=True)
        with ctx.open_artifact(ARTIFACT) as stream:
            ctx.extract_tar(stream, target)


if __name__ == "__main__":
    FilesystemAgent.main()
