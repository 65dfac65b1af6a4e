"""Person detectors behind one small protocol, created by name from the pipeline config."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from streamseg.errors import UserError

from .base import Detector

__all__ = [
    "DETECTOR_TYPES",
    "Detector",
    "create_detector",
    "detector_from_config",
    "detector_options",
]


def _yolo() -> Callable[..., Detector]:
    from .yolo import YoloDetector

    return YoloDetector


def _hog() -> Callable[..., Detector]:
    from .hog import HogDetector

    return HogDetector


def _boxes_file() -> Callable[..., Detector]:
    from .boxes_file import BoxesFileDetector

    return BoxesFileDetector


# Lazy so that e.g. HOG users never import torch/ultralytics model code they do not need.
DETECTOR_TYPES: dict[str, Callable[[], Callable[..., Detector]]] = {
    "yolo": _yolo,
    "hog": _hog,
    "boxes_file": _boxes_file,
}


def detector_options(type: str) -> dict[str, Any]:
    """The keyword options a detector type accepts, with defaults (``inspect.Parameter.empty`` if required)."""
    if type not in DETECTOR_TYPES:
        raise UserError(
            f"detector.type: unknown '{type}'; allowed: {', '.join(sorted(DETECTOR_TYPES))}"
        )
    sig = inspect.signature(DETECTOR_TYPES[type]().__init__)
    return {n: p.default for n, p in sig.parameters.items() if n != "self"}


def create_detector(type: str, **kwargs: Any) -> Detector:
    """Build the detector ``type`` ("yolo", "hog", "boxes_file") from its config options."""
    opts = detector_options(type)
    unknown = sorted(set(kwargs) - set(opts))
    if unknown:
        raise UserError(
            f"detector.{unknown[0]}: not an option of detector.type={type}; allowed: {', '.join(opts)}"
        )
    missing = [n for n, d in opts.items() if d is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise UserError(f"detector.{missing[0]} is required for detector.type={type}")
    return DETECTOR_TYPES[type]()(**kwargs)


def detector_from_config(cfg: Any, device: str | None = None) -> Detector:
    """Build the detector from the pipeline's ``detector`` section (streamseg.config.DetectorConfig).

    ``device`` replaces ``detector.device=auto`` (the runtime's device). Read by attribute, so any
    object with the same field names works.
    """
    kind = str(cfg.type)
    tracker = getattr(cfg, "tracker", "bytetrack")
    tracker = None if tracker is None or str(tracker).lower() == "none" else str(tracker)
    if kind == "yolo":
        dev = str(getattr(cfg, "device", "auto"))
        if dev == "auto" and device is not None:
            dev = device
        return create_detector(
            "yolo",
            weights=cfg.weights,
            conf=cfg.conf,
            iou=cfg.iou,
            imgsz=cfg.imgsz,
            max_det=cfg.max_det,
            device=dev,
            half=cfg.half,
            classes=list(cfg.classes),
            tracker=tracker,
        )
    if tracker is not None and tracker != "bytetrack":
        raise UserError(
            f"detector.tracker: '{tracker}' needs detector.type=yolo; {kind} allows bytetrack or none"
        )
    if kind == "hog":
        hog = cfg.hog
        opts = {k: getattr(hog, k) for k in detector_options("hog") if hasattr(hog, k)}
        return create_detector("hog", tracker=tracker, **opts)
    if kind == "boxes_file":
        return create_detector("boxes_file", path=cfg.boxes_file, tracker=tracker)
    return create_detector(kind)  # unknown type: one-line error from the registry
