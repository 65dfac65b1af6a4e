"""Person detectors behind one small protocol, created by name from the pipeline config."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from streamseg.errors import UserError

from .base import Detector

__all__ = ["DETECTOR_TYPES", "Detector", "create_detector", "detector_options"]


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
