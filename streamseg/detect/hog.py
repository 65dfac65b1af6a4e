"""OpenCV's HOG + linear SVM people detector: no download, real boxes on real footage."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from streamseg.errors import UserError
from streamseg.records import Detections, Frame

from .base import ByteTrackIds, clip_boxes

log = logging.getLogger(__name__)

# HOG scores are SVM margins (about 0..3 on people), not probabilities, so ByteTrack's thresholds
# are moved onto that scale and score fusion (which assumes [0, 1]) is off.
HOG_TRACKER_ARGS = {
    "track_high_thresh": 0.5,
    "track_low_thresh": 0.1,
    "new_track_thresh": 0.5,
    "fuse_score": False,
}


class HogDetector:
    """People boxes from ``cv2.HOGDescriptor`` (default 64x128 people SVM), merged with NMS.

    ``upscale`` > 1 finds people shorter than the 128 px window at a CPU cost; boxes are mapped
    back to frame pixels. Scores are the SVM margins. Track IDs come from ultralytics' BYTETracker.
    """

    def __init__(
        self,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        upscale: float = 1.0,
        hit_threshold: float = 0.0,
        nms_iou: float = 0.3,
        min_score: float = 0.0,
        group_threshold: int = 2,
        tracker: str | None = "bytetrack",
    ) -> None:
        if not hasattr(cv2, "HOGDescriptor"):
            raise UserError(
                f"detector.type=hog needs OpenCV 4.x with HOGDescriptor (found cv2 {cv2.__version__}); "
                "install opencv-python<5 or use detector.type=yolo"
            )
        if int(win_stride) < 1 or int(padding) < 0:
            raise UserError(
                f"detector.win_stride must be >= 1 and detector.padding >= 0 (got {win_stride}, {padding})"
            )
        if not float(scale) > 1.0:
            raise UserError(f"detector.scale must be > 1.0 (pyramid step), got {scale}")
        if not 0.1 <= float(upscale) <= 8.0:
            raise UserError(f"detector.upscale must be in [0.1, 8], got {upscale}")
        if not 0.0 < float(nms_iou) <= 1.0:
            raise UserError(f"detector.nms_iou must be in (0, 1], got {nms_iou}")
        if tracker is not None and str(tracker).lower() not in ("bytetrack", "none", "off", ""):
            raise UserError(
                f"detector.tracker: '{tracker}' is not available for hog; allowed: bytetrack, none"
            )
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.win_stride = (int(win_stride), int(win_stride))
        self.padding = (int(padding), int(padding))
        self.scale = float(scale)
        self.upscale = float(upscale)
        self.hit_threshold = float(hit_threshold)
        self.nms_iou = float(nms_iou)
        self.min_score = float(min_score)
        self.group_threshold = int(group_threshold)
        use_tracker = tracker is not None and str(tracker).lower() == "bytetrack"
        self._ids = ByteTrackIds(**HOG_TRACKER_ARGS) if use_tracker else None
        self.tracks = self._ids is not None

    def detect(self, frame: Frame) -> Detections:
        """Detect people in the (optionally rescaled) BGR frame and map boxes back to frame pixels."""
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        if self.upscale != 1.0:
            interp = cv2.INTER_LINEAR if self.upscale > 1 else cv2.INTER_AREA
            bgr = cv2.resize(bgr, None, fx=self.upscale, fy=self.upscale, interpolation=interp)
        win_w, win_h = self.hog.winSize
        if bgr.shape[0] < win_h or bgr.shape[1] < win_w:
            # smaller than one detection window: nobody fits, and OpenCV 4.x crashes on such images
            return (
                self._ids.assign(Detections.empty())
                if self._ids is not None
                else Detections.empty()
            )
        rects, weights = self.hog.detectMultiScale(
            bgr,
            hitThreshold=self.hit_threshold,
            winStride=self.win_stride,
            padding=self.padding,
            scale=self.scale,
            groupThreshold=self.group_threshold,
        )
        dets = self._to_detections(
            np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), frame
        )
        return self._ids.assign(dets) if self._ids is not None else dets

    def _to_detections(self, rects: np.ndarray, weights: np.ndarray, frame: Frame) -> Detections:
        if len(rects) == 0:
            return Detections.empty()
        keep = weights >= self.min_score
        rects, weights = rects[keep], weights[keep]
        if len(rects) == 0:
            return Detections.empty()
        idx = cv2.dnn.NMSBoxes(
            [[int(v) for v in r] for r in rects],
            [float(w) for w in weights],
            float(self.min_score),
            self.nms_iou,
        )
        idx = np.asarray(idx, np.int64).reshape(-1)
        rects, weights = rects[idx].astype(np.float32), weights[idx].astype(np.float32)
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / self.upscale
        order = np.argsort(-weights, kind="stable")
        return Detections(clip_boxes(xyxy[order], frame.height, frame.width), weights[order])

    def reset(self) -> None:
        if self._ids is not None:
            self._ids.reset()

    def close(self) -> None:
        """Nothing to release: HOG holds no files or devices."""
