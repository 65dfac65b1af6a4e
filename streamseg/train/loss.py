"""Upstream's hierarchical training loss, reproduced term by term (UPSTREAM.md section 8).

The loss is stateful: the class weights of the bg/fg and target/non-target terms are exponential
moving averages updated on every call, exactly as upstream does, so two calls on the same inputs
give slightly different totals.  ``state_dict``-style helpers let the trainer checkpoint the EMA
so a resumed run continues identically.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

ContourMode = Literal["upstream", "logits_fixed"]


def contour_targets(targets: Tensor) -> Tensor:
    """Thick edges of the class-1 (target) mask as float [N,1,H,W] in {0,1}.

    Edges are the absolute vertical/horizontal differences (replicate-padded at the far border),
    their maximum, thickened by a box filter whose side grows with the mask size.
    """
    n, h, w = targets.shape
    tmask = (targets == 1).float().unsqueeze(1)
    dy = (tmask[:, :, 1:, :] - tmask[:, :, :-1, :]).abs()
    dx = (tmask[:, :, :, 1:] - tmask[:, :, :, :-1]).abs()
    dy = F.pad(dy, (0, 0, 0, 1), mode="replicate")
    dx = F.pad(dx, (0, 1, 0, 0), mode="replicate")
    edges = torch.maximum(dy, dx)
    e = max(1, int(1.5 * math.sqrt(h * w / 3072.0)))
    k = 2 * e - 1
    if k > 1:
        box = torch.ones(1, 1, k, k, dtype=edges.dtype, device=edges.device) / float(k * k)
        edges = (F.conv2d(edges, box, padding=k // 2) > 0.1).float()
    return edges


def contour_weight(h: int, w: int, base: float = 0.1) -> float:
    """Upstream's size-dependent contour weight: base * sqrt(3072 / (H*W)), clamped to [0.001, 0.5]."""
    return float(min(max(base * math.sqrt(3072.0 / (h * w)), 0.001), 0.5))


def distance_targets(targets: Tensor, iterations: int = 5) -> Tensor:
    """Upstream's pseudo-distance target (not a real distance transform): iterated soft dilation."""
    d = (targets == 1).float().unsqueeze(1)
    for _ in range(iterations):
        grown = F.max_pool2d(d, 3, stride=1, padding=1)
        d = d + (1.0 - d) * grown * 0.5
    return d


def boundary_aware_ce(logits: Tensor, targets: Tensor, width: int = 3, weight: float = 2.0) -> Tensor:
    """Per-pixel CE, weighted ``weight`` on class boundaries (dilation minus erosion of any class)."""
    c = logits.shape[1]
    onehot = F.one_hot(targets, num_classes=c).permute(0, 3, 1, 2).float()
    dil = F.max_pool2d(onehot, width, stride=1, padding=width // 2)
    ero = 1.0 - F.max_pool2d(1.0 - onehot, width, stride=1, padding=width // 2)
    boundary = (dil - ero).sum(dim=1) > 0
    wmap = torch.ones_like(targets, dtype=logits.dtype)
    wmap[boundary] = weight
    return (F.cross_entropy(logits, targets, reduction="none") * wmap).mean()


def soft_dice_loss(logits: Tensor, targets: Tensor, cls: int = 1, smooth: float = 1e-6) -> Tensor:
    """1 - soft Dice of softmax(logits)[cls] against (targets == cls), per sample then mean."""
    probs = F.softmax(logits, dim=1)[:, cls]
    gt = (targets == cls).to(probs.dtype)
    inter = (probs * gt).flatten(1).sum(1)
    denom = probs.flatten(1).sum(1) + gt.flatten(1).sum(1)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return 1.0 - dice.mean()


class HierarchicalLoss(nn.Module):
    """Upstream's ``RefinedHierarchicalLoss`` with the defaults its trainer builds for this family.

    ``total, parts = loss(outputs, targets)``: ``outputs`` is the model's output dict (needs
    ``masks``, ``bg_fg_logits``, ``target_nontarget_logits``; ``contours`` and ``distance_map``
    when those terms are on), ``targets`` int64 [N,H,W] with 0 background / 1 target /
    2 non-target.  ``parts`` holds plain floats under upstream's component names, plus ``loss``
    (the returned total).  Note that upstream's ``total_loss`` entry is only the hierarchical part
    (bg/fg, target/non-target, CE, Dice, consistency), without the boundary, contour and distance
    terms; ``loss`` includes them.  The fixture's ``total_loss_call1`` is ``loss``.

    ``contour_mode="upstream"`` (default) reproduces upstream's defect: ``contours`` are already
    sigmoid probabilities, yet they are fed to BCE-with-logits (a second sigmoid), which caps the
    gradient and keeps the term near 0.7 even for perfect contours.  ``"logits_fixed"`` treats
    them as probabilities and applies plain BCE, which is what was intended.
    """

    def __init__(
        self,
        bg_weight: float = 1.5,
        fg_weight: float = 1.5,
        target_weight: float = 1.2,
        consistency_weight: float = 0.3,
        use_dynamic_weights: bool = True,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        boundary_aware_weight: float = 0.1,
        contour_loss_weight: float = 0.1,
        distance_loss_weight: float = 0.1,
        use_boundary_aware_loss: bool = True,
        use_contour_detection: bool = True,
        use_distance_transform: bool = True,
        contour_mode: ContourMode = "upstream",
        ema_alpha: float = 0.9,
        term_clamp: float = 10.0,
    ) -> None:
        super().__init__()
        if contour_mode not in ("upstream", "logits_fixed"):
            raise ValueError(f"contour_mode must be 'upstream' or 'logits_fixed', got {contour_mode!r}")
        self.bg_weight = bg_weight
        self.fg_weight = fg_weight
        self.target_weight = target_weight
        self.consistency_weight = consistency_weight
        self.use_dynamic_weights = use_dynamic_weights
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.boundary_aware_weight = boundary_aware_weight
        self.contour_loss_weight = contour_loss_weight
        self.distance_loss_weight = distance_loss_weight
        self.use_boundary_aware_loss = use_boundary_aware_loss
        self.use_contour_detection = use_contour_detection
        self.use_distance_transform = use_distance_transform
        self.contour_mode: ContourMode = contour_mode
        self.ema_alpha = ema_alpha
        self.term_clamp = term_clamp
        self.reset_ema()

    # ---- EMA state (checkpointed by the trainer) ----
    def reset_ema(self) -> None:
        """Forget the moving-average class weights (bg/fg start at 1.0, t/nt at the first batch)."""
        self.ema_bg: float = 1.0
        self.ema_fg: float = 1.0
        self.ema_target: float | None = None
        self.ema_nontarget: float | None = None

    def ema_state(self) -> dict[str, float | None]:
        """The moving-average class weights, for checkpoints."""
        return {"bg": self.ema_bg, "fg": self.ema_fg, "target": self.ema_target, "nontarget": self.ema_nontarget}

    def load_ema_state(self, state: Mapping[str, float | None]) -> None:
        """Restore what :meth:`ema_state` returned."""
        self.ema_bg = float(state["bg"])  # type: ignore[arg-type]
        self.ema_fg = float(state["fg"])  # type: ignore[arg-type]
        t, nt = state.get("target"), state.get("nontarget")
        self.ema_target = None if t is None else float(t)
        self.ema_nontarget = None if nt is None else float(nt)

    # ---- terms ----
    def _bg_fg_term(self, logits: Tensor, targets: Tensor) -> Tensor:
        fg = (targets > 0).long()
        if self.use_dynamic_weights:
            n_fg = float(fg.sum().item())
            n_all = float(fg.numel())
            n_bg = n_all - n_fg
            w_bg = min(max(n_all / (2.0 * max(n_bg, 1.0)), 0.5), 3.0)
            w_fg = min(max(n_all / (2.0 * max(n_fg, 1.0)) * self.target_weight, 0.5), 3.0)
            a = self.ema_alpha
            self.ema_bg = a * self.ema_bg + (1.0 - a) * w_bg
            self.ema_fg = a * self.ema_fg + (1.0 - a) * w_fg
            weights = [self.ema_bg, self.ema_fg]
        else:
            weights = [1.0, self.target_weight]
        wt = torch.tensor(weights, dtype=torch.float32, device=logits.device)
        return F.cross_entropy(logits.float(), fg, weight=wt)

    def _tn_term(self, logits: Tensor, targets: Tensor) -> Tensor:
        fg = targets > 0
        n_t = float((targets == 1).sum().item())
        n_nt = float((targets == 2).sum().item())
        n_fg = n_t + n_nt
        if n_fg <= 0:
            return logits.sum() * 0.0
        if self.use_dynamic_weights:
            w_t = min(max(n_fg / (2.0 * max(n_t, 1.0)), 0.5), 3.0)
            w_nt = min(max(n_fg / (2.0 * max(n_nt, 1.0)), 0.5), 3.0)
            if self.ema_target is None or self.ema_nontarget is None:
                self.ema_target, self.ema_nontarget = w_t, w_nt
            else:
                a = self.ema_alpha
                self.ema_target = a * self.ema_target + (1.0 - a) * w_t
                self.ema_nontarget = a * self.ema_nontarget + (1.0 - a) * w_nt
            weights = [self.ema_target, self.ema_nontarget]
        else:
            weights = [1.0, 1.0]
        wt = torch.tensor(weights, dtype=torch.float32, device=logits.device)
        tn_labels = (targets == 2).long()
        per_px = F.cross_entropy(logits.float(), tn_labels, weight=wt, reduction="none")
        fgf = fg.float()
        return (per_px * fgf).sum() / fgf.sum().clamp(min=1.0)

    def _contour_term(self, contours: Tensor, targets: Tensor) -> Tensor:
        tgt = contour_targets(targets)
        c = contours.float()
        if self.contour_mode == "upstream":
            return F.binary_cross_entropy_with_logits(c, tgt)
        return F.binary_cross_entropy(c.clamp(1e-6, 1.0 - 1e-6), tgt)

    def forward(self, outputs: Mapping[str, Tensor], targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss (scalar tensor with grad) and a dict of float components."""
        if targets.dtype != torch.long:
            targets = targets.long()
        masks = outputs["masks"].float()
        bg_fg = outputs["bg_fg_logits"].float()
        tn = outputs["target_nontarget_logits"].float()

        l_bgfg = self._bg_fg_term(bg_fg, targets)
        l_tn = self._tn_term(tn, targets)
        l_ce = F.cross_entropy(masks, targets)
        p_final = F.softmax(masks, dim=1)
        p_bgfg = F.softmax(bg_fg, dim=1)
        l_cons = F.mse_loss(p_bgfg[:, 1], p_final[:, 1] + p_final[:, 2])
        l_dice = soft_dice_loss(masks, targets, cls=1)

        base = (
            self.bg_weight * l_bgfg
            + self.fg_weight * l_tn
            + self.ce_weight * l_ce
            + self.dice_weight * l_dice
            + self.consistency_weight * l_cons
        )
        with torch.no_grad():
            fg_pred = bg_fg.argmax(1) == 1
            fg_gt = targets > 0
            fg_acc = (fg_pred == fg_gt).float().mean().item()
            union = (fg_pred | fg_gt).sum().item()
            fg_iou = (fg_pred & fg_gt).sum().item() / union if union > 0 else 1.0
        parts: dict[str, float] = {
            "bg_fg_loss": l_bgfg.item(),
            "target_nontarget_loss": l_tn.item(),
            "final_loss": l_ce.item(),
            "consistency_loss": l_cons.item(),
            "total_loss": base.item(),
            "ce_loss": l_ce.item(),
            "dice_loss": l_dice.item(),
            "aux_fg_bg_loss": l_bgfg.item(),
            "aux_fg_accuracy": float(fg_acc),
            "aux_fg_iou": float(fg_iou),
            "bg_weight": self.ema_bg if self.use_dynamic_weights else 1.0,
            "fg_weight": self.ema_fg if self.use_dynamic_weights else self.target_weight,
            "target_weight": (self.ema_target or 1.0) if self.use_dynamic_weights else 1.0,
            "nontarget_weight": (self.ema_nontarget or 1.0) if self.use_dynamic_weights else 1.0,
        }
        total = base
        if self.use_boundary_aware_loss:
            l_ba = boundary_aware_ce(masks, targets).clamp(max=self.term_clamp)
            total = total + self.boundary_aware_weight * l_ba
            parts["boundary_aware"] = l_ba.item()
        if self.use_contour_detection and "contours" in outputs:
            h, w = targets.shape[-2:]
            wc = contour_weight(h, w, self.contour_loss_weight)
            l_c = self._contour_term(outputs["contours"], targets).clamp(max=self.term_clamp)
            total = total + wc * l_c
            parts["contour"] = l_c.item()
            parts["contour_weight"] = wc
        if self.use_distance_transform and "distance_map" in outputs:
            l_d = F.l1_loss(outputs["distance_map"].float(), distance_targets(targets)).clamp(max=self.term_clamp)
            total = total + self.distance_loss_weight * l_d
            parts["distance_transform"] = l_d.item()
        parts["loss"] = total.item()
        return total, parts
