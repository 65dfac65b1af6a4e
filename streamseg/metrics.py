"""Run metrics: frame counts, drops with reasons, per-stage latency, capture-to-output latency per window.

Memory stays bounded for runs of days: stage samples live in fixed-size deques and each closed
latency window keeps only its percentiles.
"""

from __future__ import annotations

import collections
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_SAMPLES = 100_000


def percentiles(values: Any) -> dict[str, float | None]:
    """p50/p95/max in milliseconds of a sequence of seconds (None when empty)."""
    a = np.asarray(list(values), np.float64)
    if a.size == 0:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None, "count": 0}
    return {"p50_ms": round(float(np.percentile(a, 50)) * 1e3, 3), "p95_ms": round(float(np.percentile(a, 95)) * 1e3, 3),
            "max_ms": round(float(a.max()) * 1e3, 3), "count": int(a.size)}


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class LatencyWindows:
    """Capture-to-output latency, summarised per fixed wall-clock window (e.g. per minute)."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = float(window_s)
        self.start = time.time()
        self.closed: list[dict[str, Any]] = []
        self._cur: list[float] = []
        self._cur_idx = 0
        self.all = collections.deque(maxlen=_SAMPLES)

    def add(self, latency_s: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        idx = int((now - self.start) // self.window_s)
        if idx != self._cur_idx:
            self._close()
            self._cur_idx = idx
        self._cur.append(latency_s)
        self.all.append(latency_s)

    def _close(self) -> None:
        if self._cur:
            self.closed.append({"window": self._cur_idx, "start_s": round(self._cur_idx * self.window_s, 3),
                                **percentiles(self._cur)})
        self._cur = []

    def summary(self) -> dict[str, Any]:
        self._close()
        return {"overall": percentiles(self.all), "window_s": self.window_s, "windows": list(self.closed)}


class RunMetrics:
    """Everything ``metrics.json`` reports about one run."""

    def __init__(self, latency_window_s: float = 60.0):
        self.t_start = time.time()
        self.t_first: float | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.persons = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.stages: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=_SAMPLES))
        self.latency = LatencyWindows(latency_window_s)
        self.publish_latency = LatencyWindows(latency_window_s)

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name].append(seconds)

    def frame_done(self, capture_time: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.t_first is None:
            self.t_first = now
        self.frames_out += 1
        if capture_time:
            self.latency.add(max(0.0, now - capture_time), now)

    def fps(self) -> float:
        elapsed = time.time() - self.t_start
        return self.frames_out / elapsed if elapsed > 0 else 0.0

    def summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        elapsed = time.time() - self.t_start
        out: dict[str, Any] = {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": int(sum(self.dropped.values())),
            "dropped_by_reason": dict(self.dropped),
            "fps": round(self.frames_out / elapsed, 3) if elapsed > 0 else 0.0,
            "wall_time_s": round(elapsed, 3),
            "persons_segmented": self.persons,
            "stage_latency": {k: percentiles(v) for k, v in self.stages.items()},
            "capture_to_output_latency": self.latency.summary(),
            "peak_rss_mb": peak_rss_mb(),
        }
        if self.publish_latency.all:
            out["capture_to_publish_latency"] = self.publish_latency.summary()
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except Exception:  # noqa: BLE001 - metrics must never fail a run
            pass
        out.update(extra or {})
        return out


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
    return path
