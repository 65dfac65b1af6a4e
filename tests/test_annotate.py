"""Overlay: per-track colours, blending limited to the person's pixels, labels, FPS and watermark."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg.annotate import PALETTE, UNTRACKED_COLOR, Annotator, track_color
from streamseg.masks import instance_binary_masks
from streamseg.records import Detections, Frame, FrameResult, PersonMasks

HW = (240, 320)
GRAY = 100


def _result(
    box: list[float], tid: int, prob_value: float = 1.0, watermark: str | None = None
) -> FrameResult:
    img = np.full((*HW, 3), GRAY, np.uint8)
    det = Detections(np.array([box], np.float32), [0.87], [tid])
    prob = np.zeros((1, 128, 96), np.float32)
    prob[0, 16:112, 12:84] = prob_value  # the person fills the middle of the box
    masks = PersonMasks(det, prob, np.array([0.9], np.float32))
    return FrameResult(Frame(0, img), det, masks, watermark=watermark)


def test_mask_blend_only_on_person_pixels() -> None:
    res = _result([50, 40, 150, 220], tid=3)
    img = res.frame.image.copy()
    out = Annotator(alpha=0.5, draw_boxes=False, draw_ids=False).annotate(res.frame.image, res)
    np.testing.assert_array_equal(res.frame.image, img)  # input untouched
    assert out.shape == img.shape and out.dtype == np.uint8
    ((x0, y0, m),) = instance_binary_masks(res.masks, HW)
    full = np.zeros(HW, bool)
    full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    assert 0.3 < full[40:221, 50:151].mean() < 0.9
    expected = np.floor(GRAY * 0.5 + np.array(PALETTE[3]) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[full], np.broadcast_to(expected, (int(full.sum()), 3)))
    np.testing.assert_array_equal(out[~full], img[~full])  # nothing else changes


def test_colours_are_stable_per_track() -> None:
    ann = Annotator(alpha=1.0, draw_boxes=False, draw_ids=False)
    a = ann.annotate(_result([20, 20, 100, 200], 5).frame.image, _result([20, 20, 100, 200], 5))
    b = ann.annotate(_result([200, 30, 300, 230], 5).frame.image, _result([200, 30, 300, 230], 5))
    c = ann.annotate(_result([20, 20, 100, 200], 6).frame.image, _result([20, 20, 100, 200], 6))
    assert tuple(a[110, 60]) == tuple(b[130, 250]) == PALETTE[5] == track_color(5 + len(PALETTE))
    assert tuple(c[110, 60]) == PALETTE[6] != PALETTE[5]
    assert track_color(-1) == UNTRACKED_COLOR


def test_boxes_and_labels_are_drawn() -> None:
    res = _result([50, 60, 150, 220], tid=2, prob_value=0.0)  # empty mask: only box and label
    plain = Annotator(draw_boxes=False, draw_ids=False).annotate(res.frame.image, res)
    assert (plain == GRAY).all()
    boxed = Annotator(draw_boxes=True, draw_ids=False).annotate(res.frame.image, res)
    assert tuple(boxed[140, 50]) == PALETTE[2] and tuple(boxed[220, 100]) == PALETTE[2]
    assert (boxed[100:180, 70:130] == GRAY).all()  # inside stays clear
    labelled = Annotator(draw_boxes=False, draw_ids=True).annotate(res.frame.image, res)
    changed = np.argwhere((labelled != GRAY).any(axis=2))
    assert len(changed) > 50
    assert (
        changed[:, 0].max() < 60 and changed[:, 1].min() >= 49
    )  # the tag sits above the box's top-left
    wide = Annotator(draw_boxes=False, draw_ids=True).annotate(
        res.frame.image, _result([50, 60, 150, 220], -1, 0.0)
    )
    assert (wide != GRAY).any(axis=2).sum() < len(changed)  # untracked: score only, shorter tag


def test_fps_and_watermark() -> None:
    res = _result([200, 60, 300, 200], tid=1, prob_value=0.0)
    ann = Annotator(draw_boxes=False, draw_ids=False, draw_fps=True)
    out = ann.annotate(res.frame.image, res, fps=24.5)
    assert (out[:40, :120] != GRAY).any()  # FPS text top-left
    assert (ann.annotate(res.frame.image, res, fps=None) == GRAY).all()
    wm = _result([200, 60, 300, 200], tid=1, prob_value=0.0, watermark="UNTRAINED WEIGHTS")
    out = Annotator(draw_boxes=False, draw_ids=False).annotate(wm.frame.image, wm)
    bottom = out[HW[0] // 2 :]
    red = (bottom[..., 0] > 200) & (bottom[..., 1] < 100) & (bottom[..., 2] < 100)
    assert red.sum() > 100 and (out[: HW[0] // 2] == GRAY).all()


def test_without_masks_only_boxes() -> None:
    img = np.full((*HW, 3), GRAY, np.uint8)
    det = Detections(np.array([[10, 10, 60, 120]]), [0.5], [4])
    out = Annotator(draw_ids=False).annotate(img, FrameResult(Frame(0, img), det, None))
    assert tuple(out[60, 10]) == PALETTE[4] and (out[30:100, 20:50] == GRAY).all()


def test_bad_alpha() -> None:
    with pytest.raises(ValueError, match="alpha"):
        Annotator(alpha=1.5)
