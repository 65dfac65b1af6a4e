"""Overlay of people's masks, boxes and IDs on a frame, drawn with OpenCV only (no font downloads)."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from streamseg.masks import instance_binary_masks
from streamseg.records import FrameResult

log = logging.getLogger(__name__)

# 20 well-separated RGB colours; a track keeps its colour for its whole life (palette[id % 20]).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (255, 160, 0),
)
UNTRACKED_COLOR = (200, 200, 200)
FOREGROUND_COLOR = (0, 255, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_color(track_id: int) -> tuple[int, int, int]:
    """Stable RGB colour of a track; untracked people (id < 0) are light grey."""
    return UNTRACKED_COLOR if track_id < 0 else PALETTE[int(track_id) % len(PALETTE)]


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


class Annotator:
    """Draws a FrameResult onto its RGB image; mask blending touches only the people's box crops."""

    def __init__(
        self,
        alpha: float = 0.5,
        draw_boxes: bool = True,
        draw_ids: bool = True,
        draw_fps: bool = False,
        draw_foreground: bool = False,
    ) -> None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"annotation alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.draw_boxes = bool(draw_boxes)
        self.draw_ids = bool(draw_ids)
        self.draw_fps = bool(draw_fps)
        self.draw_foreground = bool(draw_foreground)

    def annotate(
        self, image: np.ndarray, result: FrameResult, fps: float | None = None
    ) -> np.ndarray:
        """Return a new RGB uint8 image with the overlay; ``image`` is left untouched."""
        out = np.array(image, dtype=np.uint8, copy=True, order="C")
        H, W = out.shape[:2]
        scale = max(0.4, min(H, W) / 720.0)
        thick = max(1, round(2 * scale))
        masks = result.masks
        dets = masks.detections if masks is not None else result.detections
        if masks is not None and self.draw_foreground and masks.foreground is not None:
            fg = np.asarray(masks.foreground)
            if fg.shape[:2] == (H, W):
                sel = fg >= masks.threshold
                a = self.alpha * 0.5
                out[sel] = (out[sel] * (1 - a) + np.array(FOREGROUND_COLOR) * a).astype(np.uint8)
        if masks is not None and len(masks) and self.alpha > 0:
            for i, (x0, y0, m) in enumerate(instance_binary_masks(masks, (H, W))):
                if not m.size or not m.any():
                    continue
                col = np.array(track_color(int(dets.track_ids[i])), np.float32)
                region = out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
                px = region[m].astype(np.float32)
                region[m] = (px * (1.0 - self.alpha) + col * self.alpha + 0.5).astype(np.uint8)
        if self.draw_boxes or self.draw_ids:
            for i in range(len(dets)):
                self._draw_box(
                    out, dets.xyxy[i], int(dets.track_ids[i]), float(dets.scores[i]), scale, thick
                )
        y_text = int(28 * scale)
        if self.draw_fps and fps is not None:
            self._label(
                out, f"{fps:.1f} FPS", (int(8 * scale), y_text), 0.8 * scale, (0, 0, 0), thick
            )
            y_text += int(32 * scale)
        if result.watermark:
            self._watermark(out, result.watermark, scale, thick)
        return out

    def _draw_box(
        self, img: np.ndarray, box: np.ndarray, tid: int, score: float, scale: float, thick: int
    ) -> None:
        col = track_color(tid)
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        if self.draw_boxes:
            cv2.rectangle(img, (x1, y1), (x2, y2), col, thick, cv2.LINE_8)
        if self.draw_ids:
            text = f"id {tid} {score:.2f}" if tid >= 0 else f"{score:.2f}"
            fs = 0.5 * scale
            (tw, th), base = cv2.getTextSize(text, FONT, fs, max(1, thick - 1))
            ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + 4
            cv2.rectangle(img, (x1, ty - th - 3), (x1 + tw + 4, ty + base - 1), col, -1)
            cv2.putText(
                img, text, (x1 + 2, ty), FONT, fs, _text_color(col), max(1, thick - 1), cv2.LINE_AA
            )

    @staticmethod
    def _label(
        img: np.ndarray,
        text: str,
        org: tuple[int, int],
        fs: float,
        bg: tuple[int, int, int],
        thick: int,
    ) -> None:
        (tw, th), base = cv2.getTextSize(text, FONT, fs, thick)
        x, y = org
        cv2.rectangle(img, (x - 4, y - th - 4), (x + tw + 4, y + base + 2), bg, -1)
        cv2.putText(img, text, (x, y), FONT, fs, _text_color(bg), thick, cv2.LINE_AA)

    @staticmethod
    def _watermark(img: np.ndarray, text: str, scale: float, thick: int) -> None:
        H, W = img.shape[:2]
        fs = 1.0 * scale
        t = max(2, thick + 1)
        (tw, _), base = cv2.getTextSize(text, FONT, fs, t)
        while tw > W - 16 and fs > 0.3:  # keep long watermarks on screen
            fs *= 0.8
            (tw, _), base = cv2.getTextSize(text, FONT, fs, t)
        org = ((W - tw) // 2, H - base - int(12 * scale))
        cv2.putText(img, text, org, FONT, fs, (0, 0, 0), t + 3, cv2.LINE_AA)
        cv2.putText(img, text, org, FONT, fs, (255, 40, 40), t, cv2.LINE_AA)
