"""Frames and pixel boxes -> model inputs (letterbox or stretch) and back.

The model samples ROIs at normalised coordinates of its input image. Boxes given in pixels of the
user's frame are mapped through the same resize (and letterbox padding) the frame went through, so
the crop lands on the same pixels at any input size. ``stretch`` to 640x640 is upstream's own
preprocessing and reproduces it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Resize:
    """How one frame was mapped into the model input: x_in = x * sx + pad_x (same for y)."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    sx: float
    sy: float
    pad_x: int = 0
    pad_y: int = 0

    @property
    def content_hw(self) -> tuple[int, int]:
        return (round(self.frame_hw[0] * self.sy), round(self.frame_hw[1] * self.sx))


def plan_resize(frame_hw: tuple[int, int], input_hw: tuple[int, int], mode: str = "letterbox") -> Resize:
    """Scale factors and padding for ``mode`` = 'letterbox' (aspect kept, centred) or 'stretch'."""
    fh, fw = frame_hw
    ih, iw = input_hw
    if mode == "stretch":
        return Resize(frame_hw, input_hw, iw / fw, ih / fh)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be 'letterbox' or 'stretch', got {mode!r}")
    s = min(ih / fh, iw / fw)
    ch, cw = round(fh * s), round(fw * s)
    return Resize(frame_hw, input_hw, cw / fw, ch / fh, (iw - cw) // 2, (ih - ch) // 2)


def prepare_image(image_rgb: np.ndarray, rs: Resize, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB [H,W,3] -> float32 CHW [3,Hin,Win] in [0,1] (cv2 INTER_LINEAR, as upstream)."""
    ch, cw = rs.content_hw
    ih, iw = rs.input_hw
    resized = image_rgb if (ch, cw) == image_rgb.shape[:2] else cv2.resize(image_rgb, (cw, ch), interpolation=cv2.INTER_LINEAR)
    if out is None:
        out = np.zeros((3, ih, iw), np.float32)
    elif rs.pad_x or rs.pad_y:
        out.fill(0.0)
    chw = out[:, rs.pad_y:rs.pad_y + ch, rs.pad_x:rs.pad_x + cw]
    np.divide(resized.transpose(2, 0, 1), np.float32(255.0), out=chw, casting="unsafe")
    return out


def boxes_to_rois(boxes_xyxy: np.ndarray, rs: Resize, batch_index: int = 0) -> np.ndarray:
    """Pixel boxes of the frame -> rois [N,5] (batch_index, x1, y1, x2, y2) normalised to the input."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    ih, iw = rs.input_hw
    out = np.empty((len(b), 5), np.float32)
    out[:, 0] = batch_index
    out[:, 1] = (b[:, 0] * rs.sx + rs.pad_x) / iw
    out[:, 2] = (b[:, 1] * rs.sy + rs.pad_y) / ih
    out[:, 3] = (b[:, 2] * rs.sx + rs.pad_x) / iw
    out[:, 4] = (b[:, 3] * rs.sy + rs.pad_y) / ih
    return out


def pixel_boxes_to_rois(boxes_xyxy: np.ndarray, frame_hw: tuple[int, int], batch_index: int = 0) -> np.ndarray:
    """Pixel boxes -> normalised rois when the frame is fed stretched (x / W, y / H), upstream's way."""
    return boxes_to_rois(boxes_xyxy, plan_resize(frame_hw, frame_hw, "stretch"), batch_index)


def unletterbox(prob: np.ndarray, rs: Resize) -> np.ndarray:
    """A full-input map [Hin, Win] back to the frame [H, W] (crop the padding, resize)."""
    ch, cw = rs.content_hw
    crop = prob[rs.pad_y:rs.pad_y + ch, rs.pad_x:rs.pad_x + cw]
    fh, fw = rs.frame_hw
    return cv2.resize(crop, (fw, fh), interpolation=cv2.INTER_LINEAR)
