"""Every check of the suite, in report order. docs/conformance.md documents each one."""

from __future__ import annotations

from baqup_agent.conformance.checks._base import Check, CheckInput, NotApplicable
from baqup_agent.conformance.checks.bus import bus_messages, heartbeats, redis_outage, result_once
from baqup_agent.conformance.checks.lifecycle import cancel, sigterm, state_transitions
from baqup_agent.conformance.checks.output import (
    atomic_publication,
    manifest,
    output_permissions,
    restore_verifies,
    round_trip,
)
from baqup_agent.conformance.checks.process import bad_config, exit_codes, log_records
from baqup_agent.conformance.checks.security import secrets
from baqup_agent.conformance.reruns import duplicate_refused, rerun_finished

_BACKUP = frozenset({"backup"})
_RESTORE = frozenset({"restore"})
_PUBLISHING = ("backup", "backup-spool", "backup-redis-down")
_STOPPED = ("sigterm", "cancel-redis", "cancel-spool")

CHECKS: tuple[Check, ...] = (
    Check("exit-codes", "§5", "exit codes within the taxonomy and consistent with the result",
          exit_codes,
          fix="exit with a code of schema/exit-code.json equal to the result's exit_code"),
    Check("log-records", "§6", "every stderr line is a valid log record of this job and agent",
          log_records,
          fix="write one JSON object per line on stderr with timestamp, level, message, "
              "job_id, agent_id; honour BAQUP_LOG_FORMAT=json"),
    Check("state-transitions", "§1", "state changes start at initializing, follow "
          "x-transitions and end in terminated or failed", state_transitions,
          fix="send state_change for every transition of schema/agent-state.json"),
    Check("heartbeats", "§3", "heartbeats at the configured interval, TTL key refreshed",
          heartbeats, scenarios=("backup", "restore"),
          fix="run a heartbeat thread from start to exit; SET the heartbeat key with PX"),
    Check("bus-messages", "§3", "every bus message valid, with ids, seq and the job's ids",
          bus_messages,
          fix="validate messages against schema/bus-message.json before sending"),
    Check("result-once", "§3", "exactly one result per job, also kept in the result key",
          result_once,
          fix="send the result once, at the end, and SET baqup:{JOB_ID}:result"),
    Check("atomic-publication", "§4", "output never visible half-written", atomic_publication,
          scenarios=_PUBLISHING + _STOPPED, roles=_BACKUP,
          fix="write into .staging/JOB_ID, manifest last, then one rename to JOB_ID"),
    Check("manifest", "§4", "a valid manifest whose sizes and checksums match the files",
          manifest, scenarios=_PUBLISHING, roles=_BACKUP,
          fix="compute size and checksum from the bytes as written; list every file"),
    Check("secrets", "§7", "canary secrets never appear in logs, messages or output",
          secrets,
          fix="keep secrets out of log fields, messages, manifests and file names; "
              "redact known values"),
    Check("sigterm", "§1", "SIGTERM mid-job: non-zero exit within the grace period, nothing "
          "published", sigterm, scenarios=_STOPPED[:1], roles=_BACKUP,
          fix="handle SIGTERM: stop at the next checkpoint, remove staging, report, exit 1"),
    Check("cancel", "§1", "a cancel (control stream or control.jsonl) stops the job",
          cancel, scenarios=_STOPPED[1:], roles=_BACKUP,
          fix="poll baqup:{JOB_ID}:control (Redis) or SPOOL/JOB_ID/control.jsonl"),
    Check("bad-config", "§2", "an invalid config exits 64 with a structured error, nothing "
          "else", bad_config,
          scenarios=("config-missing-job-id", "config-bad-interval", "config-restore-no-source"),
          fix="validate the environment first; log every error as JSON; exit 64"),
    Check("redis-outage", "§3", "Redis down: the spool is used and a successful job exits 75",
          redis_outage, scenarios=("backup-redis-down",), roles=_BACKUP,
          fix="fall back to SPOOL/JOB_ID/events.jsonl; exit 75 when the result was spooled"),
    Check("output-permissions", "§7", "published files are not world-readable (SHOULD)",
          output_permissions, scenarios=("backup",), roles=_BACKUP,
          fix="create staged files 0600 and directories 0700"),
    Check("round-trip", "§4", "backup then restore reproduces the fixture byte for byte",
          round_trip, scenarios=("restore",), roles=_RESTORE,
          fix="restore every file, directory and byte of the backup into the target"),
    Check("restore-verifies", "§4", "a restore verifies checksums: a corrupt artifact "
          "exits 65", restore_verifies, scenarios=("restore-corrupt",), roles=_RESTORE,
          fix="verify every artifact against the manifest before extracting"),
    Check("rerun-finished", "§4", "a finished backup started again: exit 0, no work, nothing "
          "added to the bus", rerun_finished, scenarios=("backup",), roles=_BACKUP,
          fix="when JOB_ID/ is published and verifies, replay the spool and exit 0"),
    Check("duplicate-refused", "§4", "a second start while the first runs: exit 73, nothing "
          "of the job written", duplicate_refused, scenarios=("backup",), roles=_BACKUP,
          fix="take the job's lock before the first bus message; exit 73 without it"),
)  # fmt: skip

BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}

__all__ = ["BY_NAME", "CHECKS", "Check", "CheckInput", "NotApplicable"]
