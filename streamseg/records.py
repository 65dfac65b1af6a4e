"""Plain records that cross pipeline stages (source -> detect -> segment -> smooth -> sinks).

They hold numpy arrays only, so stages stay independent of torch and of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded video frame.

    ``image`` is RGB uint8 [H, W, 3]. ``pts``/``time_base`` are the container timestamps
    (``pts`` may be None for the first RTSP frame); ``capture_time`` is the wall clock
    (``time.time()``) when the frame left the decoder, used for latency metrics.
    """

    index: int
    image: np.ndarray
    pts: int | None = None
    time_base: Fraction | None = None
    capture_time: float = 0.0
    source_id: str = "0"

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, or None when the source gave no timestamp."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


@dataclass
class Detections:
    """Person boxes of one frame, in pixels of that frame (xyxy, float32)."""

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.scores = (
            np.ones(n, np.float32) if len(self.scores) == 0 and n else np.asarray(self.scores, np.float32).reshape(n)
        )
        self.track_ids = (
            np.full(n, -1, np.int64) if len(self.track_ids) == 0 and n else np.asarray(self.track_ids, np.int64).reshape(n)
        )
        self.class_ids = (
            np.zeros(n, np.int64) if len(self.class_ids) == 0 and n else np.asarray(self.class_ids, np.int64).reshape(n)
        )

    def __len__(self) -> int:
        return int(len(self.xyxy))

    @classmethod
    def empty(cls) -> "Detections":
        return cls()

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.xyxy[keep], self.scores[keep], self.track_ids[keep], self.class_ids[keep])


@dataclass
class PersonMasks:
    """Segmentation of the people in one frame.

    ``probs`` [N, Hm, Wm] float32 is the target-person probability of each ROI on the model's mask
    grid, in box-normalised coordinates (row 0 = box top, last row = box bottom, corner-inclusive as
    the ROI align samples). Keeping masks box-local keeps memory and drawing cost proportional to the
    people, not to the frame. ``scores`` is a per-person mask confidence. ``foreground`` is the
    full-frame person probability from the people-seg UNet (optional, [H, W] float32).
    """

    detections: Detections
    probs: np.ndarray
    scores: np.ndarray
    foreground: np.ndarray | None = None
    threshold: float = 0.5

    def __len__(self) -> int:
        return len(self.detections)


@dataclass
class FrameResult:
    """Everything known about one frame after the model: what sinks consume."""

    frame: Frame
    detections: Detections
    masks: PersonMasks | None = None
    timings: dict[str, float] = field(default_factory=dict)
    watermark: str | None = None
