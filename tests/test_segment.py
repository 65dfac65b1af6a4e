"""The segmentation stage on the CPU: the same code as the CUDA path, streams turned into no-ops."""

from __future__ import annotations

import logging

import numpy as np
import torch

from streamseg.models import create_model
from streamseg.records import Detections, Frame
from streamseg.segment import Segmenter, SegmenterOptions, mask_scores


def _frames():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    dets = [Detections(np.array([[10, 10, 60, 100], [70, 20, 150, 110]], np.float32)),
            Detections(),  # a frame without people
            Detections(np.array([[5, 5, 80, 115]], np.float32), track_ids=np.array([7]))]
    return [Frame(i, im) for i, im in enumerate(imgs)], dets


def _model():
    torch.manual_seed(0)
    return create_model("b0", roi_size=(32, 24), mask_size=(64, 48))


def test_batched_chunked_and_streamed_calls_agree():
    frames, dets = _frames()
    opts = dict(device="cpu", input_size=(128, 160), resize="letterbox")
    single = Segmenter(_model(), SegmenterOptions(**opts))
    one_by_one = [single.segment([f], [d])[0] for f, d in zip(frames, dets)]
    batched = Segmenter(_model(), SegmenterOptions(max_rois=1, **opts)).segment(frames, dets)  # 3 frames, ROIs in chunks of 1
    streamed = [m for _, ms in Segmenter(_model(), SegmenterOptions(**opts)).stream([([f], [d]) for f, d in zip(frames, dets)])
                for m in ms]
    for a, b, c in zip(one_by_one, batched, streamed):
        assert a.probs.shape == b.probs.shape == c.probs.shape
        assert len(a) == len(b)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
        np.testing.assert_allclose(a.probs, c.probs, atol=1e-6)
    assert one_by_one[0].probs.shape == (2, 64, 48) and len(one_by_one[1]) == 0
    assert one_by_one[2].detections.track_ids.tolist() == [7]
    assert ((one_by_one[0].probs >= 0) & (one_by_one[0].probs <= 1)).all()


def test_fp16_on_cpu_falls_back_to_fp32_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        seg = Segmenter(_model(), SegmenterOptions(device="cpu", precision="fp16", input_size=(128, 160)))
    assert seg.precision == "fp32" and seg.copy_stream is None
    assert "fp16 needs CUDA" in caplog.text


def test_foreground_map_comes_back_at_frame_size():
    frames, dets = _frames()
    out = Segmenter(_model(), SegmenterOptions(device="cpu", input_size=(128, 160), want_foreground=True)).segment(
        frames[:1], dets[:1])[0]
    assert out.foreground.shape == (120, 160) and 0 <= out.foreground.min() <= out.foreground.max() <= 1


def test_mask_scores_are_mean_probability_over_target_pixels():
    probs = np.zeros((2, 4, 4), np.float32)
    probs[0, :2] = 0.8
    probs[0, 2, 0] = 0.6
    np.testing.assert_allclose(mask_scores(probs, 0.5), [(0.8 * 8 + 0.6) / 9, 0.0], rtol=1e-6)
