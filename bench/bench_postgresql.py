"""The example PostgreSQL agent against pg_dump | zstd and pg_restore.

Same machine, same run, same database (the tests' sample schema at BENCH_PG_SCALE,
default 20: about 60 MB of dump), a throw-away cluster on a loopback port:

* backup: the agent as a real process (``python examples/postgresql_agent/agent.py``:
  interpreter start-up, the version query, pg_dump --format=custom --compress=0 into a
  zstd level 3 artifact on every core, checksum, manifest, publication) against
  ``pg_dump -Fc | zstd > OUT`` (the issue's peer: pg_dump's own compression, then zstd).
  Target: at most 1.2x.
* restore: the agent (checksum verification, the emptiness check, decompression,
  ``pg_restore --single-transaction``) against ``pg_restore --single-transaction`` of
  the ``pg_dump -Fc`` file into an empty database. Report only.

BENCH_REPEAT (default 3): best of that many runs of each side, alternating.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench._report import row

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "examples" / "postgresql_agent" / "agent.py"
WORK = Path(__file__).resolve().parent / ".work" / "postgresql"
BACKUP_TARGET = 1.2


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.agent.pg_cluster import Cluster, find_bin_dir, sample_sql

    bin_dir, zstd = find_bin_dir(), shutil.which("zstd")
    if bin_dir is None or zstd is None:
        row(
            "postgresql backup vs pg_dump -Fc | zstd",
            None,
            "<= 1.2x",
            False,
            "no PostgreSQL or zstd",
        )
        return 1
    scale = int(os.environ.get("BENCH_PG_SCALE", "20"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    cluster = Cluster.start(bin_dir, "bench-password")
    try:
        cluster.create_database("source")
        cluster.psql("source", sample_sql(scale))
        cluster.psql("source", "VACUUM ANALYZE")
        base = {k: v for k, v in os.environ.items() if not k.startswith("BAQUP_")}
        peer_dump = WORK / "peer.dump"

        def agent_job(job: str, role: str, database: str, **extra: str) -> None:
            env = {
                **base,
                "BAQUP_JOB_ID": job,
                "BAQUP_AGENT_ID": "bench",
                "BAQUP_ROLE": role,
                "BAQUP_STAGING_DIR": str(WORK / "staging"),
                **cluster.agent_env(BAQUP_PG_DATABASE=database),
                **extra,
            }
            subprocess.run([sys.executable, str(AGENT)], env=env, check=True,
                           stderr=subprocess.DEVNULL)  # fmt: skip

        def peer_backup() -> None:
            with open(WORK / "peer.dump.zst", "wb") as out:
                dump = subprocess.Popen([bin_dir / "pg_dump", "-Fc"], stdout=subprocess.PIPE,
                                        env=cluster.client_env("source"))  # fmt: skip
                subprocess.run([zstd, "-q", "-c"], stdin=dump.stdout, stdout=out, check=True)
                assert dump.wait() == 0

        agent_backups, peer_backups = [], []
        for i in range(repeat):
            shutil.rmtree(WORK / "staging", ignore_errors=True)
            agent_backups.append(_timed(partial(agent_job, f"b{i}", "backup", "source")))
            peer_backups.append(_timed(peer_backup))
        subprocess.run([bin_dir / "pg_dump", "-Fc", "-f", peer_dump],
                       env=cluster.client_env("source"), check=True)  # fmt: skip
        output = WORK / "staging" / f"b{repeat - 1}"
        dump_mb = (output / "database.pgdump.zst").stat().st_size
        manifest = json.loads((output / "manifest.json").read_text())
        raw_mb = manifest["source_metadata"]["dump_bytes"] / 2**20
        ratio = min(agent_backups) / min(peer_backups)
        row(
            "postgresql backup vs pg_dump -Fc | zstd",
            ratio,
            f"<= {BACKUP_TARGET}x",
            ratio <= BACKUP_TARGET,
            f"agent {min(agent_backups):.2f} s, peer {min(peer_backups):.2f} s, "
            f"dump {raw_mb:.0f} MiB, artifact {dump_mb / 2**20:.1f} MiB, peer "
            f"{(WORK / 'peer.dump.zst').stat().st_size / 2**20:.1f} MiB",
        )

        agent_restores, peer_restores = [], []
        for i in range(repeat):
            cluster.drop_database("target")
            cluster.create_database("target")
            source = str(WORK / "staging" / f"b{repeat - 1}")
            agent_restores.append(_timed(partial(
                agent_job, f"r{i}", "restore", "target", BAQUP_RESTORE_SOURCE=source)))  # fmt: skip
            cluster.drop_database("target")
            cluster.create_database("target")
            peer_restores.append(_timed(lambda: subprocess.run(
                [bin_dir / "pg_restore", "--single-transaction", "--no-owner", "-d", "target",
                 peer_dump], env=cluster.client_env("target"), check=True)))  # fmt: skip
        ratio = min(agent_restores) / min(peer_restores)
        row(
            "postgresql restore vs pg_restore",
            ratio,
            "report",
            None,
            f"agent {min(agent_restores):.2f} s, peer {min(peer_restores):.2f} s",
        )
        return 0 if min(agent_backups) / min(peer_backups) <= BACKUP_TARGET else 1
    finally:
        cluster.stop()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
