"""Reconnect policy and outage bookkeeping shared by live sources and the RTSP sink.

One outage = from the moment a stream is lost until it is back (or given up). It is logged
twice (start, end with its duration), never once per retry, and kept for the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from streamseg.urls import redact

__all__ = ["ReconnectPolicy", "OutageLog"]


@dataclass
class ReconnectPolicy:
    """How a live stream is re-opened after an error, a clean EOF or a stall.

    The delay before retry ``k`` (0-based) is ``min(backoff_base_s * 2**k, backoff_max_s)``;
    ``max_attempts=None`` retries until stopped; ``stall_timeout_s`` is how long a live stream
    may deliver no frame before it counts as lost.
    """

    enabled: bool = True
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    max_attempts: int | None = None
    stall_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("reconnect back-off times must be >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("reconnect.max_attempts must be >= 1 or None (unlimited)")
        if self.stall_timeout_s <= 0:
            raise ValueError("reconnect.stall_timeout_s must be > 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based), exponential and capped."""
        return float(min(self.backoff_base_s * (2.0 ** min(attempt, 30)), self.backoff_max_s))

    @classmethod
    def disabled(cls) -> "ReconnectPolicy":
        return cls(enabled=False)


class OutageLog:
    """Thread-safe record of outages of one stream; logs one line at start and one at end."""

    def __init__(self, what: str, logger: logging.Logger):
        self._what = redact(what)
        self._log = logger
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        self._t0: float | None = None  # monotonic start of the open outage
        self.reconnects = 0

    @property
    def active(self) -> bool:
        return self._t0 is not None

    def begin(self, reason: str) -> None:
        """Start an outage (no-op when one is already open)."""
        with self._lock:
            if self._t0 is not None:
                return
            self._t0 = time.monotonic()
            reason = redact(reason)
            self._items.append(
                {"start": time.time(), "end": None, "duration_s": None, "reason": reason}
            )
        self._log.warning("%s: stream lost (%s); reconnecting with back-off", self._what, reason)

    def end(self, attempts: int, recovered: bool = True) -> float | None:
        """Close the open outage; returns its duration in seconds (None when none was open)."""
        with self._lock:
            if self._t0 is None:
                return None
            dur = time.monotonic() - self._t0
            self._t0 = None
            item = self._items[-1]
            item["end"] = time.time()
            item["duration_s"] = round(dur, 3)
            if recovered:
                self.reconnects += 1
            else:
                item["reason"] += " (gave up)"
        if recovered:
            self._log.warning(
                "%s: stream back after %.1f s outage (%d attempt%s)",
                self._what,
                dur,
                attempts,
                "" if attempts == 1 else "s",
            )
        else:
            self._log.error("%s: giving up after %.1f s and %d attempts", self._what, dur, attempts)
        return dur

    def snapshot(self) -> list[dict[str, Any]]:
        """Copies of the outages; an open one has ``end``/``duration_s`` None."""
        with self._lock:
            return [dict(i) for i in self._items]
