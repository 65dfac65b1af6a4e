"""The training loop: upstream's recipe, resumable bit for bit, with CSV/TensorBoard logs.

Reproducibility: the model is initialised from ``train.seed``; the sample order of an epoch is a
pure function of (seed, epoch) and the augmentation of an item of (seed, epoch, index); the
checkpoint holds model, optimizer, scheduler, AMP scaler, the loss's moving-average class weights,
every RNG state, the epoch and the position inside it.  So ``--resume last.pt`` continues exactly
where an interrupted run stopped (same weights as an uninterrupted run, within float tolerance).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from streamseg.errors import CheckpointError, ConfigError
from streamseg.train.augment import build_train_augmentation
from streamseg.train.config import TrainConfig, require_paths
from streamseg.train.data import CocoPersonRoiDataset, collate_rois, epoch_permutation
from streamseg.train.loss import HierarchicalLoss
from streamseg.train.metrics import SegMetrics

log = logging.getLogger(__name__)

STATE_FORMAT = "streamseg.train_state"


# --------------------------------------------------------------------------- small helpers


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA request is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; allowed: auto, cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every RNG state as tensors / python values (loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_loss(cfg: TrainConfig) -> HierarchicalLoss:
    """The hierarchical loss with the config's weights (defaults = upstream)."""
    c = cfg.loss
    return HierarchicalLoss(
        bg_weight=c.bg_weight, fg_weight=c.fg_weight, target_weight=c.target_weight,
        consistency_weight=c.consistency_weight, use_dynamic_weights=c.dynamic_weights,
        ce_weight=c.ce_weight, dice_weight=c.dice_weight, boundary_aware_weight=c.boundary_aware_weight,
        contour_loss_weight=c.contour_weight, distance_loss_weight=c.distance_weight,
        contour_mode=c.contour_mode,
    )


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine to ``min_lr`` over the epochs (stepped per epoch); optional linear warm-up first."""
    t = cfg.train
    if t.warmup_epochs <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs, eta_min=t.min_lr)
    warm = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1.0 / t.warmup_epochs, end_factor=1.0, total_iters=max(1, t.warmup_epochs - 1)
    )
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs - t.warmup_epochs, eta_min=t.min_lr)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[t.warmup_epochs])


def build_model(cfg: TrainConfig) -> nn.Module:
    """Create the configured variant (seeded random init) and apply the optional initialisation."""
    from streamseg.models import create_model, load_checkpoint, load_peopleseg_weights

    m = cfg.model
    model = create_model(m.name, roi_size=tuple(m.roi_size), mask_size=tuple(m.mask_size))
    if m.init_checkpoint:
        src = load_checkpoint(m.init_checkpoint, roi_size=tuple(m.roi_size), mask_size=tuple(m.mask_size))
        if src.spec.name != model.spec.name:
            raise CheckpointError(
                f"{m.init_checkpoint}: holds a {src.spec.name} model but model.name is {model.spec.name}"
            )
        model.load_state_dict(src.state_dict())
        log.info("initialised all weights from %s", m.init_checkpoint)
    if m.peopleseg_weights:
        load_peopleseg_weights(model, m.peopleseg_weights)
        log.info("initialised the people-seg UNet from %s", m.peopleseg_weights)
    if not m.init_checkpoint and not m.peopleseg_weights:
        log.warning("no model.peopleseg_weights or model.init_checkpoint: the people-seg UNet is random")
    model.freeze_backbone(m.freeze_peopleseg)
    return model


def make_dataset(cfg: TrainConfig, split: str, augment: bool) -> CocoPersonRoiDataset:
    """The train or val dataset of the config."""
    d = cfg.data
    ann = d.train_annotations if split == "train" else d.val_annotations
    img = d.train_images if split == "train" else d.val_images
    aug = build_train_augmentation(enabled=augment and d.augment, flip=d.flip)
    return CocoPersonRoiDataset(
        ann, img, image_size=tuple(d.image_size), mask_size=tuple(cfg.model.mask_size), min_size=d.min_size,
        max_targets=d.max_targets, augment=aug, seed=cfg.train.seed,
        repeat=d.repeat if split == "train" else 1,
    )


def _loader(ds: CocoPersonRoiDataset, batches: list[list[int]], workers: int) -> DataLoader:
    # A private generator: creating a DataLoader iterator draws a worker base seed, which would
    # otherwise consume the global RNG (dropout) and break exact resume mid-epoch.
    g = torch.Generator()
    g.manual_seed(0)
    return DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate_rois,
                      pin_memory=torch.cuda.is_available(), generator=g)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool) -> list[list[int]]:
    """The batches (lists of sample indices) of ``epoch``."""
    order = epoch_permutation(n, seed, epoch)
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out


def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    loss: HierarchicalLoss | None = None,
    amp: bool = False,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Upstream's validation metrics over ``loader`` (model in eval mode, no gradients)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    metrics = SegMetrics()
    it = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress)
    with torch.inference_mode():
        for batch in it:
            images = batch["images"].to(device, non_blocking=True)
            rois = batch["rois"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                out = model(images, rois, with_aux=loss is not None)
            metrics.update(out["masks"].float(), labels)
            if loss is not None:
                _, parts = loss(out, labels)
                metrics.add_loss(parts)
    model.train(was_training)
    return metrics.compute()


# --------------------------------------------------------------------------- trainer


@dataclass
class _Progress:
    epoch: int = 0  # epoch in progress (or next to start)
    step_in_epoch: int = 0  # batches of ``epoch`` already done
    global_step: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    sums: dict[str, float] = field(default_factory=dict)  # running sums of loss parts this epoch
    batches: int = 0  # batches summed in ``sums``
    skipped: int = 0  # non-finite steps skipped this epoch
    train_time: float = 0.0  # seconds spent in training steps this epoch


class Trainer:
    """Runs a :class:`TrainConfig`; ``fit()`` returns a summary dict (also written as JSON).

    Output folder layout (``output.dir``): ``last.pt`` (full training state, every epoch and on
    stop), ``checkpoint_epoch_NNNN.pt`` (same, the last ``keep_checkpoints`` kept), ``best.pt``
    (weights of the best validation mIoU) - all in streamseg's checkpoint format, so each one
    also loads as a model; ``upstream/best_model.pth`` and ``upstream/last_model.pth`` in
    upstream's layout; ``metrics.csv``, ``tb/`` (TensorBoard), ``summary.json``.
    """

    def __init__(self, cfg: TrainConfig, origin: str = "config", resume: str | None = None) -> None:
        self.cfg = cfg
        self.origin = origin
        require_paths(cfg, origin, ["train_annotations", "train_images"])
        if cfg.data.val_annotations or cfg.data.val_images:
            require_paths(cfg, origin, ["val_annotations", "val_images"])
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        self.amp = bool(cfg.train.amp and self.device.type == "cuda")
        self.out_dir = Path(cfg.output.dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

        seed_everything(cfg.train.seed)
        self.train_ds = make_dataset(cfg, "train", augment=True)
        self.val_ds = make_dataset(cfg, "val", augment=False) if cfg.data.val_annotations else None
        self.model = build_model(cfg).to(self.device)
        # AdamW over all parameters like upstream (frozen ones get no grad and are skipped).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss = build_loss(cfg)
        self.progress = _Progress()
        if resume:
            self._load_state(resume)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in self.params)
        log.info("model %s: %.2f M trainable parameters; device %s%s", self.model.spec.name, n_train / 1e6,
                 self.device, " (AMP)" if self.amp else "")

    # ---------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        p = self.progress
        return {
            "format": STATE_FORMAT,
            "epoch": p.epoch,
            "step_in_epoch": p.step_in_epoch,
            "global_step": p.global_step,
            "best_miou": p.best_miou,
            "best_epoch": p.best_epoch,
            "epoch_sums": dict(p.sums),
            "epoch_batches": p.batches,
            "epoch_skipped": p.skipped,
            "epoch_train_time": p.train_time,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss_ema": self.loss.ema_state(),
            "rng": get_rng_state(),
            "config": self.cfg.model_dump(mode="json"),
        }

    def _load_state(self, path: str) -> None:
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"{p}: resume checkpoint not found")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{p}: cannot read resume checkpoint ({str(exc).splitlines()[0][:160]})") from None
        state = obj.get("meta", {}).get("train_state") if isinstance(obj, dict) else None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"{p}: not a resumable streamseg training checkpoint (use last.pt or checkpoint_epoch_NNNN.pt; "
                "to start from weights only, set model.init_checkpoint)"
            )
        spec = obj.get("spec", {})
        want = self.model.spec
        got = (spec.get("name"), tuple(spec.get("roi_size", ())), tuple(spec.get("mask_size", ())))
        if got != (want.name, tuple(want.roi_size), tuple(want.mask_size)):
            raise CheckpointError(
                f"{p}: was trained as {got[0]} roi {list(got[1])} mask {list(got[2])} but the config asks for "
                f"{want.name} roi {list(want.roi_size)} mask {list(want.mask_size)}"
            )
        self.model.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss.load_ema_state(state["loss_ema"])
        set_rng_state(state["rng"])
        self.progress = _Progress(
            epoch=int(state["epoch"]), step_in_epoch=int(state["step_in_epoch"]),
            global_step=int(state["global_step"]), best_miou=float(state["best_miou"]),
            best_epoch=int(state["best_epoch"]), sums=dict(state["epoch_sums"]),
            batches=int(state["epoch_batches"]), skipped=int(state.get("epoch_skipped", 0)),
            train_time=float(state.get("epoch_train_time", 0.0)),
        )
        log.info("resumed from %s: epoch %d, step %d of that epoch, %d steps done", p,
                 self.progress.epoch + 1, self.progress.step_in_epoch, self.progress.global_step)

    def _save_train_state(self, path: Path) -> None:
        from streamseg.models import save_checkpoint

        save_checkpoint(self.model, path, extra={"train_state": self._state(), "kind": "train_state"})

    def _export_upstream(self, path: Path, epoch: int) -> None:
        try:
            from streamseg.models.checkpoints import to_upstream_checkpoint
        except ImportError:  # pragma: no cover - model package without the exporter
            log.warning("upstream export unavailable in this streamseg.models version")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(to_upstream_checkpoint(self.model, epoch=epoch, best_miou=max(self.progress.best_miou, 0.0),
                                          optimizer_state=self.optimizer.state_dict(),
                                          scheduler_state=self.scheduler.state_dict()), path)

    def _prune_epoch_checkpoints(self) -> None:
        keep = self.cfg.output.keep_checkpoints
        if keep <= 0:
            return
        files = sorted(self.out_dir.glob("checkpoint_epoch_*.pt"))
        for f in files[:-keep]:
            f.unlink(missing_ok=True)

    # ---------------------------------------------------------------- logging
    def _writer(self) -> Any:
        if not self.cfg.output.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as exc:  # noqa: BLE001 - tensorboard missing or broken
            log.warning("TensorBoard logging off (%s)", exc)
            return None
        return SummaryWriter(log_dir=str(self.out_dir / "tb"), purge_step=self.progress.global_step or None)

    def _csv_row(self, row: dict[str, Any]) -> None:
        path = self.out_dir / "metrics.csv"
        if path.exists() and path.stat().st_size > 0:
            with path.open("r", newline="") as fh:
                header = next(csv.reader(fh), [])
            new = [k for k in row if k not in header]
            if new:  # new columns (e.g. validation appeared): rewrite with the wider header
                with path.open("r", newline="") as fh:
                    rows = list(csv.DictReader(fh))
                header = header + new
                with path.open("w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=header, restval="")
                    w.writeheader()
                    w.writerows(rows)
        else:
            header = list(row)
            with path.open("w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=header).writeheader()
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=header, restval="", extrasaction="ignore").writerow(row)

    # ---------------------------------------------------------------- loop
    def _step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        images = batch["images"].to(self.device, non_blocking=True)
        rois = batch["rois"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(images, rois)
        total, parts = self.loss(out, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            log.warning("non-finite loss at step %d (%s); step skipped", self.progress.global_step, parts)
            return None
        self.scaler.scale(total).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            gn = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip)
            parts["grad_norm"] = float(gn)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return parts

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs`` (or ``train.max_steps``); returns the run summary."""
        from tqdm import tqdm

        cfg, p = self.cfg, self.progress
        t = cfg.train
        writer = self._writer()
        steps_per_epoch = len(epoch_batches(len(self.train_ds), t.batch_size, t.seed, 0, t.drop_last))
        total_steps = steps_per_epoch * t.epochs
        if t.max_steps:
            total_steps = min(total_steps, t.max_steps)
        run_start = time.perf_counter()
        steps_at_start = p.global_step
        stopped_early = False
        last_val: dict[str, float] = {}
        self.model.train()
        while p.epoch < t.epochs and not stopped_early:
            epoch = p.epoch
            self.train_ds.set_epoch(epoch)
            batches = epoch_batches(len(self.train_ds), t.batch_size, t.seed, epoch, t.drop_last)
            todo = batches[p.step_in_epoch:]
            bar = tqdm(total=len(batches), initial=p.step_in_epoch, desc=f"epoch {epoch + 1}/{t.epochs}",
                       dynamic_ncols=True, leave=False, disable=not cfg.output.progress)
            t_last = time.perf_counter()
            for batch in _loader(self.train_ds, todo, cfg.data.num_workers):
                parts = self._step(batch)
                now = time.perf_counter()
                p.train_time += now - t_last
                p.step_in_epoch += 1
                p.global_step += 1
                if parts is None:
                    p.skipped += 1
                else:
                    for k, v in parts.items():
                        p.sums[k] = p.sums.get(k, 0.0) + v
                    p.batches += 1
                    if writer is not None and p.global_step % cfg.output.log_every == 0:
                        writer.add_scalar("train/loss", parts["loss"], p.global_step)
                        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], p.global_step)
                        for k in ("bg_fg_loss", "target_nontarget_loss", "ce_loss", "dice_loss", "grad_norm"):
                            if k in parts:
                                writer.add_scalar(f"train/{k}", parts[k], p.global_step)
                done = p.global_step - steps_at_start
                rate = done / max(time.perf_counter() - run_start, 1e-9)
                eta = (total_steps - p.global_step) / rate if rate > 0 else float("nan")
                bar.update(1)
                bar.set_postfix(loss=f"{p.sums.get('loss', 0.0) / max(p.batches, 1):.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", eta=_hms(eta))
                t_last = time.perf_counter()
                if t.max_steps and p.global_step >= t.max_steps:
                    stopped_early = p.step_in_epoch < len(batches) or epoch + 1 < t.epochs
                    break
            bar.close()
            if p.step_in_epoch < len(batches):  # interrupted mid-epoch by max_steps
                self._save_train_state(self.out_dir / "last.pt")
                log.info("stopped after %d steps (mid-epoch %d); resume with --resume %s",
                         p.global_step, epoch + 1, self.out_dir / "last.pt")
                break
            last_val = self._end_epoch(epoch, writer)
        if writer is not None:
            writer.close()
        elapsed = time.perf_counter() - run_start
        done = p.global_step - steps_at_start
        summary = {
            "model": self.model.spec.name,
            "epochs_completed": p.epoch,
            "global_step": p.global_step,
            "stopped_early": stopped_early,
            "best_miou": p.best_miou if p.best_miou >= 0 else None,
            "best_epoch": p.best_epoch + 1 if p.best_epoch >= 0 else None,
            "has_validation": self.val_ds is not None,
            "last_val": last_val,
            "device": str(self.device),
            "amp": self.amp,
            "steps_this_run": done,
            "wall_s_this_run": elapsed,
            "output_dir": str(self.out_dir),
        }
        import json

        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary

    def _end_epoch(self, epoch: int, writer: Any) -> dict[str, float]:
        cfg, p = self.cfg, self.progress
        t = cfg.train
        lr = self.optimizer.param_groups[0]["lr"]
        train_avg = {k: v / max(p.batches, 1) for k, v in p.sums.items()}
        steps_per_s = p.batches / p.train_time if p.train_time > 0 else float("nan")
        val: dict[str, float] = {}
        is_last = epoch + 1 == t.epochs
        if self.val_ds is not None and ((epoch + 1) % t.val_every == 0 or is_last):
            vb = [list(range(i, min(i + t.batch_size, len(self.val_ds)))) for i in range(0, len(self.val_ds), t.batch_size)]
            # upstream validates with the training loss object (its class-weight EMA moves too)
            val = evaluate(self.model, _loader(self.val_ds, vb, cfg.data.num_workers), self.device,
                           loss=self.loss, amp=self.amp, progress=cfg.output.progress, desc="validation")
        self.scheduler.step()
        improved = bool(val) and val["miou"] > p.best_miou
        if improved:
            p.best_miou, p.best_epoch = val["miou"], epoch
        # the epoch is complete: the state now points at the start of the next one
        p.epoch, p.step_in_epoch = epoch + 1, 0
        row: dict[str, Any] = {"epoch": epoch + 1, "global_step": p.global_step, "lr": lr,
                               "train_steps_per_s": steps_per_s, "skipped_steps": p.skipped}
        row.update({f"train_{k}": v for k, v in train_avg.items()})
        row.update({f"val_{k.replace('/', '_')}": v for k, v in val.items()})
        p.sums, p.batches, p.skipped, p.train_time = {}, 0, 0, 0.0
        from streamseg.models import save_checkpoint

        self._save_train_state(self.out_dir / "last.pt")
        self._save_train_state(self.out_dir / f"checkpoint_epoch_{epoch + 1:04d}.pt")
        self._prune_epoch_checkpoints()
        if improved:
            save_checkpoint(self.model, self.out_dir / "best.pt",
                            extra={"epoch": epoch + 1, "best_miou": p.best_miou, "kind": "best"})
        if cfg.output.export_upstream:
            self._export_upstream(self.out_dir / "upstream" / "last_model.pth", epoch)
            if improved:
                self._export_upstream(self.out_dir / "upstream" / "best_model.pth", epoch)
        self._csv_row(row)
        if writer is not None:
            writer.add_scalar("epoch/lr", lr, epoch + 1)
            writer.add_scalar("epoch/train_loss", train_avg.get("loss", float("nan")), epoch + 1)
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, epoch + 1)
            writer.flush()
        msg = f"epoch {epoch + 1}/{t.epochs}: train loss {train_avg.get('loss', float('nan')):.4f}, lr {lr:.2e}, " \
              f"{steps_per_s:.3f} steps/s"
        if val:
            msg += f"; val mIoU {val['miou']:.4f}{' (best)' if improved else ''}"
        log.info(msg)
        return val


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
