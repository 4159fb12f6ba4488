"""What the suite observed while an agent ran: its messages, output snapshots, exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baqup_agent.conformance.scenarios import Scenario

if TYPE_CHECKING:
    from baqup_agent.conformance.inotify import Event
    from baqup_agent.testing import RedisServer


@dataclass
class Message:
    """One message the agent wrote to the bus, as the suite read it."""

    source: str  # "redis" or "spool"
    raw: str
    data: dict[str, Any] | None  # None when the entry is not a JSON object
    error: str  # why the entry could not be read
    seen_at: float  # time.monotonic() when the suite read it
    where: str  # stream entry id or spool line number

    @property
    def type(self) -> str | None:
        """The message's ``type`` field, when there is one."""
        return str(self.data.get("type")) if self.data and "type" in self.data else None


@dataclass
class Snapshot:
    """The published output directory as seen at one instant."""

    at: float
    files: dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)
    manifest: object  # parsed manifest.json, None when absent, "" when unreadable


@dataclass
class SuiteContext:
    """What every scenario of one suite run shares."""

    command: list[str]
    root: Path  # the sandbox
    fixture: Path
    agent_id: str
    heartbeat_interval: float
    grace_period: float
    timeout: float
    env: dict[str, str]  # --env, values may hold placeholders
    slow_env: dict[str, str]
    canaries: dict[str, str]  # variable -> canary value
    real_secrets: dict[str, str]  # variable -> its real value (passed on, searched)
    redis: RedisServer | None
    closed_port: int
    cwd: str | None = None
    compare_command: list[str] | None = None  # judges the round trip instead of byte equality


@dataclass
class Run:
    """Everything observed while one scenario ran."""

    scenario: Scenario
    job_id: str
    workdir: Path
    staging: Path
    spool: Path
    target: Path
    env: dict[str, str] = field(default_factory=dict)
    bus: str = ""  # the bus actually used ("redis" falls back to "spool" without a server)
    skipped: str = ""  # why the scenario did not run
    skip_how: str = ""  # how to make it run
    declared_na: bool = False  # skipped because the caller declared it does not apply
    restore_source: Path | None = None
    exit_code: int | None = None
    timed_out: bool = False
    # killed by the suite: still running KILL_AFTER_GRACE after the grace period that
    # followed its SIGTERM or cancel (the sigterm and cancel checks judge that run)
    killed_after_stop: bool = False
    started: float = 0.0
    ended: float = 0.0
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    running_seen_at: float | None = None
    action_at: float | None = None
    action_note: str = ""
    snapshots: list[Snapshot] = field(default_factory=list)
    staging_seen: bool = False  # .staging/JOB_ID existed at some point
    ttl_samples: list[tuple[float, int, str | None]] = field(default_factory=list)
    redis_result: str | None = None
    redis_result_ttl: int | None = None
    stream_fields: list[list[str]] = field(default_factory=list)  # field names per entry
    published_after: bool = False
    staging_left: bool = False
    fixture: Path | None = None  # what {fixture} is in this run (an enlarged copy, maybe)
    staging_events: list[Event] | None = None  # inotify's view of the staging root
    staging_events_overflowed: bool = False

    def missed_action(self, race: float) -> bool:
        """Whether the scenario's SIGTERM or cancel came too late to judge: never sent, or
        sent when the output was (all but) published, within ``race`` seconds."""
        if self.action_at is None:
            return True
        published = [s.at for s in self.snapshots if isinstance(s.manifest, dict)]
        return bool(published) and min(published) <= self.action_at + race

    @property
    def duration(self) -> float:
        """Seconds from start to exit."""
        return max(0.0, self.ended - self.started)

    @property
    def output(self) -> Path:
        """Where the output is published."""
        return self.staging / self.job_id

    def of_type(self, kind: str) -> list[Message]:
        """Messages of one type in arrival order, de-duplicated by id (a spool replayed to
        Redis holds the same message twice)."""
        seen: set[str] = set()
        out = []
        for m in self.messages:
            if m.type != kind or m.data is None:
                continue
            key = str(m.data.get("id", id(m)))
            if key not in seen:
                seen.add(key)
                out.append(m)
        return out
