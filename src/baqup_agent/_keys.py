"""Names of a job's Redis keys and spool files, from the generated wire layout
(``baqup_agent.contract.wire``, schema/wire.json).

Every Redis key carries the job id as a hash tag (``{JOB_ID}``), so that a job's keys
share one Redis Cluster slot and a pipeline of them goes to one node.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from baqup_agent.contract.wire import (
    JOB_ID_PLACEHOLDER,
    REDIS_KEYS,
    SPOOL_SUBDIR,
)
from baqup_agent.contract.wire import RESULT_RETENTION_SECONDS as RESULT_TTL_SECONDS
from baqup_agent.contract.wire import SPOOL_CONTROL_FILE as CONTROL_FILE
from baqup_agent.contract.wire import SPOOL_EVENTS_FILE as EVENTS_FILE
from baqup_agent.contract.wire import SPOOL_REPLAYED_FILE as REPLAYED_FILE
from baqup_agent.contract.wire import STREAM_FIELD as MESSAGE_FIELD

__all__ = [
    "CONTROL_FILE",
    "EVENTS_FILE",
    "MESSAGE_FIELD",
    "REPLAYED_FILE",
    "RESULT_TTL_SECONDS",
    "SPOOL_SUBDIR",
    "JobKeys",
    "default_spool_dir",
    "job_keys",
]


class JobKeys(NamedTuple):
    """The Redis keys of one job."""

    events: str
    heartbeat: str
    result: str
    control: str


def job_keys(job_id: str) -> JobKeys:
    """The keys of ``job_id`` (``baqup:{JOB_ID}:events``, ... in the wire schema)."""
    return JobKeys(
        **{
            name: key.template.replace(JOB_ID_PLACEHOLDER, job_id)
            for name, key in REDIS_KEYS.items()
        }
    )


def default_spool_dir(spool_dir: str | None, staging_dir: str | None) -> Path | None:
    """``BAQUP_SPOOL_DIR`` when set, else ``BAQUP_STAGING_DIR/.spool``, else None."""
    if spool_dir:
        return Path(spool_dir)
    if staging_dir:
        return Path(staging_dir) / SPOOL_SUBDIR
    return None
