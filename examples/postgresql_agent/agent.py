"""Example agent: a PostgreSQL database through pg_dump and pg_restore.

Backup asks the server for its version (psql), then streams ``pg_dump --format=custom``
(uncompressed: the artifact compresses with zstd, faster and smaller than pg_dump's
gzip) into ``database.pgdump.zst``. The manifest's ``source_metadata`` records the
server version, the pg_dump version, the format and the dump's size in bytes.

Restore validates that metadata, refuses a target database that holds anything
(exit 73: the output cannot be created there), then feeds the artifact to
``pg_restore --single-transaction --exit-on-error``: the restore is all or nothing. A
stream that does not have the recorded size is a ``DataError`` (65), raised before
pg_restore sees the end of its input, so nothing is committed.

The password (``BAQUP_PG_PASSWORD_FILE``) reaches the tools only as a passfile held in
memory (``SecretFile``), never on a command line nor in their environment. Every
connection is named ``baqup-<tool>`` (``application_name``) and asks the server to
check every second that the client is still there, so that a killed pg_dump does not
leave a session behind, even one waiting on a lock.

    BAQUP_JOB_ID=job-1 BAQUP_AGENT_ID=pg-1 BAQUP_ROLE=backup BAQUP_STAGING_DIR=/tmp/st \\
    BAQUP_PG_HOST=db BAQUP_PG_USER=backup BAQUP_PG_PASSWORD_FILE=/run/secrets/pg \\
    BAQUP_PG_DATABASE=app python examples/postgresql_agent/agent.py
"""

from __future__ import annotations

import os
from typing import Any

from baqup_agent import (
    Agent,
    CantCreateOutput,
    ConfigError,
    Context,
    DataError,
    ResourceUnavailable,
    Secret,
    SecretFile,
)

ARTIFACT = "database.pgdump.zst"
DUMP_FORMAT = "custom"

# psql exits 2 when the connection fails (refused, unknown database, bad password).
PSQL_EXIT_CODES = {2: ResourceUnavailable}

# What restore relies on in the manifest's source_metadata.
SOURCE_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dump_format", "dump_bytes", "server_version", "server_version_num"],
    "properties": {
        "dump_format": {"const": DUMP_FORMAT},
        "dump_bytes": {"type": "integer", "minimum": 1},
        "server_version": {"type": "string", "minLength": 1},
        "server_version_num": {"type": "integer", "minimum": 90000, "maximum": 9999999},
        "pg_dump_version": {"type": "string"},
        "database": {"type": "string"},
    },
}

# Anything a fresh database (CREATE DATABASE from template1) does not hold: relations,
# sequences, views, functions, types and schemas of its own, extensions but plpgsql.
EMPTY_CHECK = """
WITH own_ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
)
SELECT (SELECT count(*) FROM pg_class WHERE relnamespace IN (SELECT oid FROM own_ns))
     + (SELECT count(*) FROM pg_proc WHERE pronamespace IN (SELECT oid FROM own_ns))
     + (SELECT count(*) FROM pg_type WHERE typnamespace IN (SELECT oid FROM own_ns))
     + (SELECT count(*) FROM own_ns WHERE nspname <> 'public')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


def passfile_line(password: str) -> str:
    """A ``.pgpass`` line matching any server, database and user (``:``, ``\\`` escaped)."""
    if "\n" in password or "\r" in password:
        raise ValueError("a password with a line break cannot go through a passfile")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


class _ExactSize:
    """A reader that raises ``DataError`` unless the stream has exactly ``expected`` bytes.

    The error comes before the reader returns its end: the consumer (pg_restore) is
    stopped before it could commit a stream of the wrong length.
    """

    def __init__(self, raw: Any, expected: int) -> None:
        self._raw = raw
        self._expected = expected
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(size)
        self._seen += len(data)
        if self._seen > self._expected or (not data and self._seen != self._expected):
            raise DataError(
                f"the dump has {'more than ' if data else ''}{self._seen} bytes, "
                f"the manifest says {self._expected}"
            )
        return data


class PostgresqlAgent(Agent):
    """Back up one PostgreSQL database with pg_dump; restore it with pg_restore."""

    name = "postgresql"
    version = "1.0.0"
    config_schema = "agent-schema.json"

    # -- the tools --------------------------------------------------------------------

    def _tool(self, ctx: Context, name: str) -> str:
        bin_dir = ctx.config.get("BAQUP_PG_BIN_DIR")
        return os.path.join(bin_dir, name) if bin_dir else name

    def _env(self, ctx: Context, tool: str) -> dict[str, str | Secret | SecretFile]:
        """Connection settings for libpq: everything through the environment."""
        env: dict[str, str | Secret | SecretFile] = {
            "PGHOST": str(ctx.config["BAQUP_PG_HOST"]),
            "PGPORT": str(ctx.config["BAQUP_PG_PORT"]),
            "PGUSER": str(ctx.config["BAQUP_PG_USER"]),
            "PGDATABASE": str(ctx.config["BAQUP_PG_DATABASE"]),
            "PGSSLMODE": str(ctx.config["BAQUP_PG_SSLMODE"]),
            "PGAPPNAME": f"baqup-{tool}",
            "PGOPTIONS": "-c client_connection_check_interval=1000",
            "PGCONNECT_TIMEOUT": "10",
        }
        password = ctx.config.get("BAQUP_PG_PASSWORD")
        if password is not None:
            try:
                line = passfile_line(password.reveal())
            except ValueError as exc:
                raise ConfigError(f"BAQUP_PG_PASSWORD: {exc}") from None
            env["PGPASSFILE"] = SecretFile(line)
        else:
            env["PGPASSFILE"] = os.devnull  # not the agent user's ~/.pgpass
        return env

    def _query(self, ctx: Context, sql: str) -> list[str]:
        """One row of ``sql``'s result, fields split (psql, unaligned, tuples only)."""
        result = ctx.run_child(
            [self._tool(ctx, "psql"), "-X", "-w", "-A", "-t", "-q", "-F", "\t", "-c", sql],
            env=self._env(ctx, "psql"),
            exit_codes=PSQL_EXIT_CODES,
            name="psql",
        )
        return result.stdout.decode().rstrip("\n").split("\t")

    # -- backup -------------------------------------------------------------------------

    def backup(self, ctx: Context) -> None:
        database = str(ctx.config["BAQUP_PG_DATABASE"])
        version, version_num = self._query(
            ctx, "SELECT current_setting('server_version'), current_setting('server_version_num')"
        )
        pg_dump = self._tool(ctx, "pg_dump")
        tool_version = ctx.run_child([pg_dump, "--version"], name="pg_dump").stdout.decode()
        with ctx.artifact(ARTIFACT, level=ctx.config["BAQUP_PG_ZSTD_LEVEL"], threads=-1) as out:
            result = ctx.run_child(
                [pg_dump, "-w", f"--format={DUMP_FORMAT}", "--compress=0", "--dbname", database],
                stdout=out,
                env=self._env(ctx, "pg_dump"),
                name="pg_dump",
            )
        ctx.source_metadata.update(
            database=database,
            server_version=version,
            server_version_num=int(version_num),
            pg_dump_version=tool_version.strip(),
            dump_format=DUMP_FORMAT,
            dump_bytes=result.stdout_bytes,
        )
        ctx.logger.info("database dumped", database=database, dump_bytes=result.stdout_bytes)

    # -- restore ------------------------------------------------------------------------

    def restore(self, ctx: Context) -> None:
        meta = self._source_metadata(ctx)
        database = str(ctx.config["BAQUP_PG_DATABASE"])
        (objects,) = self._query(ctx, EMPTY_CHECK)
        if int(objects) != 0:
            raise CantCreateOutput(
                f"database {database} is not empty ({objects} objects): restore only into "
                "a new, empty database"
            )
        ctx.set_totals(bytes=meta["dump_bytes"])
        argv = [
            self._tool(ctx, "pg_restore"),
            "-w",
            "--single-transaction",
            "--exit-on-error",
            "--dbname",
            database,
        ]
        if not ctx.config["BAQUP_PG_RESTORE_OWNERSHIP"]:
            argv += ["--no-owner", "--no-privileges"]
        with ctx.open_artifact(ARTIFACT) as dump:
            ctx.run_child(
                argv,
                stdin=_ExactSize(dump, meta["dump_bytes"]),
                env=self._env(ctx, "pg_restore"),
                name="pg_restore",
            )
        ctx.logger.info("database restored", database=database, dump_bytes=meta["dump_bytes"])

    def _source_metadata(self, ctx: Context) -> dict[str, Any]:
        """The manifest's source_metadata, checked against ``SOURCE_METADATA_SCHEMA`` (65)."""
        from jsonschema import Draft202012Validator

        meta = ctx.source.manifest.source_metadata or {}
        problems = sorted(
            f"{'/'.join(map(str, e.absolute_path)) or 'source_metadata'}: {e.message}"
            for e in Draft202012Validator(SOURCE_METADATA_SCHEMA).iter_errors(meta)
        )
        if problems:
            raise DataError(
                "the manifest's source_metadata is not a PostgreSQL dump's: " + "; ".join(problems)
            )
        return dict(meta)


if __name__ == "__main__":
    PostgresqlAgent.main()
