"""Thread-safe progress counters, read by heartbeats and progress messages."""

from __future__ import annotations

import threading

from baqup_agent.contract import Progress


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
