"""JSON-lines events: one line per frame with boxes, scores, track IDs, mask areas, times, latencies."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from streamseg.errors import SinkError
from streamseg.masks import instance_binary_masks
from streamseg.records import FrameResult
from streamseg.sinks.masks import resolve_output

log = logging.getLogger(__name__)

__all__ = ["EventsSink", "frame_event"]


def _f(x: float | None, nd: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def frame_event(result: FrameResult, threshold: float | None = None) -> dict[str, Any]:
    """The event record of one frame; mask areas are exclusive pixel counts, as in the mask files."""
    frame = result.frame
    masks = result.masks
    dets = masks.detections if masks is not None else result.detections
    areas: list[int] | None = None
    mask_scores: list[float] | None = None
    if masks is not None:
        bins = instance_binary_masks(masks, (frame.height, frame.width), threshold)
        areas = [int(np.count_nonzero(m)) for _, _, m in bins]
        mask_scores = [round(float(s), 5) for s in np.asarray(masks.scores).reshape(-1)]
    ev: dict[str, Any] = {
        "frame": frame.index,
        "pts": frame.pts,
        "time": _f(frame.time),
        "capture_time": _f(frame.capture_time),
        "source_id": frame.source_id,
        "size": [frame.height, frame.width],
        "boxes": [[round(float(v), 2) for v in b] for b in dets.xyxy],
        "scores": [round(float(s), 5) for s in dets.scores],
        "track_ids": [int(t) for t in dets.track_ids],
        "mask_areas": areas,
        "mask_scores": mask_scores,
        "timings": {k: _f(v) for k, v in result.timings.items()},
    }
    if result.watermark:
        ev["watermark"] = result.watermark
    return ev


class EventsSink:
    """Appends ``frame_event`` records to a JSON-lines file, flushed every frame so a crash keeps them."""

    def __init__(
        self, path: str | Path, threshold: float | None = None, out_dir: str | Path | None = None
    ) -> None:
        self.path = resolve_output(path, out_dir)
        self.threshold = threshold
        self.frames_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise SinkError(f"events sink: cannot write {self.path}: {e.strerror or e}") from None

    @property
    def outputs(self) -> list[Path]:
        return [self.path]

    def write(self, result: FrameResult) -> None:
        if self._fh is None:
            raise SinkError(f"events sink: {self.path} is already closed")
        try:
            self._fh.write(json.dumps(frame_event(result, self.threshold)) + "\n")
            self._fh.flush()
        except OSError as e:
            raise SinkError(f"events sink: cannot write {self.path}: {e}") from None
        self.frames_written += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            log.info("events sink: %d frames -> %s", self.frames_written, self.path)

    def __enter__(self) -> EventsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
