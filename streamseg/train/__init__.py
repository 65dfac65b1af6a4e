"""Training and evaluation of the hierarchical person-segmentation model (upstream recipe).

Heavy modules (data pipeline, trainer) are imported lazily so ``from streamseg.train import
HierarchicalLoss`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from streamseg.train.loss import HierarchicalLoss, contour_targets, distance_targets

__all__ = [
    "HierarchicalLoss",
    "contour_targets",
    "distance_targets",
    "CocoPersonRoiDataset",
    "RoiSample",
    "collate_rois",
    "SegMetrics",
    "TrainConfig",
    "load_train_config",
    "Trainer",
    "evaluate",
    "train_main",
    "eval_main",
]

_LAZY = {
    "CocoPersonRoiDataset": "streamseg.train.data",
    "RoiSample": "streamseg.train.data",
    "collate_rois": "streamseg.train.data",
    "SegMetrics": "streamseg.train.metrics",
    "TrainConfig": "streamseg.train.config",
    "load_train_config": "streamseg.train.config",
    "Trainer": "streamseg.train.trainer",
    "evaluate": "streamseg.train.trainer",
    "train_main": "streamseg.train.cli",
    "eval_main": "streamseg.train.cli",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'streamseg.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
