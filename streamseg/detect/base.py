"""The detector contract shared by every person detector, plus helpers they have in common."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamseg.records import Detections, Frame

log = logging.getLogger(__name__)


@runtime_checkable
class Detector(Protocol):
    """Finds people in one frame; boxes are xyxy pixels of that frame.

    ``tracks`` says whether ``detect`` fills ``Detections.track_ids`` (>= 1 for tracked people,
    -1 for detections not yet confirmed as a track), so the smoother knows it can key on them.
    """

    tracks: bool

    def detect(self, frame: Frame) -> Detections:
        """Return the people found in ``frame`` (persons only)."""
        ...

    def reset(self) -> None:
        """Forget tracker state, e.g. when the source restarts."""
        ...

    def close(self) -> None:
        """Release models and files."""
        ...


_OFFLINE_DONE = False


def ultralytics_offline() -> None:
    """Import ultralytics with everything that would reach the network switched off.

    ultralytics checks connectivity at import time, sends usage events when settings ``sync`` is on
    and may try to auto-install packages; a video pipeline must not do any of that. The settings are
    changed in memory only, so the user's ultralytics settings file is left as it is.
    """
    global _OFFLINE_DONE
    if _OFFLINE_DONE:
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ONLINE=False at import: no events, no auto-update
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import ultralytics.utils as uu

    dict.__setitem__(
        uu.SETTINGS, "sync", False
    )  # in memory; SETTINGS[...] = would rewrite the file
    # if something imported ultralytics before us, ONLINE was already probed: force it off where read
    import ultralytics.utils.checks as uchecks

    for mod in (uu, uchecks):
        if getattr(mod, "ONLINE", False):
            mod.ONLINE = False
    try:
        from ultralytics.utils import events

        events.events.enabled = False
    except Exception:  # noqa: BLE001  # pragma: no cover - module layout differs between ultralytics versions
        log.debug("ultralytics events module not found; nothing to disable")
    _OFFLINE_DONE = True


@dataclass
class _TrackerInput:
    """The minimal 'Results-like' view ultralytics' trackers read: conf, cls, xywh, xyxy, masking."""

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray

    @property
    def xywh(self) -> np.ndarray:
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([xy, wh], axis=1)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, keep: Any) -> _TrackerInput:
        return _TrackerInput(self.xyxy[keep], self.conf[keep], self.cls[keep])


# ultralytics' ByteTrack defaults (cfg/trackers/bytetrack.yaml) expressed as a dict so detectors
# whose scores are not probabilities (HOG margins) can override the thresholds.
BYTETRACK_DEFAULTS: dict[str, Any] = {
    "tracker_type": "bytetrack",
    "track_high_thresh": 0.25,
    "track_low_thresh": 0.1,
    "new_track_thresh": 0.25,
    "track_buffer": 30,
    "match_thresh": 0.8,
    "fuse_score": True,
}


class ByteTrackIds:
    """Gives track IDs to detections of a detector without a tracker, using ultralytics' BYTETracker.

    Boxes stay the detector's own boxes; only ``track_ids`` is filled (-1 where the tracker has
    no confirmed track for a detection yet).
    """

    def __init__(self, **overrides: Any) -> None:
        ultralytics_offline()
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        cfg = dict(BYTETRACK_DEFAULTS)
        cfg.update(overrides)
        self._tracker = BYTETracker(IterableSimpleNamespace(**cfg))

    def assign(self, dets: Detections) -> Detections:
        """Return ``dets`` with track IDs from this frame's tracker update."""
        n = len(dets)
        inp = _TrackerInput(
            dets.xyxy.astype(np.float32),
            dets.scores.astype(np.float32),
            dets.class_ids.astype(np.float32),
        )
        out = self._tracker.update(inp, None)
        ids = np.full(n, -1, np.int64)
        if len(out):
            out = np.asarray(out).reshape(len(out), -1)
            for row in out:
                det_i = int(row[-1])
                if 0 <= det_i < n:
                    ids[det_i] = int(row[4])
        return Detections(dets.xyxy, dets.scores, ids, dets.class_ids)

    def reset(self) -> None:
        self._tracker.reset()


def clip_boxes(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip xyxy boxes to the frame so later stages never index outside it."""
    out = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out
