"""INT8 static quantisation of an exported person model (``streamseg export --int8``).

ONNX Runtime's ``quantize_static`` (QDQ format, per-channel int8 weights, int8 activations),
calibrated on frames of real footage with person boxes from OpenCV's HOG people detector (kept
here, tiny, so quantisation does not depend on the detection stage). Frames are split: the first
part calibrates, later frames (held out) measure how far the INT8 masks move from FP32 (mean IoU
of the target-class masks) and the speed of both graphs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError, UserError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- footage and boxes
def read_frames(video: str | Path, count: int, step: int = 1, start: int = 0) -> list[np.ndarray]:
    """Up to ``count`` RGB uint8 frames [H,W,3] from a video file (PyAV), every ``step``-th from ``start``."""
    import av

    p = Path(video)
    if not p.is_file():
        raise SourceError(f"{p}: calibration video not found")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(p)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= start and (i - start) % step == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) >= count:
                        break
    except av.error.FFmpegError as e:
        raise SourceError(f"{p}: cannot decode video ({e})") from None
    if not frames:
        raise SourceError(f"{p}: no video frames decoded")
    return frames


_HOG = None


def hog_person_boxes(frame_rgb: np.ndarray, max_boxes: int = 8) -> np.ndarray:
    """Pixel boxes [K,4] (x1, y1, x2, y2) of people, from OpenCV's default HOG people detector."""
    import cv2

    global _HOG
    if _HOG is None:
        _HOG = cv2.HOGDescriptor()
        _HOG.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    rects, weights = _HOG.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    order = np.argsort(-np.asarray(weights).reshape(-1))[:max_boxes]
    r = np.asarray(rects, dtype=np.float32)[order]
    return np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1)


def to_model_inputs(
    frame_rgb: np.ndarray, boxes_px: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a frame to the export size ([1,3,H,W] float32 in [0,1]) and normalise its boxes."""
    import cv2

    h0, w0 = frame_rgb.shape[:2]
    img = cv2.resize(frame_rgb, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    images = (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    if len(boxes_px) == 0:  # keep every sample useful: one central person-shaped box
        boxes_px = np.array([[w0 * 0.4, h0 * 0.2, w0 * 0.6, h0 * 0.8]], dtype=np.float32)
    b = np.asarray(boxes_px, dtype=np.float32)
    scale = np.array([w0, h0, w0, h0], dtype=np.float32)
    norm = np.clip(b / scale, 0.0, 1.0)
    rois = np.concatenate([np.zeros((len(norm), 1), np.float32), norm], axis=1)
    return np.ascontiguousarray(images), np.ascontiguousarray(rois)


def footage_samples(
    video: str | Path, count: int, hw: tuple[int, int], step: int = 5, start: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(images, rois) model inputs from ``count`` frames with HOG person boxes."""
    return [
        to_model_inputs(f, hog_person_boxes(f), hw) for f in read_frames(video, count, step, start)
    ]


class _Reader:
    """onnxruntime CalibrationDataReader over prepared samples."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]]):
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self._it, None)
        return None if nxt is None else {"images": nxt[0], "rois": nxt[1]}


# ----------------------------------------------------------------------------- quantise and compare
def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    samples: list[tuple[np.ndarray, np.ndarray]],
    *,
    op_types: list[str] | None = None,
    exclude_prefixes: tuple[str, ...] = (),
) -> Path:
    """Static INT8 (QDQ, per-channel weights) of ``fp32_path`` calibrated on ``samples``.

    ``op_types`` limits which operator types get quantised (None: all ORT supports);
    nodes whose name starts with one of ``exclude_prefixes`` stay float. Activation ranges: MinMax
    (ORT's percentile/entropy calibrators need equal tensor shapes; ROI counts vary per frame).
    Measured on the B0 parity weights (random, see the bench JSON): keeping the output-producing
    tail float or quantising only convolutions did not keep the masks closer enough to pay for
    the lost speed, so the default quantises every operator ORT supports.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(fp32_path), Path(int8_path)
    if not samples:
        raise UserError("INT8 calibration needs at least one frame (--calib-frames >= 1)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_name(dst.stem + ".preproc.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model_in = pre
    except Exception as e:  # noqa: BLE001 - optional step; quantise the raw graph instead
        log.warning(
            "quantisation pre-processing skipped (%s)",
            str(e).splitlines()[0][:120] if str(e) else type(e).__name__,
        )
        model_in = src
    nodes = onnx.load(str(model_in), load_external_data=False).graph.node
    exclude = [
        n.name for n in nodes if exclude_prefixes and n.name.startswith(tuple(exclude_prefixes))
    ]
    try:
        quantize_static(
            str(model_in),
            str(dst),
            _Reader(samples),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True},
        )
    finally:
        if pre.exists():
            pre.unlink()
    # carry our metadata over (quantize_static drops custom metadata)
    fp = onnx.load(str(src), load_external_data=False)
    q = onnx.load(str(dst))
    have = {p.key for p in q.metadata_props}
    for p in fp.metadata_props:
        if p.key not in have:
            e = q.metadata_props.add()
            e.key, e.value = p.key, p.value
    onnx.save(q, str(dst))
    return dst


def target_iou(a_logits: np.ndarray, b_logits: np.ndarray) -> np.ndarray:
    """Per-ROI IoU of the target-class masks (argmax == 1); 1.0 where both masks are empty."""
    a = a_logits.argmax(1) == 1
    b = b_logits.argmax(1) == 1
    inter = np.logical_and(a, b).reshape(len(a), -1).sum(1)
    union = np.logical_or(a, b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_models(
    fp32_path: str | Path,
    int8_path: str | Path,
    samples: list[tuple[np.ndarray, np.ndarray]],
    threads: int | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Mean target-mask IoU INT8 vs FP32 over held-out samples, and median latency of each graph."""
    from .ort_backend import OrtPersonModel

    fp, q = OrtPersonModel(fp32_path, threads=threads), OrtPersonModel(int8_path, threads=threads)
    ious: list[float] = []
    binary_diff = 0.0
    t_fp: list[float] = []
    t_q: list[float] = []
    for images, rois in samples:
        fp(images, rois)  # warm-up (first run allocates)
        q(images, rois)
        for _ in range(max(1, repeats)):  # interleaved so load changes hit both alike
            t0 = time.perf_counter()
            a = fp(images, rois)
            t1 = time.perf_counter()
            b = q(images, rois)
            t2 = time.perf_counter()
            t_fp.append(t1 - t0)
            t_q.append(t2 - t1)
        ious.extend(target_iou(a["masks"], b["masks"]).tolist())
        binary_diff = max(binary_diff, float(np.abs(a["binary_masks"] - b["binary_masks"]).mean()))
    fp_s, q_s = float(np.median(t_fp)), float(np.median(t_q))
    return {
        "mean_target_iou": float(np.mean(ious)) if ious else float("nan"),
        "min_target_iou": float(np.min(ious)) if ious else float("nan"),
        "rois": len(ious),
        "frames": len(samples),
        "binary_mask_mean_abs_diff_max": binary_diff,
        "fp32_s": fp_s,
        "int8_s": q_s,
        "speedup": fp_s / q_s if q_s > 0 else float("nan"),
        "fp32_bytes": Path(fp32_path).stat().st_size,
        "int8_bytes": Path(int8_path).stat().st_size,
    }


def quantize_person_model(
    fp32_path: str | Path,
    int8_path: str | Path,
    calib_video: str | Path,
    calib_frames: int = 32,
    held_out_frames: int = 8,
    step: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Calibrate on ``calib_frames`` frames, quantise, compare on ``held_out_frames`` later frames.

    Calibration frames are every ``step``-th frame from the start; held-out frames come after them
    (disjoint). The report is returned and written to ``<int8>.quant.json``.
    """
    from .ort_backend import OrtPersonModel

    if calib_frames < 1:
        raise UserError(f"export --calib-frames must be >= 1, got {calib_frames}")
    hw = OrtPersonModel(fp32_path, threads=threads).input_hw
    calib = footage_samples(calib_video, calib_frames, hw, step=step)
    held = (
        footage_samples(calib_video, held_out_frames, hw, step=step, start=calib_frames * step + 1)
        if held_out_frames > 0
        else []
    )
    if not held:
        held = calib[-1:]
    t0 = time.perf_counter()
    quantize_onnx(fp32_path, int8_path, calib)
    report = {
        "calib_video": str(calib_video),
        "calib_frames": len(calib),
        "calib_rois": int(sum(len(r) for _, r in calib)),
        "quantize_s": time.perf_counter() - t0,
        **compare_models(fp32_path, int8_path, held, threads=threads),
    }
    Path(int8_path).with_suffix(".quant.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "INT8 %s: mean target IoU vs FP32 %.3f on %d held-out ROIs, speed x%.2f",
        int8_path,
        report["mean_target_iou"],
        report["rois"],
        report["speedup"],
    )
    return report
