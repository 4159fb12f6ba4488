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
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from pydantic import ValidationError

from baqup_agent.contract import (
    AgentState,
    BaseConfig,
    BusMessage,
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
from baqup_agent.errors import ConfigError, IOFailure, summarize
from baqup_agent.keys import MESSAGE_FIELD, RESULT_TTL_SECONDS, default_spool_dir, job_keys
from baqup_agent.redaction import REDACTOR
from baqup_agent.secret import Secret
from baqup_agent.spool import Spool, read_lines

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    from baqup_agent.logger import Logger

    RedisClient = Redis | RedisCluster

AgentMessage = StateChange | Heartbeat | ProgressUpdate | Result

STREAM_MAXLEN = 100_000
"""Approximate cap of the events stream: far above a job's traffic (a heartbeat every
10 s for a week is 60,480 entries) while bounding a runaway agent's memory use."""
REPLAY_BATCH = 500
CONTROL_BLOCK_MS = 1000
CONTROL_POLL_SECONDS = 0.25


def _reveal(value: Any) -> str | None:
    """A config value as text; Secrets are revealed (only for connecting)."""
    if value is None or value == "":
        return None
    if isinstance(value, Secret):
        return value.reveal()
    return str(value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Backoff:
    """Exponential backoff between attempts: ``initial`` doubling up to ``cap`` seconds."""

    def __init__(self, initial: float = 0.05, cap: float = 5.0) -> None:
        self.initial = initial
        self.cap = cap
        self.delay = 0.0
        self._next = 0.0

    def ready(self) -> bool:
        """Whether the next attempt is due."""
        return time.monotonic() >= self._next

    def failed(self) -> float:
        """Record a failed attempt; return the delay before the next one."""
        self.delay = min(self.cap, max(self.initial, self.delay * 2))
        self._next = time.monotonic() + self.delay
        return self.delay

    def reset(self) -> None:
        """Record a success: the next failure starts again at ``initial``."""
        self.delay = 0.0
        self._next = 0.0


def connect_redis(
    url: str,
    *,
    password: str | None = None,
    connect_timeout: float = 2.0,
    command_timeout: float = 5.0,
    cluster: bool | None = None,
) -> RedisClient:
    """A connected redis-py client for ``url``, a ``RedisCluster`` on a cluster.

    URL forms: ``redis://`` and ``rediss://`` (TLS; ``?ssl_cert_reqs=``,
    ``?ssl_ca_certs=`` as redis-py reads them), ``user:password@`` (ACL), ``/DB``;
    ``password`` is used when the URL has none. Cluster mode is taken from the
    ``cluster=yes|no`` URL option or ``cluster``, else detected with ``INFO cluster``.
    redis-py's own retries are off: the bus decides when to retry, so a command is
    never silently sent twice. Raises ``redis.RedisError`` when Redis does not answer.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    forced = [v for k, v in query if k == "cluster"]
    if forced:
        cluster = forced[-1].lower() in ("1", "yes", "true", "on")
        parts = parts._replace(query=urlencode([(k, v) for k, v in query if k != "cluster"]))
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if password is not None:
        options["password"] = password  # the URL's own password wins (redis-py rule)
    if cluster is None:
        probe = redis.Redis.from_url(urlunsplit(parts), **options)
        try:
            cluster = _cluster_enabled(probe)
            if not cluster:
                return probe
        except BaseException:
            probe.close()
            raise
        probe.close()
    if not cluster:
        client: RedisClient = redis.Redis.from_url(urlunsplit(parts), **options)
        client.ping()
        return client
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0; drop the /DB of the URL")
    return RedisCluster.from_url(urlunsplit(parts._replace(path="")), **options)


def _cluster_enabled(client: Redis) -> bool:
    """Whether the server runs in cluster mode (False when INFO is not allowed)."""
    from redis.exceptions import NoPermissionError

    try:
        info = client.info("cluster")
    except NoPermissionError:
        client.ping()  # an ACL user without INFO: still prove the connection works
        return False
    return bool(info.get("cluster_enabled"))


class BusClient:
    """The agent's side of the bus for one job.

    ``config`` is the mapping ``load_config`` returns (values may be ``Secret``):
    ``BAQUP_JOB_ID``, ``BAQUP_AGENT_ID``, optional ``BAQUP_REDIS_URL`` and
    ``BAQUP_REDIS_PASSWORD``, ``BAQUP_STAGING_DIR`` / ``BAQUP_SPOOL_DIR``,
    ``BAQUP_HEARTBEAT_INTERVAL`` and ``BAQUP_HEARTBEAT_TTL`` (default: three
    intervals). The ``send_*`` methods are thread-safe and never raise because Redis
    is down; they raise ``IOFailure`` only when a message could be written neither to
    Redis nor to the spool.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        logger: Logger,
        *,
        spool_dir: str | Path | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        result_timeout: float = 5.0,
        stream_maxlen: int = STREAM_MAXLEN,
        cluster: bool | None = None,
    ) -> None:
        self.job_id = str(config["BAQUP_JOB_ID"])
        self.agent_id = str(config["BAQUP_AGENT_ID"])
        self._check_ids()  # the job id becomes a key and a spool directory name
        self.keys = job_keys(self.job_id)
        self.heartbeat_interval = float(
            config.get("BAQUP_HEARTBEAT_INTERVAL")
            or BaseConfig.model_fields["BAQUP_HEARTBEAT_INTERVAL"].default
        )
        ttl = config.get("BAQUP_HEARTBEAT_TTL")
        self._heartbeat_ttl = float(ttl) if ttl else None
        self._log = logger
        self._url = _reveal(config.get("BAQUP_REDIS_URL"))
        self._password = _reveal(config.get("BAQUP_REDIS_PASSWORD"))
        self._register_secrets()
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._result_timeout = result_timeout
        self._maxlen = stream_maxlen
        self._cluster = cluster

        root = spool_dir or default_spool_dir(
            _reveal(config.get("BAQUP_SPOOL_DIR")),
            _reveal(config.get("BAQUP_STAGING_DIR"))
            or BaseConfig.model_fields["BAQUP_STAGING_DIR"].default,
        )
        self.spool = Spool(Path(str(root)), self.job_id)

        self._lock = threading.Lock()  # one message at a time: seq order == delivery order
        self._redis: RedisClient | None = None
        self._conn: Any = None  # see _send: the connection of unacknowledged sends
        self._in_flight: bytes | None = None
        self._degraded = False  # True while the spool holds messages Redis lacks
        self._backoff = Backoff()
        self._outage_logged = False
        self._result_spooled = False
        self.result_delivered = False
        """Whether the result reached the controller (Redis, or the spool in spool-only
        mode). ``close()`` updates it when its final replay delivers a spooled result."""

        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_client: RedisClient | None = None
        self._callbacks: list[Callable[[Cancel], None]] = []
        self._seen_cancels: set[uuid.UUID] = set()

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
        """Seconds the heartbeat key lives: BAQUP_HEARTBEAT_TTL or three intervals."""
        return self._heartbeat_ttl or 3 * self.heartbeat_interval

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
        ttl = self._heartbeat_ttl or 3 * interval
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
                    output_path=output_path,
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

    def on_cancel(self, callback: Callable[[Cancel], None]) -> None:
        """Call ``callback(cancel)`` for each valid cancel addressed to this job.

        Starts, once, a daemon thread reading the control stream from its beginning
        (so a cancel sent before the agent listened is seen) and ``control.jsonl`` in
        the spool. Invalid or foreign entries are logged and ignored.
        """
        self._callbacks.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(
                target=self._listen, name=f"baqup-control-{self.job_id}", daemon=True
            )
            self._listener.start()

    def close(self) -> None:
        """Stop the listener, make a last replay attempt, close connections and files."""
        self._stop.set()
        listener_client = self._listener_client
        if listener_client is not None:
            listener_client.close()  # wakes the listener's blocked XREAD
        if self._listener is not None:
            self._listener.join(timeout=CONTROL_BLOCK_MS / 1000 + self._command_timeout)
        with self._lock:
            self._flush()
            if self._url is not None and self.spool.has_pending:
                self._replay()
            if self._result_spooled and not self.spool.has_pending:
                self.result_delivered = True
            if self._conn is not None:
                self._conn.disconnect()
            if self._redis is not None:
                self._redis.close()
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
            data = message.model_dump_json(exclude_none=True).encode()
            if self._url is None:
                self._spool_append(data)
                return True
            if self._degraded or self._redis is None:
                self._spool_append(data)  # after the spooled ones, never before them
                if self._backoff.ready():
                    self._replay()
                return not self._degraded
            try:
                self._complete_in_flight()
                self._send(message, data)
                return True
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                self._degrade(exc, data)
            return not self._degraded

    def _degrade(self, exc: BaseException, data: bytes | None = None) -> None:
        """A command failed: spool the unacknowledged message and ``data`` (in seq
        order) and try a replay at once (a stale pooled connection is the usual cause)."""
        self._outage(exc)
        self._degraded = True
        if self._in_flight is not None:  # applied or not: the replay's tail check decides
            self._spool_append(self._in_flight)
            self._in_flight = None
        if data is not None:
            self._spool_append(data)
        self._replay()

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
            self._conn = self._redis.connection_pool.get_connection()
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
        keys = self.keys
        pipe.xadd(keys.events, {MESSAGE_FIELD: data}, maxlen=self._maxlen, approximate=True)
        if kind == "result":
            pipe.set(keys.result, data, ex=RESULT_TTL_SECONDS)
            pipe.expire(keys.events, RESULT_TTL_SECONDS)
            pipe.expire(keys.control, RESULT_TTL_SECONDS)

    # -- connection, outage and replay --------------------------------------------

    def _start_redis(self) -> None:
        try:
            self._redis = self._connect()
        except ValueError as exc:  # a URL redis-py cannot use: a config error (exit 64)
            raise ConfigError(f"BAQUP_REDIS_URL: {exc}") from exc
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            self._degraded = True
            self._outage(exc)
            self._backoff.failed()
            return
        if self.spool.has_pending:  # a previous run of this job left messages behind
            self._degraded = True
            self._replay()

    def _connect(self) -> RedisClient:
        assert self._url is not None
        return connect_redis(
            self._url,
            password=self._password,
            connect_timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            cluster=self._cluster,
        )

    def _check_ids(self) -> None:
        """Raise ConfigError unless the job and agent ids fit the contract's patterns."""
        try:
            StateChange(
                id=uuid.uuid4(),
                seq=0,
                type="state_change",
                job_id=self.job_id,
                agent_id=self.agent_id,
                timestamp=_now(),
                to_state=AgentState.INITIALIZING,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid bus identifiers: {problems}") from exc

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

    def _replay(self) -> None:
        """Send the spool's pending messages to Redis in order (lock held).

        On success the client leaves degraded mode; on failure it stays there and the
        next attempt waits for the backoff.
        """
        try:
            if self._redis is None:
                self._redis = self._connect()
            sent = self._replay_pending(self._redis)
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            self._outage(exc)
            self._backoff.failed()
            return
        self._degraded = False
        self._backoff.reset()
        if self._outage_logged or sent:
            self._log.info("Redis reachable; replayed the spooled bus messages", replayed=sent)
        self._outage_logged = False

    def _replay_pending(self, client: RedisClient) -> int:
        """Replay in batches; return how many messages were sent."""
        sent = 0
        # A message whose command failed may still have been applied (reply lost);
        # it can only be at the tail of the stream, so look there once and skip it.
        tail = entry_messages(client.xrevrange(self.keys.events, count=REPLAY_BATCH))
        in_stream = {_head(raw).get("id") for _, raw in tail} - {None}
        while batch := self.spool.pending(REPLAY_BATCH):
            pipe = client.pipeline(transaction=False)
            queued = 0
            for _, line in batch:
                head = _head(line)  # an unparsable line is replayed as is; readers drop it
                if head.get("id") in in_stream:
                    continue
                self._queue(pipe, str(head.get("type")), line)
                queued += 1
            if queued:
                pipe.execute()
            self.spool.mark_replayed(batch[-1][0])
            sent += queued
        return sent

    def _retry_replay(self, timeout: float) -> bool:
        """Retry the replay with backoff for up to ``timeout`` s; True when drained."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._degraded:
                    return True
                if self._backoff.ready():
                    self._replay()
                    if not self._degraded:
                        return True
            wait = min(self._backoff.delay or self._backoff.initial, deadline - time.monotonic())
            if wait <= 0:
                return False
            if self._stop.wait(wait):
                return False

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

    # -- control stream --------------------------------------------------------------

    def _listen(self) -> None:
        """The control listener thread: XREAD BLOCK from 0, and control.jsonl."""
        last_id = "0-0"
        file_offset = 0
        backoff = Backoff(initial=0.1)
        logged = False
        while not self._stop.is_set():
            file_offset = self._poll_control_file(file_offset)
            if self._url is None:
                self._stop.wait(CONTROL_POLL_SECONDS)
                continue
            try:
                if self._listener_client is None:
                    client = connect_redis(
                        self._url,
                        password=self._password,
                        connect_timeout=self._connect_timeout,
                        command_timeout=self._command_timeout + CONTROL_BLOCK_MS / 1000,
                        cluster=self._cluster,
                    )
                    self._listener_client = client
                    if self._stop.is_set():  # close() ran while we connected
                        client.close()
                        break
                response = self._listener_client.xread(
                    {self.keys.control: last_id}, count=100, block=CONTROL_BLOCK_MS
                )
                backoff.reset()
                logged = False
            except Exception as exc:
                if self._stop.is_set():
                    break
                if not is_redis_error(exc):
                    self._log.error("control listener failed", exc=exc)
                elif not logged:
                    self._log.warn("control stream unreachable; retrying", error=summarize(exc))
                logged = True
                self._stop.wait(backoff.failed())
                continue
            for _, entries in cast(Any, response) or ():
                for entry_id, raw in entry_messages(entries):
                    last_id = entry_id
                    self._handle_control(raw, f"stream entry {entry_id}")

    def _poll_control_file(self, offset: int) -> int:
        try:
            lines, offset = read_lines(self.spool.control_path, offset)
        except OSError as exc:  # unreadable: the Redis control stream may still work
            self._log.debug("cannot read control.jsonl", error=summarize(exc))
            return offset
        for end, line in lines:
            self._handle_control(line, f"{self.spool.control_path}@{end}")
        return offset

    def _handle_control(self, raw: bytes | None, where: str) -> None:
        """Validate one control entry and dispatch a cancel; log anything else."""
        if raw is None:
            self._log.warn("ignored a control entry without a msg field", entry=where)
            return
        try:
            message = BusMessage.model_validate_json(raw).root
        except ValidationError as exc:
            self._log.warn(
                "ignored an invalid control message",
                entry=where,
                errors=exc.error_count(),
                first_error=exc.errors()[0]["msg"] if exc.error_count() else "",
            )
            return
        if not isinstance(message, Cancel):
            self._log.warn("ignored a non-control message", entry=where, type=message.type)
            return
        if message.job_id != self.job_id:
            self._log.warn("ignored a cancel for another job", entry=where, job=message.job_id)
            return
        if message.id in self._seen_cancels:
            return
        self._seen_cancels.add(message.id)
        self._log.info("cancel received", entry=where, reason=message.reason)
        for callback in list(self._callbacks):
            try:
                callback(message)
            except Exception as exc:
                self._log.error("cancel callback failed", exc=exc)


def _redact(text: str | None) -> str | None:
    return None if text is None else REDACTOR.redact(text)


def entry_messages(entries: Any) -> list[tuple[str, bytes | None]]:
    """``(entry id, msg field)`` of redis-py stream entries (XRANGE, XREAD items)."""
    out: list[tuple[str, bytes | None]] = []
    for entry_id, fields in entries or ():
        raw = (fields or {}).get(MESSAGE_FIELD.encode())
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        out.append((eid, raw if isinstance(raw, bytes) else None))
    return out


def _head(raw: bytes | None) -> dict[str, Any]:
    """A message JSON as a dict, without validation ({} when it is not an object)."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def is_redis_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis cannot take this now" (spool, retry later)."""
    from redis.exceptions import RedisError

    return isinstance(exc, (RedisError, OSError))
