"""The control listener: controller->agent messages for one job (contract section 3).

A daemon thread reads the job's control stream from its beginning (``XREAD BLOCK``
from ``0``, so a cancel sent before the agent listened is seen); another polls
``control.jsonl`` in the spool (how a cancel arrives without Redis) every
``CONTROL_POLL_SECONDS``, whatever Redis is doing. Each valid
cancel addressed to the job is dispatched once to every callback; invalid or foreign
entries are logged and ignored. A Redis outage is retried with backoff.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from baqup_agent._errors import summarize
from baqup_agent._redis_client import Backoff, entry_messages, is_redis_error
from baqup_agent._spool import read_lines
from baqup_agent.contract import BusMessage, Cancel

if TYPE_CHECKING:
    from baqup_agent._logger import Logger
    from baqup_agent._redis_client import RedisClient

__all__ = ["CONTROL_BLOCK_MS", "CONTROL_POLL_SECONDS", "ControlListener"]

CONTROL_BLOCK_MS = 1000
CONTROL_POLL_SECONDS = 0.25


class ControlListener:
    """Listens for cancels of job ``job_id`` until ``stop`` is set.

    ``connect(block_seconds)`` returns a new Redis client whose command timeout allows
    an XREAD blocking that long; ``None`` when there is no Redis (only
    ``control_path`` is polled). The thread starts with the first ``add``.
    """

    def __init__(
        self,
        job_id: str,
        control_key: str,
        control_path: Path,
        logger: Logger,
        stop: threading.Event,
        connect: Callable[[float], RedisClient] | None,
    ) -> None:
        self.job_id = job_id
        self._key = control_key
        self._path = control_path
        self._log = logger
        self._stop = stop
        self._connect = connect
        self._threads: list[threading.Thread] = []
        self._dispatch_lock = threading.Lock()  # both threads may see one cancel
        self._client: RedisClient | None = None
        self._callbacks: list[Callable[[Cancel], None]] = []
        self._seen_cancels: set[uuid.UUID] = set()

    def add(self, callback: Callable[[Cancel], None]) -> None:
        """Call ``callback(cancel)`` for each cancel; start the thread, once."""
        self._callbacks.append(callback)
        if not self._threads:
            targets = [self._poll_file] + ([self._listen] if self._connect else [])
            for target in targets:
                thread = threading.Thread(
                    target=target, name=f"baqup-control-{self.job_id}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def close(self, command_timeout: float) -> None:
        """Wake the thread's blocked XREAD and wait for it to end (``stop`` is set)."""
        client = self._client
        if client is not None:
            client.close()
        for thread in self._threads:
            thread.join(timeout=CONTROL_BLOCK_MS / 1000 + command_timeout)

    def _poll_file(self) -> None:
        """A thread: control.jsonl every CONTROL_POLL_SECONDS."""
        offset = 0
        while True:
            offset = self._poll_control_file(offset)
            if self._stop.wait(CONTROL_POLL_SECONDS):
                return

    def _listen(self) -> None:
        """A thread: XREAD BLOCK on the control stream from 0."""
        assert self._connect is not None
        last_id = "0-0"
        backoff = Backoff(initial=0.1)
        logged = False
        while not self._stop.is_set():
            try:
                if self._client is None:
                    client = self._connect(CONTROL_BLOCK_MS / 1000)
                    self._client = client
                    if self._stop.is_set():  # close() ran while we connected
                        client.close()
                        break
                response = self._client.xread(
                    {self._key: last_id}, count=100, block=CONTROL_BLOCK_MS
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
            lines, offset = read_lines(self._path, offset)
        except OSError as exc:  # unreadable: the Redis control stream may still work
            self._log.debug("cannot read control.jsonl", error=summarize(exc))
            return offset
        for end, line in lines:
            self._handle_control(line, f"{self._path}@{end}")
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
                # not-a-schema-value: pydantic's error text
                first_error=exc.errors()[0]["msg"] if exc.error_count() else "",
            )
            return
        if not isinstance(message, Cancel):
            self._log.warn("ignored a non-control message", entry=where, type=message.type)
            return
        if message.job_id != self.job_id:
            self._log.warn("ignored a cancel for another job", entry=where, job=message.job_id)
            return
        with self._dispatch_lock:
            if message.id in self._seen_cancels:
                return
            self._seen_cancels.add(message.id)
        self._log.info("cancel received", entry=where, reason=message.reason)
        for callback in list(self._callbacks):
            try:
                callback(message)
            except Exception as exc:
                self._log.error("cancel callback failed", exc=exc)
