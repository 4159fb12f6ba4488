"""Example agent: an online SQLite backup through the ``sqlite3`` backup API.

Backup copies BAQUP_SQLITE_DATABASE page by page into a snapshot in the job's staging
directory while the application keeps using the database, checks the snapshot's
integrity, then streams it into a zstd-compressed, checksummed artifact. Restore
(after the SDK verified every checksum) decompresses into a temporary file beside the
target, checks its integrity and renames it over the target in one step.

    BAQUP_JOB_ID=job-1 BAQUP_AGENT_ID=sqlite-1 BAQUP_ROLE=backup BAQUP_STAGING_DIR=/tmp/st \\
        BAQUP_SQLITE_DATABASE=/data/app.db python examples/sqlite_agent/agent.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from baqup_agent import Agent, CantCreateOutput, Context, DataError, ResourceUnavailable

ARTIFACT = "database.sqlite.zst"
METADATA_SCHEMA = Path(__file__).with_name("source-metadata-schema.json")
COPY_BUFFER = 1 << 20


def hint(database: Path) -> str:
    """What an unreadable database most likely needs, when it is something we can tell."""
    if not os.access(database.parent, os.W_OK):
        # a WAL database's readers create and map its -shm file beside it
        return (
            f" ({database.parent} is not writable for this agent: a database in WAL mode "
            "needs its directory writable, so mount it read-write)"
        )
    return ""


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection to the existing database file at ``path`` (never creates one)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)


def integrity_error(path: Path) -> str | None:
    """SQLite's own verdict on a database file nobody else uses: None when it is sound.

    ``immutable`` keeps SQLite from creating -wal/-shm files beside it.
    """
    try:
        with closing(connect(path, "mode=ro&immutable=1")) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    verdict = "; ".join(str(r[0]) for r in rows)
    return None if verdict == "ok" else verdict


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteAgent(Agent):
    """Back up one SQLite database online; restore it by an atomic replace."""

    name = "sqlite"
    version = "1.0.0"
    config_schema = "agent-schema.json"

    def backup(self, ctx: Context) -> None:
        database = Path(ctx.config["BAQUP_SQLITE_DATABASE"])
        if not database.is_file():
            raise ResourceUnavailable(f"database {database} does not exist")
        snapshot = ctx.work_dir / "snapshot.sqlite"

        copied = 0

        def step(status: int, remaining: int, total: int) -> None:
            nonlocal copied
            ctx.set_totals(items=total)  # items are pages here
            ctx.progress(items=total - remaining - copied)
            copied = total - remaining
            ctx.checkpoint()  # raising here aborts the online backup and propagates

        # Read-write, as the application's own connections are: a read-only one would
        # leave -wal/-shm files (owned by this agent's user) behind when it is the last.
        source = connect(database, "mode=rw")
        copy = sqlite3.connect(snapshot)
        try:
            try:
                pages = ctx.config["BAQUP_SQLITE_PAGES_PER_STEP"]
                source.backup(copy, pages=pages, progress=step)
            except sqlite3.OperationalError as exc:  # SQLite's word for "cannot read it now"
                raise ResourceUnavailable(f"cannot read {database}: {exc}{hint(database)}") from exc
            page_size, page_count = (
                copy.execute("PRAGMA page_size").fetchone()[0],
                copy.execute("PRAGMA page_count").fetchone()[0],
            )
            user_version = copy.execute("PRAGMA user_version").fetchone()[0]
        finally:
            copy.close()
            source.close()
        problem = integrity_error(snapshot)
        if problem is not None:
            raise DataError(f"the snapshot of {database} is not sound: {problem}")
        ctx.source_metadata.update(
            database=str(database),
            sqlite_version=sqlite3.sqlite_version,
            page_size=page_size,
            page_count=page_count,
            user_version=user_version,
        )
        ctx.set_totals(bytes=snapshot.stat().st_size)
        with open(snapshot, "rb") as raw, ctx.artifact(ARTIFACT) as out:
            shutil.copyfileobj(ctx.track(raw), out, COPY_BUFFER)
        snapshot.unlink()  # only the artifact is published
        ctx.logger.info("database backed up", database=str(database), pages=page_count)

    def restore(self, ctx: Context) -> None:
        target = Path(ctx.config["BAQUP_SQLITE_DATABASE"])
        if target.exists() and not ctx.config["BAQUP_SQLITE_OVERWRITE"]:
            raise CantCreateOutput(
                f"{target} exists; set BAQUP_SQLITE_OVERWRITE=true to replace it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.restore-{ctx.job_id}")
        meta = ctx.source.checked_metadata(METADATA_SCHEMA)  # wrong types: DataError, 65
        ctx.set_totals(bytes=meta["page_size"] * meta["page_count"])
        try:
            with ctx.open_artifact(ARTIFACT) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_BUFFER)
                dst.flush()
                os.fsync(dst.fileno())
            problem = integrity_error(partial)
            if problem is not None:
                raise DataError(f"the restored database is not sound: {problem}")
            # A stale WAL of the old database would be replayed into the new one.
            for suffix in ("-wal", "-shm", "-journal"):
                target.with_name(target.name + suffix).unlink(missing_ok=True)
            os.replace(partial, target)
            fsync_dir(target.parent)
        finally:
            partial.unlink(missing_ok=True)
        ctx.logger.info("database restored", database=str(target))


if __name__ == "__main__":
    SqliteAgent.main()
