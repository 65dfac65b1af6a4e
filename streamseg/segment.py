"""Segmentation stage: frames + person boxes -> per-person masks, in as few model calls as possible.

All ROIs of a frame (and of several frames when ``batch_frames`` > 1) go through one model call,
split only into chunks of ``max_rois``. On CUDA the input is staged in pinned host memory and copied
on a side stream while the previous batch computes (``stream()``); FP16 autocast is optional. On the
CPU the very same code runs with the stream parts turned into no-ops.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .models.boxes import Resize, boxes_to_rois, plan_resize, prepare_image, unletterbox
from .records import Detections, Frame, PersonMasks

log = logging.getLogger(__name__)


@dataclass
class SegmenterOptions:
    """How the model is run (config keys model.* and runtime.*)."""

    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 (CUDA autocast) | bf16 (CPU/CUDA autocast)
    input_size: tuple[int, int] = (640, 640)
    resize: str = "letterbox"
    threshold: float = 0.5
    max_rois: int = 32
    cuda_streams: bool = True
    pinned_memory: bool = True
    channels_last: bool = False
    dilation: int = 0
    want_foreground: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import UserError

        raise UserError(f"runtime.device: '{name}' requested but CUDA is not available here; allowed: auto, cpu")
    return dev


def effective_precision(precision: str, cuda: bool) -> str:
    """The precision a run really uses: fp16 needs CUDA, so on a CPU it runs fp32 (bf16 on CPUs
    without AMX was measured slower than fp32 and moves masks, so it is not the stand-in)."""
    return "fp32" if precision == "fp16" and not cuda else precision


@dataclass
class _Batch:
    frames: list[Frame]
    dets: list[Detections]
    plans: list[Resize]
    images: Any = None  # tensor on device (or numpy for ORT)
    rois: Any = None
    ready: Any = None  # CUDA event after the H2D copy
    outputs: Any = None
    done: Any = None
    t0: float = 0.0
    busy_s: float = 0.0  # time spent in stage/launch/finish of this batch only


class Segmenter:
    """Runs a person model (torch module or ORT backend) on frames with their detections."""

    def __init__(self, model: Any, options: SegmenterOptions | None = None):
        self.opt = options or SegmenterOptions()
        self.is_torch = isinstance(model, torch.nn.Module)
        self.device = resolve_device(self.opt.device) if self.is_torch else torch.device("cpu")
        self.cuda = self.device.type == "cuda"
        self.model = model
        if self.is_torch:
            self.model = model.to(self.device).eval()
            if self.opt.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda and self.opt.cuda_streams else None
        self._host: list[torch.Tensor] = []  # double-buffered pinned staging
        self._slot = 0
        self.precision = self._check_precision(self.opt.precision)
        self.last_seconds = 0.0

    def _check_precision(self, p: str) -> str:
        eff = effective_precision(p, self.cuda)
        if eff != p:
            log.warning("runtime.precision fp16 needs CUDA; running fp32 on the CPU")
        return eff

    # ------------------------------------------------------------------ stages of one batch
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.is_torch or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _host_buffer(self, b: int, h: int, w: int) -> np.ndarray:
        pin = self.cuda and self.opt.pinned_memory
        if not self._host or self._host[0].shape[0] < b or self._host[0].shape[2:] != (h, w):
            self._host = [torch.empty((b, 3, h, w), dtype=torch.float32, pin_memory=pin) for _ in range(2)]
        buf = self._host[self._slot]
        self._slot ^= 1
        return buf[:b]

    def stage(self, frames: list[Frame], dets: list[Detections]) -> _Batch:
        """Preprocess on the host and start the host->device copy (async on CUDA)."""
        h, w = self.opt.input_size
        t0 = time.perf_counter()
        batch = _Batch(frames, dets, [plan_resize((f.height, f.width), (h, w), self.opt.resize) for f in frames])
        batch.t0 = t0
        host = self._host_buffer(len(frames), h, w)
        host_np = host.numpy()
        rois = []
        for i, (f, d, rs) in enumerate(zip(frames, dets, batch.plans)):
            prepare_image(f.image, rs, out=host_np[i])
            if len(d):
                rois.append(boxes_to_rois(d.xyxy, rs, batch_index=i))
        rois_np = np.concatenate(rois) if rois else np.zeros((0, 5), np.float32)
        if not self.is_torch:
            batch.images, batch.rois = host_np.copy(), rois_np
            return batch
        rois_t = torch.from_numpy(rois_np)
        if self.cuda:
            ctx = torch.cuda.stream(self.copy_stream) if self.copy_stream is not None else contextlib.nullcontext()
            with ctx:
                batch.images = host.to(self.device, non_blocking=True)
                batch.rois = rois_t.to(self.device, non_blocking=True)
                batch.ready = torch.cuda.Event()
                batch.ready.record()
        else:
            batch.images, batch.rois = host.clone(), rois_t
        batch.busy_s += time.perf_counter() - t0
        return batch

    @torch.inference_mode()
    def launch(self, batch: _Batch) -> _Batch:
        """Queue the model on the device (returns at once on CUDA; computes on the CPU)."""
        n = batch.rois.shape[0]
        if n == 0 and not self.opt.want_foreground:
            batch.outputs = None
            return batch
        if not self.is_torch:
            batch.outputs = self._run_ort(batch)
            return batch
        if batch.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(batch.ready)
            batch.images.record_stream(torch.cuda.current_stream(self.device))
        images = batch.images.contiguous(memory_format=torch.channels_last) if self.opt.channels_last else batch.images
        with self._autocast():
            full = self.model.pretrained_unet(images)
            probs = []
            for s in range(0, n, self.opt.max_rois):
                out = self.model.forward_heads(images, full, batch.rois[s:s + self.opt.max_rois], with_aux=False)
                probs.append(self._target_prob(out["masks"].float()))
        prob = torch.cat(probs) if probs else torch.zeros((0, *self.model.spec.mask_size), device=self.device)
        fg = torch.softmax(full.float(), dim=1)[:, 0] if self.opt.want_foreground else None
        batch.outputs = {"prob": prob.to("cpu", non_blocking=self.cuda),
                         "fg": None if fg is None else fg.to("cpu", non_blocking=self.cuda)}
        if self.cuda:
            batch.done = torch.cuda.Event()
            batch.done.record()
        return batch

    def _target_prob(self, logits: torch.Tensor) -> torch.Tensor:
        if self.opt.dilation > 0:
            from .models.postprocess import dilate_target_logits

            logits = dilate_target_logits(logits, self.opt.dilation)
        return torch.softmax(logits, dim=1)[:, 1]

    def _run_ort(self, batch: _Batch) -> dict[str, Any]:
        out = self.model(batch.images, batch.rois)
        if "target_prob" in out:
            prob = torch.from_numpy(np.asarray(out["target_prob"]))
        else:
            prob = self._target_prob(torch.from_numpy(np.asarray(out["masks"])).float())
        fg = out.get("binary_masks")
        return {"prob": prob, "fg": None if fg is None or not self.opt.want_foreground else torch.from_numpy(fg[:, 0])}

    def finish(self, batch: _Batch) -> list[PersonMasks]:
        """Wait for the device and split results per frame."""
        if batch.done is not None:
            batch.done.synchronize()
        results = []
        start = 0
        prob_all = batch.outputs["prob"].numpy() if batch.outputs is not None else None
        for i, (f, d, rs) in enumerate(zip(batch.frames, batch.dets, batch.plans)):
            n = len(d)
            if prob_all is None or n == 0:
                probs = np.zeros((0, 1, 1), np.float32)
                scores = np.zeros((0,), np.float32)
            else:
                probs = prob_all[start:start + n]
                start += n
                scores = mask_scores(probs, self.opt.threshold)
            fg = None
            if batch.outputs is not None and batch.outputs.get("fg") is not None:
                fg = unletterbox(batch.outputs["fg"][i].numpy(), rs)
            results.append(PersonMasks(d, probs.astype(np.float32, copy=False), scores, fg, self.opt.threshold))
        return results

    # ------------------------------------------------------------------ public calls
    def segment(self, frames: list[Frame], dets: list[Detections]) -> list[PersonMasks]:
        """Synchronous: one batch in, its masks out."""
        return self.finish(self.launch(self.stage(frames, dets)))

    def stream(self, batches: Iterable[tuple[list[Frame], list[Detections]]]
               ) -> Iterator[tuple[list[Frame], list[PersonMasks]]]:
        """Pipelined: the copy of batch k overlaps the compute of batch k-1 on CUDA.

        Yields (frames, masks) per batch in input order; ``last_seconds`` is that batch's
        stage-to-finish time.
        """
        pending: _Batch | None = None
        for frames, dets in batches:
            staged = self.stage(frames, dets)
            if pending is not None:
                yield pending.frames, self._timed_finish(pending)
            pending = self._timed_launch(staged)
        if pending is not None:
            yield pending.frames, self._timed_finish(pending)

    def _timed_launch(self, batch: _Batch) -> _Batch:
        t0 = time.perf_counter()
        self.launch(batch)
        batch.busy_s += time.perf_counter() - t0
        return batch

    def _timed_finish(self, batch: _Batch) -> list[PersonMasks]:
        t0 = time.perf_counter()
        out = self.finish(batch)
        # Busy time of this batch only (not the next batch's reading/detection that overlaps it).
        self.last_seconds = batch.busy_s + time.perf_counter() - t0
        return out


def mask_scores(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-person confidence: mean target probability over the pixels called target (0 if none)."""
    on = probs > threshold
    count = on.reshape(len(probs), -1).sum(1)
    total = np.where(on, probs, 0).reshape(len(probs), -1).sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
