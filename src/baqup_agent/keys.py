"""Names of a job's Redis keys and spool files (the wire layout of docs/architecture.md).

Every Redis key carries the job id as a hash tag (``{JOB_ID}``), so that a job's keys
share one Redis Cluster slot and a pipeline of them goes to one node.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

PREFIX = "baqup"
MESSAGE_FIELD = "msg"
"""The one field of every stream entry: the message JSON."""

RESULT_TTL_SECONDS = 7 * 24 * 3600
"""How long the result key (and the streams, once the result is in) are kept."""

EVENTS_FILE = "events.jsonl"
REPLAYED_FILE = "replayed"
CONTROL_FILE = "control.jsonl"
SPOOL_SUBDIR = ".spool"


class JobKeys(NamedTuple):
    """The Redis keys of one job."""

    events: str
    heartbeat: str
    result: str
    control: str


def job_keys(job_id: str) -> JobKeys:
    """The keys of ``job_id``: ``baqup:{JOB_ID}:events|heartbeat|result|control``."""
    tag = f"{PREFIX}:{{{job_id}}}"
    return JobKeys(f"{tag}:events", f"{tag}:heartbeat", f"{tag}:result", f"{tag}:control")


def default_spool_dir(spool_dir: str | None, staging_dir: str | None) -> Path | None:
    """``BAQUP_SPOOL_DIR`` when set, else ``BAQUP_STAGING_DIR/.spool``, else None."""
    if spool_dir:
        return Path(spool_dir)
    if staging_dir:
        return Path(staging_dir) / SPOOL_SUBDIR
    return None
