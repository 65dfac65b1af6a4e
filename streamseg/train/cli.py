"""Entry points behind ``streamseg train`` and ``streamseg eval`` (called by streamseg.cli)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from streamseg.train.config import load_train_config, require_paths

log = logging.getLogger(__name__)


def train_main(config: str, resume: str | None, overrides: list[str]) -> int:
    """Train from a config file (``--set key.path=value`` overrides; ``--resume last.pt``)."""
    from streamseg.train.trainer import Trainer

    cfg = load_train_config(config, overrides)
    trainer = Trainer(cfg, origin=str(config), resume=resume)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        path = Path(cfg.output.dir) / "last.pt"
        trainer._save_train_state(path)  # noqa: SLF001 - our own trainer
        sys.stderr.write(f"interrupted; state saved, continue with: streamseg train {config} --resume {path}\n")
        return 130
    best = summary.get("best_miou")
    if best is not None:
        val = f"best val mIoU {best:.4f} at epoch {summary['best_epoch']}"
    elif summary.get("has_validation"):
        val = "no validation yet (no epoch finished)"
    else:
        val = "no validation set (data.val_annotations not set)"
    sys.stdout.write(f"trained {summary['global_step']} steps ({summary['epochs_completed']} epochs) "
                     f"on {summary['device']}; {val}\n")
    if summary.get("stopped_early"):
        sys.stdout.write(f"continue with --resume {Path(summary['output_dir']) / 'last.pt'}\n")
    sys.stdout.write(f"outputs in {summary['output_dir']}\n")
    return 0


def eval_main(config: str, weights: str, overrides: list[str], json_out: str | None) -> int:
    """Evaluate a weights file on the config's validation set; print text, write JSON."""
    import torch

    from streamseg.models import load_checkpoint
    from streamseg.train.metrics import format_report
    from streamseg.train.trainer import _loader, evaluate, make_dataset, resolve_device

    cfg = load_train_config(config, overrides)
    require_paths(cfg, str(config), ["val_annotations", "val_images"])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    model = load_checkpoint(weights, roi_size=tuple(cfg.model.roi_size), mask_size=tuple(cfg.model.mask_size))
    if tuple(model.spec.mask_size) != tuple(cfg.model.mask_size):
        log.warning("%s: model mask size %s differs from config model.mask_size %s; labels follow the model",
                    weights, model.spec.mask_size, cfg.model.mask_size)
        cfg.model.mask_size = tuple(model.spec.mask_size)
    if model.spec.name != cfg.model.name:
        log.warning("%s holds a %s model; config says %s (evaluating the checkpoint's model)",
                    weights, model.spec.name, cfg.model.name)
    model = model.to(device).eval()
    ds = make_dataset(cfg, "val", augment=False)
    bs = cfg.train.batch_size
    batches = [list(range(i, min(i + bs, len(ds)))) for i in range(0, len(ds), bs)]
    amp = bool(cfg.train.amp and device.type == "cuda")
    metrics = evaluate(model, _loader(ds, batches, cfg.data.num_workers), device, loss=None, amp=amp,
                       progress=cfg.output.progress, desc="eval")
    report: dict[str, Any] = {
        "weights": str(weights),
        "model": model.spec.name,
        "val_annotations": cfg.data.val_annotations,
        "image_size": list(cfg.data.image_size),
        "mask_size": list(model.spec.mask_size),
        "metric_definitions": "upstream: per-ROI argmax at mask size; mIoU = mean target-class IoU "
                              "(1.0 when both empty); detection rate = share of ROIs with IoU > t",
        "metrics": metrics,
    }
    out = Path(json_out) if json_out else Path(cfg.output.dir) / f"eval_{Path(weights).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(f"{model.spec.name} weights {weights} on {cfg.data.val_annotations}\n")
    sys.stdout.write(format_report(metrics) + "\n")
    sys.stdout.write(f"JSON written to {out}\n")
    return 0
