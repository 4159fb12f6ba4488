"""Every check of the suite, in report order. docs/conformance.md documents each one."""

from __future__ import annotations

from baqup_agent.conformance.checks._base import Check, CheckInput, NotApplicable
from baqup_agent.conformance.checks.bus import bus_messages, heartbeats, redis_outage, result_once
from baqup_agent.conformance.checks.lifecycle import cancel, sigterm, state_transitions
from baqup_agent.conformance.checks.output import (
    atomic_publication,
    manifest,
    output_permissions,
    restore_hostile,
    restore_verifies,
    round_trip,
    staging_writes,
)
from baqup_agent.conformance.checks.process import bad_config, exit_codes, log_records
from baqup_agent.conformance.checks.security import secrets
from baqup_agent.conformance.checks.wire import json_integers, log_level, result_last, seq
from baqup_agent.conformance.reruns import duplicate_refused, rerun_finished

_BACKUP = frozenset({"backup"})
_RESTORE = frozenset({"restore"})
_PUBLISHING = ("backup", "backup-spool", "backup-redis-down")
_STOPPED = ("sigterm", "cancel-redis", "cancel-spool")

CHECKS: tuple[Check, ...] = (
    Check("exit-codes", "§5", "exit codes within the taxonomy and consistent with the result",
          exit_codes,
          fix="exit with a code of schema/exit-code.json equal to the result's exit_code",
          rules=("§5.1", "§5.3", "§3.9")),
    Check("log-records", "§6", "every stderr line is a valid log record of this job and agent",
          log_records,
          fix="write one JSON object per line on stderr with timestamp, level, message, "
              "job_id, agent_id; honour BAQUP_LOG_FORMAT=json",
          rules=("§6.1", "§6.2")),
    Check("state-transitions", "§1", "state changes start at initializing, follow "
          "x-transitions and end in terminated or failed", state_transitions,
          fix="send state_change for every transition of schema/agent-state.json",
          rules=("§1.1", "§1.2")),
    Check("heartbeats", "§3", "heartbeats at the configured interval, TTL key refreshed",
          heartbeats, scenarios=("backup", "restore"),
          fix="run a heartbeat thread from start to exit; SET the heartbeat key with PX",
          rules=("§3.4", "§2.4"), redis_part="the heartbeat key and its TTL"),
    Check("bus-messages", "§3", "every bus message valid, with ids, seq and the job's ids",
          bus_messages,
          fix="validate messages against schema/bus-message.json before sending",
          rules=("§3.1", "§3.2", "§3.8", "§0.2", "§0.3", "§0.4"),
          redis_part="the Redis events stream"),
    Check("result-once", "§3", "exactly one result per job, also kept in the result key",
          result_once,
          fix="send the result once, at the end, and SET baqup:{JOB_ID}:result",
          rules=("§3.6", "§3.3"), redis_part="the result key"),
    Check("atomic-publication", "§4", "output never visible half-written", atomic_publication,
          scenarios=_PUBLISHING + _STOPPED, roles=_BACKUP,
          fix="write into .staging/JOB_ID, manifest last, then one rename to JOB_ID",
          rules=("§4.1", "§4.2")),
    Check("manifest", "§4", "a valid manifest whose sizes and checksums match the files",
          manifest, scenarios=_PUBLISHING, roles=_BACKUP,
          fix="compute size and checksum from the bytes as written; list every file",
          rules=("§4.3",)),
    Check("secrets", "§7", "canary secrets never appear in logs, messages or output",
          secrets,
          fix="keep secrets out of log fields, messages, manifests and file names; "
              "redact known values",
          rules=("§7.1", "§2.6", "§4.3")),
    Check("sigterm", "§1", "SIGTERM mid-job: non-zero exit within the grace period, nothing "
          "published", sigterm, scenarios=_STOPPED[:1], roles=_BACKUP,
          fix="handle SIGTERM: stop at the next checkpoint, remove staging, report, exit 1",
          rules=("§1.4", "§1.5", "§4.2")),
    Check("cancel", "§1", "a cancel (control stream or control.jsonl) stops the job",
          cancel, scenarios=_STOPPED[1:], roles=_BACKUP,
          fix="poll baqup:{JOB_ID}:control (Redis) or SPOOL/JOB_ID/control.jsonl",
          rules=("§1.4", "§1.5", "§3.7")),
    Check("bad-config", "§2", "an invalid config exits 64 with a structured error, nothing "
          "else", bad_config,
          scenarios=("config-missing-job-id", "config-bad-interval", "config-restore-no-source"),
          fix="validate the environment first; log every error as JSON; exit 64",
          rules=("§2.1", "§2.6", "§2.7")),
    Check("redis-outage", "§3", "Redis down: the spool is used and a successful job exits 75",
          redis_outage, scenarios=("backup-redis-down",), roles=_BACKUP,
          fix="fall back to SPOOL/JOB_ID/events.jsonl; exit 75 when the result was spooled",
          rules=("§3.8", "§3.9")),
    Check("output-permissions", "§7", "published files are not world-readable",
          output_permissions, scenarios=("backup",), roles=_BACKUP,
          fix="create staged files 0600 and directories 0700", rules=("§7.4",)),
    Check("round-trip", "§4", "backup then restore reproduces the fixture byte for byte",
          round_trip, scenarios=("restore",), roles=_RESTORE,
          fix="restore every file, directory and byte of the backup into the target",
          rules=("§4.6",)),
    Check("restore-verifies", "§4", "a restore verifies checksums: a corrupt artifact "
          "exits 65", restore_verifies, scenarios=("restore-corrupt",), roles=_RESTORE,
          fix="verify every artifact against the manifest before extracting",
          rules=("§4.6", "§7.5")),
    Check("seq", "§3", "seq starts at 0 and grows by exactly one per message", seq,
          fix="one counter from 0 for every message, incremented as each is sent",
          rules=("§3.2",)),
    Check("result-last", "§3", "the result is the last message: nothing after it",
          result_last,
          fix="stop the heartbeat thread and send the final state before the result",
          rules=("§3.6",)),
    Check("json-integers", "§0", "integers on the wire are JSON integers (12, never 12.0)",
          json_integers,
          fix="write integer fields (seq, exit_code, bytes, counters, sizes) as integers",
          rules=("§0.5",)),
    Check("log-level", "§6", "no record below BAQUP_LOG_LEVEL is written", log_level,
          fix="drop records below BAQUP_LOG_LEVEL before formatting them", rules=("§6.4",)),
    Check("staging-writes", "§4", "inside staging: artifacts complete, then the manifest, "
          "nothing written elsewhere", staging_writes, scenarios=_PUBLISHING + _STOPPED,
          roles=_BACKUP,
          fix="write only in .staging/JOB_ID/, close every artifact, write manifest.json last",
          rules=("§4.1", "§4.2")),
    Check("restore-hostile", "§4", "an archive escaping the target (.., absolute, links out) "
          "exits 65, nothing written outside", restore_hostile,
          scenarios=("restore-hostile",), roles=_RESTORE,
          fix="extract with every entry validated against the target after resolving links; "
              "refuse absolute names, .., links pointing out; exit 65",
          rules=("§4.6", "§7.2")),
    Check("rerun-finished", "§4", "a finished backup started again: exit 0, no work, nothing "
          "added to the bus", rerun_finished, scenarios=("backup",), roles=_BACKUP,
          fix="when JOB_ID/ is published and verifies, replay the spool and exit 0",
          rules=("§4.7",)),
    Check("duplicate-refused", "§4", "a second start while the first runs: exit 73, nothing "
          "of the job written", duplicate_refused, scenarios=("backup",), roles=_BACKUP,
          fix="take the job's lock before the first bus message; exit 73 without it",
          rules=("§4.7",)),
)  # fmt: skip

NOT_CHECKABLE: dict[str, str] = {
    "§0.1": "about the schema files themselves (tests/contract checks them), not an agent",
    "§0.6": "about the schema files themselves, not an agent",
    "§1.3": "states the meaning of states; §1.1 and §1.2 carry its checkable part",
    "§1.6": "a stop request inside the publication window (fsync and rename) cannot be "
    "timed from outside; the SDK's own tests cover it",
    "§2.2": "a table of variables; §2.4 and the scenarios use it",
    "§2.3": "merging an agent's own schema happens inside the agent",
    "§2.5": "a MAY: secrets as NAME_FILE are used by the scenarios, not required",
    "§2.8": "a rule for the controller, not the agent",
    "§3.5": "a MAY",
    "§4.4": "constant memory and a single pass are not observable from outside",
    "§4.5": "a MAY: partial failures need a failing source the suite cannot provide",
    "§5.2": "how exceptions map to codes is internal; §5.1 judges the codes",
    "§6.3": "a rule for readers of text logs, not the agent",
    "§6.5": "Python logging inside the agent is invisible from outside",
    "§7.3": "identifier patterns are in the schemas (bus-messages, manifest check them)",
}
"""Rules of docs/contract.md no check enforces, each with the reason (a test keeps this
list and the checks' ``rules`` covering every MUST rule)."""


BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}

__all__ = ["BY_NAME", "CHECKS", "NOT_CHECKABLE", "Check", "CheckInput", "NotApplicable"]
