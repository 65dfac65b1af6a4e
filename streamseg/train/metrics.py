"""Validation metrics with upstream's definitions (UPSTREAM.md section 11).

Per ROI, at mask resolution, the predicted class is the argmax of the 3-class logits.  The
headline "mIoU" that selects the best checkpoint is the mean over ROIs of the target-class IoU
(IoU 1.0 when prediction and label are both empty).  Also reported, as upstream does: per-class
mean IoU, detection rates (share of ROIs with target IoU strictly above 0.5 / 0.7), overall pixel
accuracy, target precision/recall/F1 from pixel counts, and instance-separation accuracy
(on ground-truth foreground pixels, agreement of "is non-target" between prediction and label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

CLASS_NAMES = ("background", "target", "non_target")


def per_roi_iou(pred: Tensor, label: Tensor, cls: int) -> Tensor:
    """IoU of class ``cls`` for every ROI; [N] float64, 1.0 where both masks are empty."""
    p = (pred == cls).flatten(1)
    t = (label == cls).flatten(1)
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class SegMetrics:
    """Accumulates predictions over a validation pass; :meth:`compute` gives the report dict."""

    ious: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), dtype=np.int64))
    sep_confusion: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), dtype=np.int64))
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_batches: int = 0

    def update(self, logits_or_pred: Tensor, labels: Tensor) -> None:
        """Add one batch: 3-class logits [N,3,H,W] (or class indices [N,H,W]) and labels [N,H,W]."""
        pred = logits_or_pred.argmax(1) if logits_or_pred.dim() == 4 else logits_or_pred
        pred = pred.detach().to("cpu", torch.long)
        lab = labels.detach().to("cpu", torch.long)
        if pred.shape != lab.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(lab.shape)}")
        for c in range(3):
            self.ious[c].extend(per_roi_iou(pred, lab, c).tolist())
        idx = (lab.flatten() * 3 + pred.flatten()).numpy()
        self.confusion += np.bincount(idx, minlength=9).reshape(3, 3)
        fg = lab > 0
        if bool(fg.any()):
            t = (lab[fg] == 2).long()
            p = (pred[fg] == 2).long()
            self.sep_confusion += np.bincount((t * 2 + p).numpy(), minlength=4).reshape(2, 2)

    def add_loss(self, parts: dict[str, float]) -> None:
        """Accumulate one batch's loss components (averaged per batch in :meth:`compute`)."""
        for k, v in parts.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0.0) + float(v)
        self.loss_batches += 1

    @property
    def num_rois(self) -> int:
        return len(self.ious[1])

    def compute(self) -> dict[str, float]:
        """Report dict; ``miou`` (== ``target_iou``) is upstream's checkpoint-selection metric."""
        out: dict[str, float] = {"num_rois": float(self.num_rois)}
        for c in range(3):
            vals = self.ious[c]
            out[f"iou_class_{c}"] = float(np.mean(vals)) if vals else 0.0
        tious = np.asarray(self.ious[1], dtype=np.float64)
        out["target_iou"] = float(tious.mean()) if tious.size else 0.0
        out["miou"] = out["target_iou"]
        for thr in (0.5, 0.7):
            out[f"detection_rate_{thr}"] = float((tious > thr).mean()) if tious.size else 0.0
        total = self.confusion.sum()
        out["overall_accuracy"] = float(np.trace(self.confusion) / total) if total else 0.0
        # target vs everything else, from pixel counts
        tp = float(self.confusion[1, 1])
        fp = float(self.confusion[[0, 2], 1].sum())
        fn = float(self.confusion[1, [0, 2]].sum())
        prec = tp / (tp + fp) if tp + fp > 0 else 0.0
        rec = tp / (tp + fn) if tp + fn > 0 else 0.0
        out["target_precision"] = prec
        out["target_recall"] = rec
        out["target_f1"] = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        s = self.sep_confusion.sum()
        out["instance_separation_accuracy"] = float(np.trace(self.sep_confusion) / s) if s else 0.0
        if self.loss_batches:
            for k, v in self.loss_sums.items():
                out[f"loss/{k}"] = v / self.loss_batches
        return out


def format_report(metrics: dict[str, float]) -> str:
    """Human-readable multi-line summary of :meth:`SegMetrics.compute` output."""
    lines = [
        f"ROIs evaluated:               {int(metrics.get('num_rois', 0))}",
        f"Target mIoU (upstream):       {metrics['target_iou']:.4f}",
        f"Detection rate IoU > 0.5:     {metrics['detection_rate_0.5']:.2%}",
        f"Detection rate IoU > 0.7:     {metrics['detection_rate_0.7']:.2%}",
        "Per-class IoU (mean over ROIs):",
    ]
    for c, name in enumerate(CLASS_NAMES):
        lines.append(f"  {name:<12} {metrics[f'iou_class_{c}']:.4f}")
    lines += [
        f"Target precision / recall / F1: {metrics['target_precision']:.4f} / "
        f"{metrics['target_recall']:.4f} / {metrics['target_f1']:.4f}",
        f"Instance separation accuracy: {metrics['instance_separation_accuracy']:.4f}",
        f"Overall pixel accuracy:       {metrics['overall_accuracy']:.4f}",
    ]
    if "loss/loss" in metrics:
        lines.append(f"Validation loss:              {metrics['loss/loss']:.4f}")
    return "\n".join(lines)
