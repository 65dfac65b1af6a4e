"""Box-local mask geometry: paste a person's mask-grid probability into the frame, resolve overlaps.

Masks stay on the model's box-normalised grid until something needs frame pixels; every helper here
works on the box's crop of the frame, so cost grows with the people, not with the frame size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np

from streamseg.records import Detections, PersonMasks

log = logging.getLogger(__name__)

Crop = tuple[int, int, np.ndarray]  # (x0, y0, array [h, w]) placed at frame[y0:y0+h, x0:x0+w]

UINT16_MAX = 65535


def box_crop(box_xyxy: Sequence[float], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel rectangle (x0, y0, w, h) of the frame pixels whose centres lie inside the box.

    Pixel k has its centre at coordinate k (the ROI align's convention), so the covered pixels are
    ceil(x1)..floor(x2), clipped to the frame. w or h is 0 for boxes that cover no pixel centre.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    H, W = int(frame_hw[0]), int(frame_hw[1])
    x0 = min(max(0, math.ceil(x1)), W)
    y0 = min(max(0, math.ceil(y1)), H)
    xe = max(min(W - 1, math.floor(x2)), x0 - 1)
    ye = max(min(H - 1, math.floor(y2)), y0 - 1)
    return x0, y0, xe - x0 + 1, ye - y0 + 1


def _axis(lo: float, hi: float, start: int, n_roi: int, n_mask: int) -> tuple[float, float]:
    """Scale and offset mapping a crop pixel index to a mask-grid index along one axis.

    Frame coordinate t lies at ROI sample s = (t - lo) * (n_roi - 1) / (hi - lo) (corner-inclusive
    sampling); the mask is an n_mask/n_roi upsampling of the ROI with half-pixel alignment (for the
    model's stride-2 transposed conv, mask index m sits at s = (m - 0.5) / 2), so m = (s + 0.5) * k - 0.5.
    """
    k = n_mask / n_roi
    span = hi - lo
    per = (n_roi - 1) / span if span > 1e-6 else 0.0
    return per * k, ((start - lo) * per + 0.5) * k - 0.5


def paste_prob(
    prob: np.ndarray,
    box_xyxy: Sequence[float],
    frame_hw: tuple[int, int],
    roi_hw: tuple[int, int] | None = None,
) -> Crop:
    """Resample a box-local probability grid [Hm, Wm] onto the frame pixels of its box (bilinear).

    Returns (x0, y0, crop float32 [h, w]) for the smallest crop covering the box, clipped to the
    frame. ``roi_hw`` is the model's ROI size; None means the mask is 2x the ROI (all configs in
    scope: ROI 64x48 -> mask 128x96).
    """
    p = np.asarray(prob, np.float32)
    if p.ndim != 2:
        raise ValueError(f"prob must be 2-D [Hm, Wm], got shape {p.shape}")
    hm, wm = p.shape
    h_roi, w_roi = roi_hw if roi_hw is not None else (max(1, hm // 2), max(1, wm // 2))
    x0, y0, w, h = box_crop(box_xyxy, frame_hw)
    if w <= 0 or h <= 0:
        return x0, y0, np.zeros((max(h, 0), max(w, 0)), np.float32)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    ax, bx = _axis(x1, x2, x0, w_roi, wm)
    ay, by = _axis(y1, y2, y0, h_roi, hm)
    M = np.array([[ax, 0.0, bx], [0.0, ay, by]], np.float64)
    crop = cv2.warpAffine(
        p, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return x0, y0, crop.reshape(h, w)


def paste_all(
    masks: PersonMasks, frame_hw: tuple[int, int], roi_hw: tuple[int, int] | None = None
) -> list[Crop]:
    """``paste_prob`` for every person of ``masks``."""
    return [
        paste_prob(masks.probs[i], masks.detections.xyxy[i], frame_hw, roi_hw)
        for i in range(len(masks))
    ]


def _overlap(a: Crop, b: Crop) -> tuple[slice, slice, slice, slice] | None:
    ax, ay, A = a
    bx, by, B = b
    x_lo, x_hi = max(ax, bx), min(ax + A.shape[1], bx + B.shape[1])
    y_lo, y_hi = max(ay, by), min(ay + A.shape[0], by + B.shape[0])
    if x_hi <= x_lo or y_hi <= y_lo:
        return None
    return (
        slice(y_lo - ay, y_hi - ay),
        slice(x_lo - ax, x_hi - ax),
        slice(y_lo - by, y_hi - by),
        slice(x_lo - bx, x_hi - bx),
    )


def binarize(probs: list[Crop], threshold: float = 0.5, exclusive: bool = True) -> list[Crop]:
    """Threshold pasted probabilities; with ``exclusive`` each pixel goes to one person only.

    Where several people pass the threshold the higher probability wins (ties: the earlier
    detection), so label maps, RLEs and areas all agree with each other.
    """
    out = [(x0, y0, c >= threshold) for x0, y0, c in probs]
    if not exclusive:
        return out
    for i in range(len(probs)):
        for j in range(len(probs)):
            if i == j:
                continue
            ov = _overlap(probs[i], probs[j])
            if ov is None:
                continue
            si_y, si_x, sj_y, sj_x = ov
            pi = probs[i][2][si_y, si_x]
            pj = probs[j][2][sj_y, sj_x]
            j_wins = (pj >= threshold) & ((pj > pi) | ((pj == pi) & (j < i)))
            out[i][2][si_y, si_x] &= ~j_wins
    return out


def instance_binary_masks(
    masks: PersonMasks,
    frame_hw: tuple[int, int],
    threshold: float | None = None,
    exclusive: bool = True,
    roi_hw: tuple[int, int] | None = None,
) -> list[Crop]:
    """Per-person boolean masks in frame pixels as (x0, y0, bool crop); threshold defaults to the masks' own."""
    thr = masks.threshold if threshold is None else float(threshold)
    return binarize(paste_all(masks, frame_hw, roi_hw), thr, exclusive)


def label_values(detections: Detections) -> np.ndarray:
    """The value each person gets in a label map: its track ID when tracked, else its 1-based index.

    IDs above 65535 wrap into 1..65535 so they fit a 16-bit PNG.
    """
    n = len(detections)
    ids = detections.track_ids.astype(np.int64)
    vals = np.where(ids > 0, ids, np.arange(1, n + 1, dtype=np.int64))
    big = vals > UINT16_MAX
    if big.any():
        log.debug("track ids above %d wrap in label maps", UINT16_MAX)
        vals[big] = (vals[big] - 1) % UINT16_MAX + 1
    return vals


def paint_labels(bins: list[Crop], labels: Sequence[int], frame_hw: tuple[int, int]) -> np.ndarray:
    """Full-frame uint16 label map from boolean crops (0 = background)."""
    out = np.zeros((int(frame_hw[0]), int(frame_hw[1])), np.uint16)
    for (x0, y0, m), lab in zip(bins, labels):
        h, w = m.shape
        if h and w:
            out[y0 : y0 + h, x0 : x0 + w][m] = int(lab)
    return out


def instance_label_map(
    masks: PersonMasks,
    frame_hw: tuple[int, int],
    threshold: float | None = None,
    roi_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """uint16 [H, W] instance map: 0 background, else track ID (or 1-based index when untracked).

    Overlaps go to the higher probability, as in ``instance_binary_masks(exclusive=True)``.
    """
    bins = instance_binary_masks(masks, frame_hw, threshold, exclusive=True, roi_hw=roi_hw)
    return paint_labels(bins, label_values(masks.detections), frame_hw)


def crop_to_frame(crop: Crop, frame_hw: tuple[int, int]) -> np.ndarray:
    """Place a crop into a zero frame (only for consumers that need full-frame arrays, e.g. RLE)."""
    x0, y0, c = crop
    out = np.zeros((int(frame_hw[0]), int(frame_hw[1])), c.dtype)
    h, w = c.shape
    out[y0 : y0 + h, x0 : x0 + w] = c
    return out


def crop_iou(a: Crop, b: Crop) -> float:
    """IoU of two boolean crops in frame coordinates; NaN when both are empty."""
    area_a = int(np.count_nonzero(a[2]))
    area_b = int(np.count_nonzero(b[2]))
    inter = 0
    ov = _overlap(a, b)
    if ov is not None:
        sa_y, sa_x, sb_y, sb_x = ov
        inter = int(np.count_nonzero(a[2][sa_y, sa_x] & b[2][sb_y, sb_x]))
    union = area_a + area_b - inter
    return float("nan") if union == 0 else inter / union
