"""A throw-away PostgreSQL cluster for the PostgreSQL agent's tests and benchmark.

``initdb`` in a new temporary directory, the server on a free loopback port as an
unprivileged user (``postgres`` when we are root: the server refuses to run as root),
password (SCRAM) authentication only, fsync off (nothing here must survive a crash).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, free_port


def find_bin_dir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    """A running server; ``admin`` (with ``password``) is its superuser."""

    bin: Path
    root: Path
    password: str
    port: int = 0
    user: str | None = None  # the unprivileged user the server runs as (None: ourselves)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_user(self) -> dict[str, Any]:
        return {"user": self.user} if self.user else {}

    @classmethod
    def start(cls, bin_dir: Path, password: str) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="baqup-pg-"))
        user = "postgres" if os.geteuid() == 0 else None
        cluster = cls(bin_dir, root, password, free_port(), user)
        (root / "password").write_text(password)
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        (root / "pgpass").write_text(f"*:*:*:*:{escaped}\n")
        os.chmod(root / "pgpass", 0o600)
        (root / "pwfile").write_text(password + "\n")
        if user:
            shutil.chown(root, user)
            shutil.chown(root / "pwfile", user)
        try:
            subprocess.run(
                [bin_dir / "initdb", "-D", cluster.data, "-U", "admin", "--pwfile",
                 root / "pwfile", "--auth=scram-sha-256", "--no-sync", "-E", "UTF8",
                 "--locale=C"],
                check=True, capture_output=True, timeout=120, **cluster._as_user(),
            )  # fmt: skip
            options = f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
            subprocess.run(
                [bin_dir / "pg_ctl", "-D", cluster.data, "-o", options, "-l",
                 root / "server.log", "-w", "start"],
                check=True, capture_output=True, timeout=120, **cluster._as_user(),
            )  # fmt: skip
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False, **self._as_user(),
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def client_env(self, database: str) -> dict[str, str]:
        """libpq's environment for a client of ``database`` as ``admin``."""
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "admin",
            "PGDATABASE": database,
            "PGPASSFILE": str(self.root / "pgpass"),
        }

    def agent_env(self, **extra: Any) -> dict[str, str]:
        """The agent's connection variables (the password as a file, as it must be)."""
        return {
            "BAQUP_PG_HOST": "127.0.0.1",
            "BAQUP_PG_PORT": str(self.port),
            "BAQUP_PG_USER": "admin",
            "BAQUP_PG_PASSWORD_FILE": str(self.root / "password"),
            "BAQUP_PG_BIN_DIR": str(self.bin),
            **{k: str(v) for k, v in extra.items()},
        }

    def psql(self, database: str, sql: str, *, check: bool = True) -> str:
        """Run ``sql``; its output, unaligned, tuples only."""
        done = subprocess.run(
            [self.bin / "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=self.client_env(database),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and done.returncode:
            raise AssertionError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, name: str) -> None:
        self.psql("postgres", f"CREATE DATABASE {name}")

    def drop_database(self, name: str) -> None:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name}")

    def fingerprint(self, database: str, tables: tuple[str, ...]) -> dict[str, tuple[int, str]]:
        """Row count and an order-independent checksum of every table."""
        result = {}
        for table in tables:
            row = self.psql(
                database,
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                f"FROM {table} t",
            )
            count, digest = row.split("|")
            result[table] = (int(count), digest)
        return result

    @contextlib.contextmanager
    def locked(self, database: str, table: str) -> Iterator[None]:
        """Another session holds an exclusive lock on ``table`` until the block ends: a
        pg_dump of ``database`` waits on it mid-way."""
        locker = subprocess.Popen(
            [self.bin / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.client_env(database),
            text=True,
        )
        assert locker.stdin is not None and locker.stdout is not None
        try:
            locker.stdin.write(
                f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n"
            )
            locker.stdin.flush()
            assert locker.stdout.readline().strip() == "locked"
            yield
        finally:
            locker.stdin.close()
            locker.kill()
            locker.wait()

    def waiting_on_a_lock(self, application: str) -> int:
        """Sessions with ``application_name`` = ``application`` waiting on a lock."""
        return int(
            self.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE application_name = '{application}' AND wait_event_type = 'Lock'",
            )
        )

    def sessions(self, application: str) -> int:
        """Sessions open with ``application_name`` = ``application``."""
        return int(
            self.psql(
                "postgres",
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'",
            )
        )


def sample_sql(scale: int = 1) -> str:
    """A database of several tables (about 3 MB of dump per unit of ``scale``)."""
    return f"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        mood mood, created timestamptz NOT NULL);
INSERT INTO customers (name, email, mood, created)
  SELECT 'name-' || i, 'user' || i || '@example.com', (ARRAY['sad','ok','happy'])[i % 3 + 1]::mood,
         timestamptz '2024-01-01 00:00+00' + i * interval '1 minute'
  FROM generate_series(1, {20000 * scale}) i;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     amount numeric(10, 2), note text);
INSERT INTO orders (customer_id, amount, note)
  SELECT i % {20000 * scale} + 1, (i * 7 % 100000) / 100.0, repeat(md5(i::text), 2)
  FROM generate_series(1, {60000 * scale}) i;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
INSERT INTO blobs SELECT i, decode(string_agg(md5(i::text || j::text), ''), 'hex')
  FROM generate_series(1, {300 * scale}) i, generate_series(1, 500) j GROUP BY i;
CREATE TABLE events (id int, payload jsonb);
INSERT INTO events SELECT i, jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i % 7))
  FROM generate_series(1, {10000 * scale}) i;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 900;
CREATE FUNCTION order_total(c int) RETURNS numeric LANGUAGE sql
  AS 'SELECT sum(amount) FROM orders WHERE customer_id = c';
"""


SAMPLE_TABLES = ("customers", "orders", "blobs", "events")


@contextlib.contextmanager
def sample_cluster(password: str) -> Iterator[Cluster]:
    """A running cluster whose database ``source`` holds ``sample_sql()``, stopped after.

    Skips locally without PostgreSQL; fails in CI (``.ci/run`` must install it).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if IN_CI:
            pytest.fail("PostgreSQL is not installed; .ci/run must install it")
        pytest.skip("PostgreSQL not installed")
    cluster = Cluster.start(bin_dir, password)
    try:
        cluster.create_database("source")
        cluster.psql("source", sample_sql())
        yield cluster
    finally:
        cluster.stop()
