"""Reading a job's events, for controllers and people: ``JobEvents`` and ``watch``.

Messages come from the Redis events stream (plus the result key, for a stream that
was trimmed or expired) and from the spool's events.jsonl; each is validated
against the contract, invalid entries are logged and skipped, and a message seen in
both places (a replayed one) is kept once, by id.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from pydantic import ValidationError

from baqup_agent._errors import summarize
from baqup_agent._keys import EVENTS_FILE, job_keys
from baqup_agent._logger import Logger
from baqup_agent._redis_client import Backoff, connect_redis, entry_messages, is_redis_error
from baqup_agent._secret import Secret
from baqup_agent._spool import read_lines
from baqup_agent.contract import (
    BusMessage,
    Cancel,
    ExitCode,
    Heartbeat,
    LogLevel,
    Progress,
    ProgressUpdate,
    Result,
    StateChange,
)

if TYPE_CHECKING:
    from baqup_agent._redis_client import RedisClient

Message = StateChange | Heartbeat | ProgressUpdate | Result | Cancel
"""One validated bus message (the root of ``BusMessage``)."""

XRANGE_PAGE = 1000

REDIS_GIVE_UP_SECONDS = 120.0
"""How long ``follow()`` (and ``watch``) waits for an unreachable Redis, reconnecting
with backoff, before it gives up (``watch`` then exits 69); only without a spool to
read meanwhile."""


class Delivery(NamedTuple):
    """Where a message was found: the events stream (with its entry id) and/or the
    spool. A message in both was spooled first and replayed later."""

    stream_entry: str | None
    in_spool: bool

    @property
    def replayed_at(self) -> datetime | None:
        """When Redis got a spooled message (the time of its stream entry id)."""
        if self.stream_entry is None or not self.in_spool:
            return None
        millis = int(self.stream_entry.split("-")[0])
        return datetime.fromtimestamp(millis / 1000, timezone.utc)


class JobEvents:
    """The events of one job, from Redis and/or a spool directory.

    ``read()`` returns everything there is now; ``follow()`` yields the history and
    then new messages as they arrive. Neither raises because Redis is unreachable
    (that is logged; the spool is still read) unless there is no spool to fall back on.
    """

    def __init__(
        self,
        job_id: str,
        *,
        redis_url: str | Secret | None = None,
        spool_dir: str | Path | None = None,
        password: str | Secret | None = None,
        logger: Logger | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
    ) -> None:
        if redis_url is None and spool_dir is None:
            raise ValueError("JobEvents needs a Redis URL, a spool directory, or both")
        self.job_id = job_id
        self.keys = job_keys(job_id)
        self._url = redis_url.reveal() if isinstance(redis_url, Secret) else redis_url
        self._password = password.reveal() if isinstance(password, Secret) else password
        self._events_path = Path(spool_dir) / job_id / EVENTS_FILE if spool_dir else None
        self._log = logger or Logger(job_id, "baqup-reader", LogLevel.WARN)
        self._timeouts = (connect_timeout, command_timeout)
        self._client: RedisClient | None = None
        self._seen: set[str] = set()
        self._stream_id = "0-0"  # last events stream entry read
        self._spool_offset = 0  # bytes of events.jsonl read
        self._redis_down = False
        self._down_since: float | None = None
        self._give_up: float | None = None  # set by follow() without a spool
        self._backoff = Backoff(initial=0.2)
        self._origins: dict[str, Delivery] = {}

    @property
    def has_redis(self) -> bool:
        """Whether a Redis URL was given."""
        return self._url is not None

    @property
    def has_spool(self) -> bool:
        """Whether a spool directory was given."""
        return self._events_path is not None

    def delivery(self, message: Message) -> Delivery:
        """Where ``message`` was found so far (stream entry, spool)."""
        return self._origins.get(str(message.id), Delivery(None, False))

    # -- public API ----------------------------------------------------------------

    def read(self) -> list[Message]:
        """Every message of the job now: validated, de-duplicated by id, in seq order."""
        self._seen.clear()
        self._stream_id, self._spool_offset = "0-0", 0
        messages = self._fetch(block_ms=None, with_result_key=True)
        messages.sort(key=lambda m: getattr(m, "seq", -1))  # stable: ties keep arrival order
        return messages

    def follow(
        self,
        *,
        poll_interval: float = 0.25,
        until_result: bool = True,
        timeout: float | None = None,
        redis_give_up: float = REDIS_GIVE_UP_SECONDS,
        on_empty: Callable[[], None] | None = None,
    ) -> Iterator[Message]:
        """Yield the history, then each new message as it arrives, each once.

        Stops after the result when ``until_result``, or after ``timeout`` seconds. An
        unreachable Redis is retried with backoff, going on from the last entry read;
        without a spool, its error is raised after ``redis_give_up`` seconds.
        ``on_empty`` is called once when the job has no message yet.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._give_up = None if self._events_path is not None else redis_give_up
        batch: list[Message] = self.read()
        if not batch and on_empty is not None:
            on_empty()
        while True:
            for message in batch:
                yield message
                if until_result and isinstance(message, Result):
                    return
            if deadline is not None and time.monotonic() >= deadline:
                return
            use_redis = self._url is not None and not self._redis_down
            batch = self._fetch(block_ms=int(poll_interval * 1000) if use_redis else None)
            if not batch and not use_redis:
                time.sleep(poll_interval)

    def close(self) -> None:
        """Close the Redis connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- sources ----------------------------------------------------------------------

    def _fetch(self, *, block_ms: int | None, with_result_key: bool = False) -> list[Message]:
        """New messages since the last call, from both sources, de-duplicated."""
        raws: list[tuple[str, bytes | None]] = []
        if self._url is not None:
            raws += self._from_redis(block_ms, with_result_key)
        if self._events_path is not None:
            lines, self._spool_offset = read_lines(self._events_path, self._spool_offset)
            raws += [(f"{self._events_path}@{end}", line) for end, line in lines]
        return list(self._validate(raws))

    def _from_redis(
        self, block_ms: int | None, with_result_key: bool
    ) -> list[tuple[str, bytes | None]]:
        try:
            client = self._redis()
            if block_ms is not None:
                response = client.xread({self.keys.events: self._stream_id}, block=block_ms)
                entries = [e for _, page in cast(Any, response) or () for e in entry_messages(page)]
            else:
                entries = self._xrange_all(client)
            if entries:
                self._stream_id = entries[-1][0]
            out = [(f"stream entry {eid}", raw) for eid, raw in entries]
            if with_result_key:
                result = client.get(self.keys.result)
                if isinstance(result, bytes):
                    out.append((self.keys.result, result))
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            now = time.monotonic()
            self._down_since = self._down_since or now
            if self._events_path is None and (
                self._give_up is None or now - self._down_since > self._give_up
            ):
                raise
            if not self._redis_down:
                where = "reading the spool only" if self._events_path else "reconnecting"
                self._log.warn(f"Redis unreachable; {where}", error=summarize(exc))
            self._redis_down = True
            self.close()
            if self._events_path is None:
                time.sleep(self._backoff.failed())
            return []
        if self._redis_down:
            self._log.warn("Redis reachable again; going on from the last entry read")
        self._redis_down = False
        self._down_since = None
        self._backoff.reset()
        return out

    def _xrange_all(self, client: RedisClient) -> list[tuple[str, bytes | None]]:
        entries: list[tuple[str, bytes | None]] = []
        start = "-" if self._stream_id == "0-0" else f"({self._stream_id}"
        while True:
            page = entry_messages(client.xrange(self.keys.events, min=start, count=XRANGE_PAGE))
            entries += page
            if len(page) < XRANGE_PAGE:
                return entries
            start = f"({page[-1][0]}"

    def _redis(self) -> RedisClient:
        if self._client is None:
            assert self._url is not None
            connect_timeout, command_timeout = self._timeouts
            self._client = connect_redis(
                self._url,
                password=self._password,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout + 1.0,  # room for XREAD BLOCK
            )
        return self._client

    def _validate(self, raws: Iterable[tuple[str, bytes | None]]) -> Iterator[Message]:
        for where, raw in raws:
            if raw is None:
                self._log.warn("skipped an entry without a msg field", entry=where)
                continue
            try:
                message = BusMessage.model_validate_json(raw).root
            except ValidationError as exc:
                self._log.warn("skipped an invalid message", entry=where, errors=exc.error_count())
                continue
            if message.job_id != self.job_id:
                self._log.warn("skipped a message of another job", entry=where, job=message.job_id)
                continue
            key = str(message.id)
            seen = self._origins.get(key, Delivery(None, False))
            if where.startswith("stream entry "):
                seen = seen._replace(stream_entry=where.removeprefix("stream entry "))
            elif where != self.keys.result:
                seen = seen._replace(in_spool=True)
            self._origins[key] = seen
            if key in self._seen:
                continue
            self._seen.add(key)
            yield message


# -- watch ------------------------------------------------------------------------------


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _progress(p: Progress) -> str:
    done = _size(p.bytes_done)
    if p.bytes_total:
        done += f"/{_size(p.bytes_total)} ({100 * p.bytes_done / p.bytes_total:.0f}%)"
    items = f"{p.items_done}" + (f"/{p.items_total}" if p.items_total is not None else "")
    return f"{done}, {items} items"


def _utc(moment: datetime) -> str:
    """A time with its zone: ``2026-11-27 10:00:00.000Z`` (UTC)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_event(
    message: Message, delivery: Delivery | None = None, *, redis_expected: bool = False
) -> str:
    """One readable line: time (UTC), agent and seq, type, and what the message says.

    For a result, ``delivery`` tells how it travelled: with ``redis_expected`` (the
    job had Redis), a result found only in the spool means the agent exited 75; one
    found in both was spooled and replayed later.
    """
    when = _utc(message.timestamp)
    if isinstance(message, Cancel):
        return f"{when}  controller {'':<6} {'cancel':<12}  {message.reason or ''}".rstrip()
    head = f"{when}  {message.agent_id} {f'#{message.seq}':<6} {message.type:<12}  "
    if isinstance(message, StateChange):
        text = f"{message.from_state or '-'} -> {message.to_state}"
        if message.reason:
            text += f"  ({message.reason})"
    elif isinstance(message, Heartbeat):
        intent = str(message.intent)
        if message.extend_seconds is not None:
            intent += f" +{message.extend_seconds:g}s"
        text = f"{message.state}  {intent}  {_progress(message.progress)}"
    elif isinstance(message, ProgressUpdate):
        text = _progress(message.progress)
        if message.message:
            text += f"  {message.message}"
    else:
        code = ExitCode(message.exit_code)
        exit_text = f"exit {code.value} ({code.name})"
        spooled = delivery is not None and delivery.in_spool and redis_expected
        if spooled and delivery is not None and delivery.stream_entry is None:
            exit_text = _unreported(code, "the result reached only the spool, not Redis", True)
        elif delivery is not None and delivery.replayed_at is not None:
            at = _utc(delivery.replayed_at)
            exit_text = _unreported(code, f"the result was spooled, replayed to Redis at {at}")
        text = f"{message.status}  {exit_text}  {message.duration_seconds:.1f} s"
        if message.artifacts:
            plural = "s" if message.artifacts != 1 else ""
            text += f"  {message.artifacts} artifact{plural}, {_size(message.bytes or 0)}"
        if message.output_path:
            text += f"  -> {message.output_path}"
        if message.error:
            text += f"  error: {message.error}"
    return head + text


def _unreported(code: ExitCode, what: str, certain: bool = False) -> str:
    """The exit of a job whose result went through the spool: a success exits 75 when
    the result was not in Redis before the agent exited (``certain``: it still is not)."""
    if code is not ExitCode.SUCCESS:
        return f"exit {code.value} ({code.name}); {what}"
    unreported = ExitCode.COMPLETED_UNREPORTED
    if certain:
        return f"exit {unreported.value} ({unreported.name}): {what}"
    return (
        f"exit {unreported.value} ({unreported.name}) unless the agent's own last replay "
        f"delivered it: {what}"
    )


def watch_command(args: argparse.Namespace) -> int:
    """``baqup-agent watch JOB_ID``: print one line per event; exit when the result
    arrives (or at once with --no-follow). 64 when there is nothing to read from, 1
    when --no-follow finds no message, 69 when Redis stays unreachable (without a
    spool: after ``REDIS_GIVE_UP_SECONDS`` of reconnecting)."""
    from baqup_agent._config import bus_environment

    env = bus_environment()
    url = args.redis_url or env.redis_url
    spool = args.spool_dir or env.spool_dir
    if url is None and spool is None:
        print(
            "baqup-agent watch: give --redis-url or --spool-dir "
            "(or set BAQUP_REDIS_URL, BAQUP_SPOOL_DIR or BAQUP_STAGING_DIR)",
            file=sys.stderr,
        )
        return int(ExitCode.USAGE_CONFIG_ERROR)
    password = env.redis_password
    events = JobEvents(
        args.job_id,
        redis_url=Secret(url) if url else None,
        spool_dir=spool,
        password=Secret(password) if password else None,
    )
    where = " and ".join(
        ([f"Redis (stream {events.keys.events})"] if url else [])
        + ([f"the spool {Path(spool) / args.job_id / EVENTS_FILE}"] if spool else [])
    )
    hint = "" if spool else (
        "; a job that runs without Redis writes only to its spool: give --spool-dir to "
        "follow it"
    )  # fmt: skip

    def waiting() -> None:
        print(f"baqup-agent watch: waiting for job {args.job_id} in {where}{hint}",
              file=sys.stderr, flush=True)  # fmt: skip

    try:
        stream = events.read() if args.no_follow else events.follow(on_empty=waiting)
        if args.no_follow and not stream:
            print(f"baqup-agent watch: no message of job {args.job_id} in {where}",
                  file=sys.stderr)  # fmt: skip
            return int(ExitCode.GENERAL_FAILURE)
        for message in stream:
            line = (
                message.model_dump_json(exclude_none=True)
                if args.json
                else format_event(message, events.delivery(message), redis_expected=bool(url))
            )
            print(line, flush=True)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `watch ... | head`: the reader went away
        return 0
    except Exception as exc:
        if not is_redis_error(exc):
            raise
        print(f"baqup-agent watch: Redis unreachable: {summarize(exc)}", file=sys.stderr)
        return int(ExitCode.RESOURCE_UNAVAILABLE)
    finally:
        events.close()
    return 0
