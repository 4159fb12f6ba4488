"""The scenarios: each one runs the agent once, in its own sandbox, to observe one situation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Bus = Literal["redis", "spool", "redis-down"]
SecretRoute = Literal["env", "file", "url"]


@dataclass(frozen=True)
class Scenario:
    """One run of the agent under test.

    ``bus``: redis (the suite's server; spool when there is none), spool (no Redis URL)
    or redis-down (a URL to a closed port). ``secrets``: how canaries reach the agent:
    plain variables, ``NAME_FILE`` files, or the password inside the Redis URL.
    ``slow``: the author's ``--slow-env`` applies, so the job lasts long enough to be
    interrupted and to send several heartbeats. ``action``: what the suite does once
    the agent reports ``running``. ``fault``: the configuration error injected.
    """

    name: str
    description: str
    role: Literal["backup", "restore"]
    bus: Bus
    secrets: SecretRoute
    slow: bool = False
    action: Literal["sigterm", "cancel"] | None = None
    fault: Literal["missing-job-id", "bad-interval", "missing-restore-source"] | None = None
    source: Literal["backup", "corrupt", "hostile"] | None = None  # what a restore reads
    needs_redis: bool = False  # not applicable without a redis-server
    heartbeat_ttl: float = 0  # BAQUP_HEARTBEAT_TTL in intervals (0: unset, the default)
    log_level: str = ""  # BAQUP_LOG_LEVEL (empty: DEBUG, everything)

    @property
    def is_job(self) -> bool:
        """Whether the agent is expected to run a job (not to stop at a config error)."""
        return self.fault is None


BACKUP = Scenario(
    "backup",
    "backup over Redis (password from BAQUP_REDIS_PASSWORD_FILE), slow job, heartbeats watched",
    "backup", "redis", "file", slow=True, heartbeat_ttl=4,
)  # fmt: skip
SCENARIOS: tuple[Scenario, ...] = (
    BACKUP,
    Scenario("backup-spool", "backup without Redis: the spool is the bus; BAQUP_LOG_LEVEL=INFO",
             "backup", "spool", "env", log_level="INFO"),
    Scenario("backup-redis-down", "backup with BAQUP_REDIS_URL pointing at a closed port",
             "backup", "redis-down", "url"),
    Scenario("sigterm", "SIGTERM once the agent reports running", "backup", "redis", "env",
             slow=True, action="sigterm"),
    Scenario("cancel-redis", "cancel on the Redis control stream once running", "backup",
             "redis", "url", slow=True, action="cancel", needs_redis=True),
    Scenario("cancel-spool", "cancel appended to control.jsonl once running", "backup", "spool",
             "file", slow=True, action="cancel"),
    Scenario("config-missing-job-id", "BAQUP_JOB_ID missing", "backup", "spool", "env",
             fault="missing-job-id"),
    Scenario("config-bad-interval", "BAQUP_HEARTBEAT_INTERVAL=-1, Redis configured", "backup",
             "redis", "env", fault="bad-interval"),
    Scenario("restore", "restore of the backup scenario's output over Redis", "restore",
             "redis", "env", source="backup"),
    Scenario("restore-corrupt", "restore of a copy of that output with one byte flipped",
             "restore", "spool", "file", source="corrupt"),
    Scenario("restore-hostile", "restore of a copy of that output whose tar archive tries "
             "to escape the target (manifest and checksums valid)", "restore", "spool", "env",
             source="hostile"),
    Scenario("config-restore-no-source", "restore without BAQUP_RESTORE_SOURCE", "restore",
             "spool", "env", fault="missing-restore-source"),
)  # fmt: skip
"""Every scenario, in the order they are started (the long ones first)."""

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
