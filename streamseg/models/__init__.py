"""The person model family: RGB Hierarchical UNet V2 (B0/B1/B7 and enhanced variants)."""

from __future__ import annotations

from typing import Any

from .hierarchical import HierarchicalUNetV2
from .registry import ModelSpec, get_spec, list_models


def create_model(name: str = "b0", **overrides: Any) -> HierarchicalUNetV2:
    """Build a variant by name with random init (no download). Overrides: roi_size, mask_size."""
    return HierarchicalUNetV2(get_spec(name, **overrides))


from .checkpoints import load_checkpoint, load_peopleseg_weights, save_checkpoint  # noqa: E402

__all__ = [
    "HierarchicalUNetV2", "ModelSpec", "create_model", "get_spec", "list_models",
    "load_checkpoint", "load_peopleseg_weights", "save_checkpoint",
]
