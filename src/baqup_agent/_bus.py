"""The bus (contract section 3): Redis Streams, a heartbeat TTL key, a control stream,
and the filesystem spool that takes over when Redis is unreachable.

Delivery rules (docs/bus.md):

* Every message is a generated contract model, validated when built, with a uuid4
  ``id``, a per-agent ``seq`` that grows by one per message, and a UTC timestamp.
* While Redis answers, a message goes straight to Redis (no disk write on the hot
  path; progress and state changes do not wait for their reply, which is read before
  the next command). When a command fails, the message (with the one whose reply was
  pending) is appended, fsynced, to
  ``SPOOL/JOB_ID/events.jsonl`` and every later message follows it there until the
  spool has been replayed: so the order of the stream is the order of ``seq``.
* Replay sends the spooled messages in order, in pipelined batches, with their
  original ids and seq; ``replayed`` records the offset Redis has. A message whose
  command failed *after* Redis applied it is found at the stream's tail before replay
  and skipped, so the stream holds each message once; readers de-duplicate by id
  all the same.
* Without ``BAQUP_REDIS_URL`` the spool is the bus: every message goes there.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from baqup_agent._config import JobSettings, bus_environment, job_settings
from baqup_agent._control import ControlListener
from baqup_agent._errors import ConfigError, IOFailure, summarize
from baqup_agent._keys import (
    MESSAGE_FIELD,
    RESULT_TTL_SECONDS,
    JobKeys,
    job_keys,
)
from baqup_agent._redaction import REDACTOR, escape_surrogates
from baqup_agent._redis_client import (
    Backoff,
    check_redis_url,
    connect_redis,
    entry_messages,
    is_redis_error,
    pool_connection,
)
from baqup_agent._secret import Secret
from baqup_agent._spool import Spool
from baqup_agent.contract import (
    AgentState,
    Cancel,
    ExitCode,
    Heartbeat,
    HeartbeatIntent,
    Progress,
    ProgressUpdate,
    Result,
    ResultStatus,
    StateChange,
)
from baqup_agent.contract.wire import EVENTS_STREAM_MAXLEN

if TYPE_CHECKING:
    import argparse

    from baqup_agent._logger import Logger
    from baqup_agent._redis_client import RedisClient

__all__ = [
    "REPLAY_BATCH",
    "STREAM_MAXLEN",
    "AgentMessage",
    "BusClient",
    "queue_message",
    "replay_command",
    "replay_spool",
]

AgentMessage = StateChange | Heartbeat | ProgressUpdate | Result

STREAM_MAXLEN = EVENTS_STREAM_MAXLEN
"""Approximate cap of the events stream: far above a job's traffic (a heartbeat every
10 s for a week is 60,480 entries) while bounding a runaway agent's memory use."""
REPLAY_BATCH = 500

SEND_BUDGET_MAX = 1.0
"""Longest time, in seconds, a send may wait for Redis in the job's or the heartbeat's
thread: a quarter of the heartbeat interval, at least 0.1 s and at most this (and
never more than ``command_timeout``). Past it the message goes to the spool and a
background thread takes over: reconnecting, replaying, logging the outage."""


def _reveal(value: Secret | None) -> str | None:
    """A secret setting as text (only for connecting); empty counts as unset."""
    return (value.reveal() or None) if value is not None else None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BusClient:
    """The agent's side of the bus for one job.

    ``config`` is the job's ``JobSettings``, or the ``Config`` ``load_config``
    returns (its ``settings`` are used; another mapping of the base variables is
    validated first, ``ConfigError`` when it does not fit): the ids, the optional
    Redis URL and password, the spool directory, the heartbeat interval and TTL. The
    ``send_*`` methods are thread-safe and never raise because Redis is down; they
    raise ``IOFailure`` only when a message could be written neither to Redis nor to
    the spool.
    """

    def __init__(
        self,
        config: JobSettings | Mapping[str, Any],
        logger: Logger,
        *,
        spool_dir: str | Path | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        result_timeout: float = 5.0,
        stream_maxlen: int = STREAM_MAXLEN,
        cluster: bool | None = None,
    ) -> None:
        # validated (the ids fit the patterns: the job id becomes a key and a directory)
        self.settings = settings = job_settings(config)
        self.job_id = settings.job_id
        self.agent_id = settings.agent_id
        self.keys = job_keys(self.job_id)
        self.heartbeat_interval = settings.heartbeat_interval
        self._log = logger
        self._url = _reveal(settings.redis_url)
        self._password = _reveal(settings.redis_password)
        self._register_secrets()
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self.send_budget = min(
            command_timeout, max(0.1, min(SEND_BUDGET_MAX, self.heartbeat_interval / 4))
        )
        """Seconds a send waits for Redis before it spools (see ``SEND_BUDGET_MAX``)."""
        self._result_timeout = result_timeout
        self._maxlen = stream_maxlen
        self._cluster = cluster

        self.spool = Spool(Path(spool_dir or settings.spool_dir), self.job_id)

        # One message at a time: seq order == delivery order. Held for at most one
        # round trip of ``send_budget``; never while connecting or replaying.
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()  # one replay at a time (its own client)
        self._redis: RedisClient | None = None  # live sends, socket timeout send_budget
        self._replay_redis: RedisClient | None = None  # replays, command_timeout
        self._conn: Any = None  # see _send: the connection of unacknowledged sends
        self._in_flight: bytes | None = None
        self._degraded = False  # True while the spool holds messages Redis lacks
        self._drained = threading.Event()  # set while not degraded
        self._drained.set()
        self._replay_wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._backoff = Backoff()
        self._outage_logged = False
        self._sealed = False  # the result is out: nothing may follow it
        self._result_spooled = False
        self.result_delivered = False
        """Whether the result reached the controller (Redis, or the spool in spool-only
        mode). ``close()`` updates it when its final replay delivers a spooled result."""

        self._stop = threading.Event()
        self._control: ControlListener | None = None

        if self._url is not None:
            self._start_redis()
        last = self.spool.last_seq()
        self._seq = 0 if last is None else last + 1
        self._seq = max(self._seq, self._stream_next_seq())

    # -- public API --------------------------------------------------------------

    @property
    def redis_configured(self) -> bool:
        """Whether a Redis URL was given (otherwise the spool alone is the bus)."""
        return self._url is not None

    @property
    def connected(self) -> bool:
        """Whether messages currently go to Redis (False while spooling)."""
        return self._redis is not None and not self._degraded

    @property
    def heartbeat_ttl(self) -> float:
        """Seconds the heartbeat key lives: BAQUP_HEARTBEAT_TTL or a number of intervals."""
        return self.settings.heartbeat_ttl()

    def send_state_change(
        self,
        to_state: AgentState,
        from_state: AgentState | None = None,
        reason: str | None = None,
    ) -> None:
        """Report a lifecycle transition."""
        self._publish(
            lambda head: StateChange(
                **head,
                type="state_change",
                to_state=to_state,
                from_state=from_state,
                reason=_redact(reason),
            )
        )

    def send_heartbeat(
        self,
        state: AgentState,
        intent: HeartbeatIntent,
        progress: Progress,
        extend_seconds: float | None = None,
        *,
        interval: float | None = None,
    ) -> None:
        """Send a heartbeat and refresh the heartbeat key's TTL.

        ``interval`` is the sender's real interval (default BAQUP_HEARTBEAT_INTERVAL);
        the TTL is BAQUP_HEARTBEAT_TTL, or three intervals when that is unset.
        """
        interval = interval or self.heartbeat_interval
        ttl = self.settings.heartbeat_ttl(interval)
        self._publish(
            lambda head: Heartbeat(
                **head,
                type="heartbeat",
                state=state,
                intent=intent,
                extend_seconds=extend_seconds,
                interval_seconds=interval,
                ttl_seconds=ttl,
                progress=progress,
            )
        )

    def send_progress(self, progress: Progress, message: str | None = None) -> None:
        """Report progress counters, with an optional (redacted) message."""
        self._publish(
            lambda head: ProgressUpdate(
                **head, type="progress", progress=progress, message=_redact(message)
            )
        )

    def send_result(
        self,
        status: ResultStatus,
        exit_code: ExitCode,
        retryable: bool,
        duration_seconds: float,
        *,
        error: str | None = None,
        output_path: str | None = None,
        artifacts: int = 0,
        bytes: int = 0,
        timeout: float | None = None,
    ) -> bool:
        """Send the final result: to the events stream and the result key (kept 7 days).

        Returns True when it was delivered (to Redis, or to the spool in spool-only
        mode) and False when Redis is configured but the result could only be spooled,
        after retrying with backoff for ``timeout`` seconds (default ``result_timeout``):
        the agent then exits 75 (COMPLETED_UNREPORTED). Never raises for bus failures.
        """
        try:
            delivered = self._publish(
                lambda head: Result(
                    **head,
                    type="result",
                    status=status,
                    exit_code=exit_code,
                    retryable=retryable,
                    duration_seconds=duration_seconds,
                    error=_redact(error),
                    output_path=_redact(output_path),
                    artifacts=artifacts,
                    bytes=bytes,
                )
            )
        except IOFailure:
            return False  # _publish logged it; the exit code (75) says the rest
        if not delivered:
            self._result_spooled = True
            delivered = self._retry_replay(self._result_timeout if timeout is None else timeout)
        self.result_delivered = delivered
        return delivered

    def has_result(self) -> bool | None:
        """Whether the controller has this job's result already (a rerun, contract 4.7).

        True: the result key is in Redis (spool-only mode: a result is in the spool).
        None: Redis cannot be reached but a result waits in the spool for replay.
        False: nobody has one.
        """
        if self._url is None:
            return self.spool.holds_result()
        if self._degraded:
            self._retry_replay(self._result_timeout)
        client = self._redis
        if not self._degraded and client is not None:
            try:
                return bool(client.exists(self.keys.result))
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                self._outage(exc)
        return None if self.spool.holds_result(pending_only=True) else False

    def on_cancel(self, callback: Callable[[Cancel], None]) -> None:
        """Call ``callback(cancel)`` for each valid cancel addressed to this job.

        Starts, once, a daemon thread reading the control stream from its beginning
        (so a cancel sent before the agent listened is seen) and ``control.jsonl`` in
        the spool. Invalid or foreign entries are logged and ignored.
        """
        if self._control is None:
            self._control = ControlListener(
                self.job_id,
                self.keys.control,
                self.spool.control_path,
                self._log,
                self._stop,
                None if self._url is None else self._connect,
            )
        self._control.add(callback)

    def close(self) -> None:
        """Stop the listener, make a last replay attempt, close connections and files."""
        self._stop.set()
        self._replay_wake.set()
        if self._control is not None:
            self._control.close(self._command_timeout)
        if self._replayer is not None:  # a replayer stuck on a hung Redis is left behind
            self._replayer.join(self.send_budget)
        with self._lock:
            self._flush()
        if self._url is not None and self.spool.has_pending:
            self._replay_once(blocking=False)
        with self._lock:
            if self._result_spooled and not self.spool.has_pending:
                self.result_delivered = True
            if self._conn is not None:
                self._conn.disconnect()
            for client in (self._redis, self._replay_redis):
                if client is not None:
                    client.close()
            self.spool.close()

    def flush(self) -> None:
        """Wait until Redis has acknowledged every message sent so far (or spool it)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        try:
            self._complete_in_flight()
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            self._degrade(exc)

    # -- sending -----------------------------------------------------------------

    def _publish(self, build: Callable[[dict[str, Any]], AgentMessage]) -> bool:
        """Build, validate and deliver one message; True when Redis (or the spool in
        spool-only mode) has it, False when it waits in the spool."""
        with self._lock:
            if self._sealed:  # e.g. a heartbeat racing a forced exit's result
                self._log.debug("bus message after the result dropped")
                return False
            message = build(
                {
                    "id": uuid.uuid4(),
                    "seq": self._seq,
                    "job_id": self.job_id,
                    "agent_id": self.agent_id,
                    "timestamp": _now(),
                }
            )
            self._seq += 1  # after validation: a rejected message does not leave a gap
            self._sealed = isinstance(message, Result)
            data = message.model_dump_json(exclude_none=True).encode()
            if self._url is None:
                self._spool_append(data)
                return True
            if self._degraded or self._redis is None:
                self._spool_append(data)  # after the spooled ones, never before them
                self._replay_wake.set()
                return False
            try:
                self._complete_in_flight()
                self._send(message, data)
                return True
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                self._degrade(exc, data)
            return False

    def _degrade(self, exc: BaseException, data: bytes | None = None) -> None:
        """A command failed (lock held): spool the unacknowledged message and ``data``
        (in seq order) and wake the replayer, which retries at once (a stale pooled
        connection is the usual cause) and logs the outage when that fails too."""
        self._log.debug("Redis command failed; spooling", error=summarize(exc))
        self._set_degraded(True)
        if self._in_flight is not None:  # applied or not: the replay's tail check decides
            self._spool_append(self._in_flight)
            self._in_flight = None
        if data is not None:
            self._spool_append(data)
        self._start_replayer()

    def _set_degraded(self, degraded: bool) -> None:
        self._degraded = degraded
        if degraded:
            self._drained.clear()
        else:
            self._drained.set()

    def _spool_append(self, data: bytes) -> None:
        try:
            self.spool.append(data)
        except OSError as exc:
            self._log.error(
                "bus message lost: Redis and the spool both failed",
                exc=exc,
                spool=str(self.spool.events_path),
            )
            raise IOFailure(f"cannot write the bus spool {self.spool.events_path}: {exc}") from exc

    def _send(self, message: AgentMessage, data: bytes) -> None:
        """One message to Redis: XADD, plus the heartbeat or result key.

        Progress and state changes do not wait for their reply: it is read before the
        next command (``_complete_in_flight``), so building the next message overlaps
        the round trip. At most one message is unacknowledged, already in the socket,
        and every other command waits for its reply: the order stays that of ``seq``.
        Heartbeats and the result are acknowledged before the call returns.
        """
        assert self._redis is not None
        if isinstance(message, (ProgressUpdate, StateChange)):
            conn = self._deferred_connection()
            if conn is not None:
                conn.send_command(
                    "XADD", self.keys.events, "MAXLEN", "~", self._maxlen, "*", MESSAGE_FIELD, data
                )
                self._in_flight = data
                return
        pipe = self._redis.pipeline(transaction=False)
        self._queue(pipe, message.type, data)
        if isinstance(message, Heartbeat):
            pipe.set(self.keys.heartbeat, data, px=max(1, int(message.ttl_seconds * 1000)))
        pipe.execute()

    def _deferred_connection(self) -> Any:
        """The connection kept for unacknowledged sends (None on a cluster: its client
        routes each command itself, so it takes the synchronous path)."""
        from redis import Redis

        if self._conn is None and isinstance(self._redis, Redis):
            self._conn = pool_connection(self._redis)
        return self._conn

    def _complete_in_flight(self) -> None:
        """Read the reply of the unacknowledged message, if any (raises its error)."""
        if self._in_flight is None:
            return
        try:
            self._conn.read_response()
        except BaseException:
            self._conn.disconnect()  # a late reply must not be taken for the next one
            raise
        self._in_flight = None

    def _queue(self, pipe: Any, kind: str, data: bytes) -> None:
        """Queue one message's stream entry (and the result key) on a pipeline."""
        queue_message(pipe, self.keys, kind, data, self._maxlen)

    # -- connection, outage and replay --------------------------------------------

    def _start_redis(self) -> None:
        try:
            check_redis_url(self._url or "")
        except ValueError as exc:  # a URL redis-py cannot use: a config error (exit 64)
            raise ConfigError(f"BAQUP_REDIS_URL: {exc}") from exc
        if self.spool.has_pending:  # a previous run of this job left messages behind
            self._set_degraded(True)
            if not self._replay_once():  # at once: a rerun needs to know what Redis has
                self._start_replayer()
            return
        try:
            self._redis = self._connect(timeout=self.send_budget)
        except ValueError as exc:  # e.g. a /DB on a cluster
            raise ConfigError(f"BAQUP_REDIS_URL: {exc}") from exc
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            self._set_degraded(True)
            self._outage(exc)
            self._backoff.failed()
            self._start_replayer()

    def _connect(self, block_seconds: float = 0.0, *, timeout: float | None = None) -> RedisClient:
        """A new client; its command timeout (``timeout``, default ``command_timeout``)
        allows for a command blocking ``block_seconds``."""
        assert self._url is not None
        return connect_redis(
            self._url,
            password=self._password,
            connect_timeout=min(self._connect_timeout, timeout or self._connect_timeout),
            command_timeout=(timeout or self._command_timeout) + block_seconds,
            cluster=self._cluster,
        )

    def _register_secrets(self) -> None:
        """Make the URL and password redactable even when passed as plain strings."""
        for value in (self._url, self._password, urlsplit(self._url or "").password):
            if value:
                Secret(value)

    def _outage(self, exc: BaseException) -> None:
        """Log a Redis failure: once per outage at WARN (ERROR for bad credentials)."""
        from redis.exceptions import AuthenticationError, AuthorizationError

        if self._outage_logged:
            self._log.debug("Redis still unreachable", error=summarize(exc))
            return
        self._outage_logged = True
        where = str(self.spool.events_path)
        if isinstance(exc, (AuthenticationError, AuthorizationError)):
            self._log.error(
                "Redis refused the credentials (check the user and password of "
                "BAQUP_REDIS_URL or BAQUP_REDIS_PASSWORD); spooling bus messages",
                error=summarize(exc),
                spool=where,
            )
        else:
            self._log.warn(
                "Redis unreachable; spooling bus messages until it is back",
                error=summarize(exc),
                spool=where,
            )

    def _start_replayer(self) -> None:
        """Start the background replayer once (lock held or in ``__init__``)."""
        if self._replayer is None and not self._stop.is_set():
            self._replayer = threading.Thread(
                target=self._replay_loop, name=f"baqup-replay-{self.job_id}", daemon=True
            )
            self._replayer.start()
        self._replay_wake.set()

    def _replay_loop(self) -> None:
        """The replayer thread: while degraded, replay with backoff, until ``close()``."""
        while not self._stop.is_set():
            wait = None if not self._degraded else self._backoff.remaining()
            if wait is None or wait > 0:
                self._replay_wake.wait(wait)
                self._replay_wake.clear()
                continue
            try:
                self._replay_once()
            except Exception as exc:  # a bug, not an outage: keep the thread alive
                self._log.error("bus replay failed", exc=exc)
                self._backoff.failed()

    def _replay_once(self, *, blocking: bool = True) -> bool:
        """One replay attempt: send the spool's pending messages to Redis in order, then
        go back to live sends. Never holds the send lock across a round trip.

        The first failure of an outage is logged at WARN (a stale connection that
        works again at once is no outage: DEBUG); the recovery at INFO. Without
        ``blocking``, gives up at once when another replay is under way.
        """
        if not self._replay_lock.acquire(blocking=blocking):
            return False
        try:
            if not self._degraded:
                return True
            sent = 0
            try:
                if self._replay_redis is None:
                    self._replay_redis = self._connect()
                while True:
                    sent += self._replay_pending(self._replay_redis)
                    if self._redis is None:
                        self._redis = self._connect(timeout=self.send_budget)
                    with self._lock:  # new messages may have been spooled meanwhile
                        if not self.spool.has_pending:
                            self._set_degraded(False)
                            break
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                self._outage(exc)
                self._backoff.failed()
                return False
            self._backoff.reset()
            if self._outage_logged:
                self._log.info("Redis reachable; replayed the spooled bus messages", replayed=sent)
            else:
                self._log.debug("reconnected to Redis", replayed=sent)
            self._outage_logged = False
            return True
        finally:
            self._replay_lock.release()

    def _replay_pending(self, client: RedisClient) -> int:
        """Replay in batches; return how many messages were sent."""
        return replay_spool(client, self.spool, self.keys, self._maxlen, refresh_heartbeat=True)

    def _retry_replay(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the replayer to drain the spool; True when it did."""
        if not self._degraded:
            return True
        with self._lock:
            self._start_replayer()
        self._backoff.reset()  # the result is waiting: retry now, then from the start
        self._replay_wake.set()
        return self._drained.wait(timeout) and not self._degraded

    def _stream_next_seq(self) -> int:
        """One past the highest seq this agent has in the stream (0 when none)."""
        if self._redis is None or self._degraded:
            return 0
        try:
            tail = entry_messages(self._redis.xrevrange(self.keys.events, count=REPLAY_BATCH))
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            return 0
        seqs = [
            head["seq"]
            for head in map(_head, (raw for _, raw in tail))
            if head.get("agent_id") == self.agent_id and isinstance(head.get("seq"), int)
        ]
        return max(seqs, default=-1) + 1


def queue_message(pipe: Any, keys: JobKeys, kind: str, data: bytes, maxlen: int) -> None:
    """Queue one message's stream entry (and, for a result, the result key and the
    streams' expiry) on a pipeline."""
    pipe.xadd(keys.events, {MESSAGE_FIELD: data}, maxlen=maxlen, approximate=True)
    if kind == "result":
        pipe.set(keys.result, data, ex=RESULT_TTL_SECONDS)
        pipe.expire(keys.events, RESULT_TTL_SECONDS)
        pipe.expire(keys.control, RESULT_TTL_SECONDS)


def replay_spool(
    client: RedisClient,
    spool: Spool,
    keys: JobKeys,
    maxlen: int = STREAM_MAXLEN,
    *,
    refresh_heartbeat: bool = False,
) -> int:
    """Send ``spool``'s pending messages to Redis in order, in pipelined batches,
    recording each batch as replayed; return how many were sent. Raises the Redis
    error of a failed batch (the batches before it stay recorded).

    ``refresh_heartbeat`` (a live agent): the heartbeat key is set from the batch's
    last heartbeat, so a live job does not look dead after an outage."""
    sent = 0
    # A message whose command failed may still have been applied (reply lost);
    # it can only be at the tail of the stream, so look there once and skip it.
    tail = entry_messages(client.xrevrange(keys.events, count=REPLAY_BATCH))
    in_stream = {_head(raw).get("id") for _, raw in tail} - {None}
    while batch := spool.pending(REPLAY_BATCH):
        pipe = client.pipeline(transaction=False)
        queued = 0
        beat: tuple[bytes, float] | None = None
        for _, line in batch:
            head = _head(line)  # an unparsable line is replayed as is; readers drop it
            ttl = head.get("ttl_seconds")
            if head.get("type") == "heartbeat" and isinstance(ttl, (int, float)):
                beat = (line, float(ttl))
            if head.get("id") in in_stream:
                continue
            queue_message(pipe, keys, str(head.get("type")), line, maxlen)
            queued += 1
        refresh = refresh_heartbeat and beat is not None
        if refresh and beat is not None:
            pipe.set(keys.heartbeat, beat[0], px=max(1, int(beat[1] * 1000)))
        if queued or refresh:
            pipe.execute()
        spool.mark_replayed(batch[-1][0])
        sent += queued
    return sent


def replay_command(args: argparse.Namespace) -> int:
    """``baqup-agent replay JOB_ID --spool-dir DIR --redis-url URL``: deliver a job's
    spool to Redis once, without running the agent (docs/bus.md#replay).

    Exit 0 when Redis has every spooled message (also when there was nothing to
    replay), 64 for bad arguments, 69 when Redis cannot be reached or fails midway
    (what was delivered stays recorded: run it again), 74 when the spool cannot be
    read or its ``replayed`` offset written.
    """
    import sys

    from baqup_agent._paths import is_job_id

    def say(text: str, stream: Any = sys.stdout) -> None:
        print(f"baqup-agent replay: {REDACTOR.redact(text)}", file=stream, flush=True)

    env = bus_environment()
    url = args.redis_url or env.redis_url
    password = env.redis_password
    for value in (url, password, urlsplit(url or "").password):
        if value:
            Secret(value)  # redacted from every line below
    root = Path(args.spool_dir)
    if url is None or not is_job_id(args.job_id) or not root.is_dir():
        problem = (
            "give --redis-url (or set BAQUP_REDIS_URL)"
            if url is None
            else f"invalid job id {args.job_id!r}"
            if not is_job_id(args.job_id)
            else f"--spool-dir {root} is not a directory"
        )
        say(problem, sys.stderr)
        return int(ExitCode.USAGE_CONFIG_ERROR)
    try:
        check_redis_url(url)
    except ValueError as exc:
        say(f"the Redis URL cannot be used: {exc}", sys.stderr)
        return int(ExitCode.USAGE_CONFIG_ERROR)
    try:
        spool = Spool(root, args.job_id)
    except OSError as exc:
        say(f"cannot read the spool of job {args.job_id}: {summarize(exc)}", sys.stderr)
        return int(ExitCode.IO_ERROR)
    if not spool.has_pending:
        say(f"job {args.job_id}: nothing to replay (no unreplayed message in {spool.path})")
        return int(ExitCode.SUCCESS)
    from redis.exceptions import RedisError

    client: RedisClient | None = None
    try:
        client = connect_redis(url, password=password)
        sent = replay_spool(client, spool, job_keys(args.job_id))
    except ValueError as exc:  # e.g. a /DB on a cluster
        say(f"the Redis URL cannot be used: {exc}", sys.stderr)
        return int(ExitCode.USAGE_CONFIG_ERROR)
    except RedisError as exc:  # redis-py wraps socket errors in its own
        say(f"Redis unreachable: {summarize(exc)}; run replay again later", sys.stderr)
        return int(ExitCode.RESOURCE_UNAVAILABLE)
    except OSError as exc:
        say(f"cannot use the spool {spool.path}: {summarize(exc)}", sys.stderr)
        return int(ExitCode.IO_ERROR)
    finally:
        spool.close()
        if client is not None:
            client.close()
    say(f"job {args.job_id}: replayed {sent} message(s) to Redis")
    return int(ExitCode.SUCCESS)


def _redact(text: str | None) -> str | None:
    """Free text of a message: redacted, and encodable even when it holds a non-UTF-8 path."""
    return None if text is None else REDACTOR.redact(escape_surrogates(text))


def _head(raw: bytes | None) -> dict[str, Any]:
    """A message JSON as a dict, without validation ({} when it is not an object)."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
