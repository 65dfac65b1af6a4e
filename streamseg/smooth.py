"""Temporal smoothing of each person's mask along its track, and a flicker meter to prove it helps.

The mask grid is box-normalised, so a person's previous probability maps onto the new box by
construction: the EMA runs on the grid, and the box may move or rescale freely between frames.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from streamseg.errors import UserError
from streamseg.masks import Crop, crop_iou, paste_prob
from streamseg.records import PersonMasks

log = logging.getLogger(__name__)


@dataclass
class _TrackState:
    prob: np.ndarray
    last_frame: int


class MaskSmoother:
    """Per-track EMA of mask probabilities: ``new = alpha * current + (1 - alpha) * previous``.

    A track's history is dropped when the track is new, when it was missing for more than
    ``max_age`` frames, when the grid shape changes, or when frame indices go backwards (new
    source). Untracked people (id < 0) pass through unchanged; ``enabled=False`` passes everything.
    """

    def __init__(self, alpha: float = 0.5, enabled: bool = True, max_age: int = 5) -> None:
        if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) <= 1.0):
            raise UserError(f"smoothing.alpha must be in (0, 1] (1 = no smoothing), got {alpha!r}")
        if int(max_age) < 0:
            raise UserError(f"smoothing.max_age must be >= 0 frames, got {max_age!r}")
        self.alpha = float(alpha)
        self.enabled = bool(enabled)
        self.max_age = int(max_age)
        self._state: dict[int, _TrackState] = {}
        self._last_index: int | None = None

    def reset(self) -> None:
        """Forget every track (e.g. after the source reconnects)."""
        self._state.clear()
        self._last_index = None

    @property
    def active_tracks(self) -> int:
        return len(self._state)

    def smooth(self, masks: PersonMasks, frame_index: int) -> PersonMasks:
        """Return masks whose tracked probabilities are blended with the track's history."""
        if not self.enabled:
            return masks
        if self._last_index is not None and frame_index < self._last_index:
            log.debug(
                "frame index went back (%s -> %s): smoothing state reset",
                self._last_index,
                frame_index,
            )
            self._state.clear()
        self._last_index = frame_index
        probs = np.array(masks.probs, dtype=np.float32, copy=True)
        ids = masks.detections.track_ids
        seen: set[int] = set()
        for i in range(len(masks)):
            tid = int(ids[i])
            if tid < 0 or tid in seen:  # untracked, or a duplicate id in one frame: no history
                continue
            seen.add(tid)
            cur = probs[i]
            st = self._state.get(tid)
            if (
                st is not None
                and st.prob.shape == cur.shape
                and frame_index - st.last_frame - 1 <= self.max_age
                and frame_index > st.last_frame
            ):
                cur = self.alpha * cur + (1.0 - self.alpha) * st.prob
                probs[i] = cur
            self._state[tid] = _TrackState(cur.copy(), frame_index)
        stale = [t for t, s in self._state.items() if frame_index - s.last_frame - 1 > self.max_age]
        for t in stale:
            del self._state[t]
        return PersonMasks(
            detections=masks.detections,
            probs=probs,
            scores=masks.scores,
            foreground=masks.foreground,
            threshold=masks.threshold,
        )


def flicker_iou(prev: Crop, cur: Crop) -> float:
    """IoU of one track's binary masks at consecutive frames, both in frame coordinates (NaN if both empty)."""
    return crop_iou(prev, cur)


class FlickerMeter:
    """Mean IoU of each track's binary mask between consecutive frames (higher = steadier).

    Only pairs of directly consecutive frame indices count, so dropped frames never look like flicker.
    """

    def __init__(
        self, threshold: float | None = None, roi_hw: tuple[int, int] | None = None
    ) -> None:
        self.threshold = threshold
        self.roi_hw = roi_hw
        self._prev: dict[int, tuple[int, Crop]] = {}
        self._sum: dict[int, float] = {}
        self._n: dict[int, int] = {}

    def reset(self) -> None:
        self._prev.clear()
        self._sum.clear()
        self._n.clear()

    def update(
        self, masks: PersonMasks | None, frame_hw: tuple[int, int], frame_index: int
    ) -> dict[int, float]:
        """Add one frame; returns the IoU measured for each track that also had a mask last frame."""
        out: dict[int, float] = {}
        if masks is None:
            return out
        thr = masks.threshold if self.threshold is None else float(self.threshold)
        cur: dict[int, tuple[int, Crop]] = {}
        for i in range(len(masks)):
            tid = int(masks.detections.track_ids[i])
            if tid < 0 or tid in cur:
                continue
            x0, y0, p = paste_prob(masks.probs[i], masks.detections.xyxy[i], frame_hw, self.roi_hw)
            crop: Crop = (x0, y0, p >= thr)
            cur[tid] = (frame_index, crop)
            prev = self._prev.get(tid)
            if prev is not None and prev[0] == frame_index - 1:
                iou = flicker_iou(prev[1], crop)
                if not math.isnan(iou):
                    out[tid] = iou
                    self._sum[tid] = self._sum.get(tid, 0.0) + iou
                    self._n[tid] = self._n.get(tid, 0) + 1
        # keep tracks not seen this frame only while they can still pair (they cannot: not consecutive)
        self._prev = cur
        return out

    @property
    def pairs(self) -> int:
        return int(sum(self._n.values()))

    @property
    def mean_iou(self) -> float | None:
        """Mean over all consecutive-frame pairs of all tracks; None before the first pair."""
        n = self.pairs
        return None if n == 0 else float(sum(self._sum.values()) / n)

    def per_track(self) -> dict[int, float]:
        return {t: self._sum[t] / self._n[t] for t in self._n if self._n[t]}

    def summary(self) -> dict[str, float | int | None]:
        """What the pipeline puts into metrics.json."""
        m = self.mean_iou
        return {
            "flicker_mean_iou": None if m is None else round(m, 6),
            "flicker_pairs": self.pairs,
            "flicker_tracks": len(self._n),
        }
