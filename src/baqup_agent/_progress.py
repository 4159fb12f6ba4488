"""Thread-safe progress counters, read by heartbeats and progress messages, and the
progress lines of the log (``ProgressLog``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from baqup_agent.contract import Progress

if TYPE_CHECKING:
    from baqup_agent._logger import Logger


class ProgressCounter:
    """Bytes and items done, with totals when known.

    The job's thread adds to it; the heartbeat thread takes snapshots. A slow but
    healthy job shows growing counters, which is how a controller tells it from a
    hung one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes_done = 0
        self._items_done = 0
        self._bytes_total: int | None = None
        self._items_total: int | None = None

    def add(self, *, bytes: int = 0, items: int = 0) -> None:
        """Count ``bytes`` and ``items`` more as done."""
        with self._lock:
            self._bytes_done += bytes
            self._items_done += items

    def set_totals(self, *, bytes: int | None = None, items: int | None = None) -> None:
        """Declare the expected totals (None leaves a total unchanged)."""
        with self._lock:
            if bytes is not None:
                self._bytes_total = bytes
            if items is not None:
                self._items_total = items

    def snapshot(self) -> Progress:
        """The counters now, as the contract's Progress model."""
        with self._lock:
            return Progress(
                bytes_done=self._bytes_done,
                items_done=self._items_done,
                bytes_total=self._bytes_total,
                items_total=self._items_total,
            )


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB`` ... ``2.0 TiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


class ProgressLog:
    """An INFO line with the counters every ``interval`` seconds while a job runs.

    For people who follow a job in ``kubectl logs`` rather than on the bus. A line
    holds the counters, the rates over the last interval, the percentage and the
    estimated time left when a total is known, and the last message the agent gave
    ``Context.progress``. It goes through the job's logger, so it is redacted like
    every line. ``interval`` 0 turns the lines off. A thread of its own writes them,
    so a job stuck in one long call still shows that nothing moves.

    ``clock`` (``time.monotonic``) is injectable; ``tick()`` writes a line when one is
    due, which is all the thread does.
    """

    def __init__(
        self,
        counter: ProgressCounter,
        logger: Logger,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counter = counter
        self._logger = logger
        self.interval = float(interval)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._message: str | None = None
        self._started = self._last_time = clock()
        self._last_bytes = self._last_items = 0
        self.lines = 0
        """Progress lines written so far."""

    def note(self, message: str) -> None:
        """Remember the agent's latest progress message for the next line."""
        self._message = message

    def start(self) -> None:
        """Write lines from a daemon thread until ``stop()`` (nothing when interval is 0)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._started = self._last_time = self._clock()
        self._thread = threading.Thread(target=self._run, name="baqup-progress-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing lines (waits for a line being written)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self._last_time + self.interval - self._clock())):
            self.tick()

    def tick(self) -> bool:
        """Write a line if ``interval`` seconds have passed since the last; whether it did."""
        now = self._clock()
        if self.interval <= 0 or now - self._last_time < self.interval:
            return False
        p = self._counter.snapshot()
        seconds = now - self._last_time
        byte_rate = (p.bytes_done - self._last_bytes) / seconds
        item_rate = (p.items_done - self._last_items) / seconds
        self._last_time, self._last_bytes, self._last_items = now, p.bytes_done, p.items_done
        fields: dict[str, object] = {
            "bytes_done": p.bytes_done,
            "bytes_total": p.bytes_total,
            "items_done": p.items_done,
            "items_total": p.items_total,
            "bytes_per_second": round(byte_rate),
            "items_per_second": round(item_rate, 1),
            "elapsed_seconds": round(now - self._started, 1),
        }
        text = f"{format_bytes(p.bytes_done)}"
        done, total, rate = p.bytes_done, p.bytes_total, byte_rate
        if not total and p.items_total:  # no byte total: the items tell how far it is
            done, total, rate = p.items_done, p.items_total, item_rate
        if p.bytes_total:
            text += f" of {format_bytes(p.bytes_total)}"
        text += f", {p.items_done}" + (f" of {p.items_total}" if p.items_total else "") + " items"
        text += f", {format_bytes(byte_rate)}/s"
        if total:
            percent = min(100.0, 100 * done / total)
            fields["percent"] = round(percent, 1)
            text = f"{percent:.1f}% ({text})"
            if rate > 0:
                fields["eta_seconds"] = round(max(0, total - done) / rate)
        if self._message is not None:
            fields["last_message"] = self._message
        self._logger.info(f"progress: {text}", **fields)
        self.lines += 1
        return True
