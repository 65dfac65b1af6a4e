"""Per-track mask smoothing and the flicker meter, on synthetic people whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg.errors import UserError
from streamseg.records import Detections, PersonMasks
from streamseg.smooth import FlickerMeter, MaskSmoother, flicker_iou

HM, WM = 128, 96
FRAME_HW = (480, 640)


def _person_grid() -> np.ndarray:
    """A fixed person-like blob on the box-normalised mask grid (head + body ellipses)."""
    r, c = np.mgrid[0:HM, 0:WM].astype(np.float32)
    body = ((c - 47.5) / 30) ** 2 + ((r - 80) / 45) ** 2 <= 1
    head = ((c - 47.5) / 12) ** 2 + ((r - 22) / 15) ** 2 <= 1
    return (body | head).astype(np.float32)


def _noisy_sequence(n: int, seed: int = 0) -> list[PersonMasks]:
    """One constant person walking right; the 'model' output is the truth plus heavy pixel noise."""
    rng = np.random.default_rng(seed)
    truth = _person_grid()
    out = []
    for t in range(n):
        box = np.array([[100 + 2 * t, 60, 196 + 2 * t, 316]], np.float32)
        prob = np.clip(0.15 + 0.7 * truth + rng.normal(0, 0.3, truth.shape), 0, 1).astype(
            np.float32
        )
        det = Detections(box, np.array([0.9]), np.array([1]))
        out.append(PersonMasks(det, prob[None], np.array([0.9], np.float32)))
    return out


def _mean_flicker(seq: list[PersonMasks], smoother: MaskSmoother | None) -> float:
    meter = FlickerMeter()
    for t, m in enumerate(seq):
        meter.update(smoother.smooth(m, t) if smoother else m, FRAME_HW, t)
    assert meter.pairs == len(seq) - 1
    mean = meter.mean_iou
    assert mean is not None
    return mean


def test_smoothing_raises_consecutive_iou() -> None:
    seq = _noisy_sequence(30)
    raw = _mean_flicker(seq, None)
    smoothed = _mean_flicker(seq, MaskSmoother(alpha=0.3))
    assert raw < 0.85  # the noise really flickers
    assert smoothed > raw + 0.05, (raw, smoothed)


def test_alpha_one_equals_no_smoothing_and_disabled_passes_through() -> None:
    seq = _noisy_sequence(5)
    sm = MaskSmoother(alpha=1.0)
    for t, m in enumerate(seq):
        np.testing.assert_array_equal(sm.smooth(m, t).probs, m.probs)
    off = MaskSmoother(alpha=0.3, enabled=False)
    assert all(off.smooth(m, t) is m for t, m in enumerate(seq))


def test_ema_formula_and_resets() -> None:
    a = np.full((1, HM, WM), 0.2, np.float32)
    b = np.full((1, HM, WM), 1.0, np.float32)
    box = np.array([[10, 10, 60, 110]], np.float32)

    def pm(prob: np.ndarray, tid: int, bx: np.ndarray = box) -> PersonMasks:
        return PersonMasks(Detections(bx, [0.9], [tid]), prob, np.array([0.8], np.float32))

    sm = MaskSmoother(alpha=0.25, max_age=2)
    np.testing.assert_allclose(sm.smooth(pm(a, 5), 0).probs, a)  # new track: as is
    # moved and rescaled box: the EMA still runs on the grid
    out = sm.smooth(pm(b, 5, np.array([[30, 5, 130, 205]], np.float32)), 1)
    np.testing.assert_allclose(out.probs, 0.25 * 1.0 + 0.75 * 0.2, rtol=1e-6)
    assert out.detections.xyxy[0, 0] == 30 and out.scores[0] == pytest.approx(0.8)
    # a different track id is new: no blending with track 5
    np.testing.assert_allclose(sm.smooth(pm(b, 6), 2).probs, b)
    # track 5 was last seen at frame 1; at frame 4 it was missing 2 frames (= max_age): still blended
    np.testing.assert_allclose(sm.smooth(pm(b, 5), 4).probs, 0.25 + 0.75 * 0.4, rtol=1e-6)
    # track 6 last seen at 2, now 6: missing 3 frames > max_age -> reset
    np.testing.assert_allclose(sm.smooth(pm(a, 6), 6).probs, a)
    # untracked people pass through
    np.testing.assert_allclose(sm.smooth(pm(b, -1), 7).probs, b)
    # going back in time (new source) resets everything
    np.testing.assert_allclose(sm.smooth(pm(b, 6), 0).probs, b)
    sm.reset()
    assert sm.active_tracks == 0


def test_smoother_rejects_bad_alpha() -> None:
    with pytest.raises(UserError, match=r"smoothing.alpha must be in \(0, 1\]"):
        MaskSmoother(alpha=0.0)
    with pytest.raises(UserError, match="smoothing.max_age"):
        MaskSmoother(max_age=-1)


def test_flicker_iou_in_frame_coordinates() -> None:
    m = np.ones((10, 10), bool)
    assert flicker_iou((0, 0, m), (0, 0, m)) == 1.0
    assert flicker_iou((0, 0, m), (5, 0, m)) == pytest.approx(50 / 150)  # half overlap
    assert flicker_iou((0, 0, m), (20, 20, m)) == 0.0
    assert np.isnan(flicker_iou((0, 0, ~m), (3, 3, ~m)))


def test_flicker_meter_counts_only_consecutive_frames() -> None:
    grid = _person_grid()[None]
    box = np.array([[100, 60, 196, 316]], np.float32)
    pm = PersonMasks(Detections(box, [0.9], [3]), grid, np.array([0.9], np.float32))
    meter = FlickerMeter()
    assert meter.update(pm, FRAME_HW, 0) == {}
    assert meter.update(pm, FRAME_HW, 1) == {3: 1.0}
    assert meter.update(pm, FRAME_HW, 5) == {}  # gap (dropped frames): not a pair
    moved = PersonMasks(
        Detections(box + [12, 0, 12, 0], [0.9], [3]), grid, np.array([0.9], np.float32)
    )
    iou = meter.update(moved, FRAME_HW, 6)[3]
    assert 0.2 < iou < 0.8
    s = meter.summary()
    assert s["flicker_pairs"] == 2 and s["flicker_tracks"] == 1
    assert s["flicker_mean_iou"] == pytest.approx((1.0 + iou) / 2, abs=1e-6)
    assert meter.per_track()[3] == pytest.approx((1.0 + iou) / 2)
