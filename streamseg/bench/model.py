"""``streamseg bench model``: size, FLOPs, memory and latency of every person-model variant.

For each variant: parameters (total / trainable with the people-seg UNet frozen), FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (fixed part + per ROI), peak memory and latency per
frame for 1/4/8 ROIs, PyTorch vs ONNX Runtime, fp32 vs bf16 autocast (CPU) / fp16 (CUDA) vs INT8
(ORT static quantisation). Every run is also compared with the plain fp32 PyTorch output, so a
speed-up that changes the masks is visible next to its time.

Then the speed target of the model issue: B0 with 8 ROIs, the straightforward reference (the model
as loaded: auxiliary heads on, no fusion, fp32, ``torch.no_grad``) against the candidate fast paths,
interleaved in one run (the machine may be shared, so only ratios measured together count). The
fastest candidate whose masks stay within 1e-3 and whose argmax agrees on >= 99.9% of pixels is
recorded as ``speed_target.chosen`` together with the exact call that gives it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .machine import machine_info

log = logging.getLogger(__name__)

SCHEMA = "streamseg.bench.model/1"
ALL_VARIANTS = ("b0", "b1", "b7", "b0-enhanced", "b1-enhanced", "b7-enhanced")
MASK_ATOL = 1e-3
ARGMAX_MIN_AGREE = 0.999


# ----------------------------------------------------------------------------- options
def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _hw(s: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 64x48, got {s!r}") from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamseg bench model", description=__doc__.splitlines()[0])
    p.add_argument(
        "--variants", default=",".join(ALL_VARIANTS), help="comma list (default: all six)"
    )
    p.add_argument("--rois", default="1,4,8", help="ROI counts per frame (default 1,4,8)")
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--width", type=int, default=640)
    p.add_argument(
        "--roi-size",
        type=_hw,
        default=None,
        metavar="HxW",
        help="override the ROI size (e.g. 32x24)",
    )
    p.add_argument(
        "--mask-size",
        type=_hw,
        default=None,
        metavar="HxW",
        help="override the mask size (e.g. 64x48)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (b7 variants: 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--precisions",
        default="fp32,bf16,int8",
        help="fp32, bf16 (CPU autocast; fp16 on CUDA), int8 (ORT)",
    )
    p.add_argument("--backends", default="torch,ort", help="torch, ort")
    p.add_argument(
        "--checkpoint", default=None, help="weights for the variant they hold (else random weights)"
    )
    p.add_argument(
        "--calib-video",
        default=None,
        help="footage for INT8 calibration (int8 is skipped without it)",
    )
    p.add_argument("--calib-frames", type=int, default=16)
    p.add_argument(
        "--held-out-frames",
        type=int,
        default=8,
        help="frames after the calibration ones for the INT8 IoU",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and ORT intra-op threads (default: library default)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--target-repeats", type=int, default=3, help="interleaved rounds of the B0 speed target"
    )
    p.add_argument(
        "--target-rois",
        type=int,
        default=8,
        help="ROIs per frame in the B0 speed target (default 8)",
    )
    p.add_argument("--no-target", action="store_true", help="skip the B0 speed-target comparison")
    p.add_argument("--quick", action="store_true", help="skip b7 variants, 1 repeat")
    p.add_argument(
        "--note", default=None, help="free text stored in the JSON (e.g. what the checkpoint is)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/model_<host>_<date>.json)",
    )
    return p


# ----------------------------------------------------------------------------- inputs
def bench_inputs(
    height: int, width: int, n_rois: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image [1,3,H,W] in [0,1] and ``n_rois`` person-shaped normalised boxes."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 16, 2), max(width // 16, 2), generator=g)
    img = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bilinear", align_corners=False
    )
    img = (0.85 * img + 0.15 * torch.rand(1, 3, height, width, generator=g)).clamp(0, 1)
    rois = []
    for i in range(n_rois):
        x1 = 0.04 + 0.8 * ((i * 0.37) % 1.0)
        y1 = 0.1 + 0.15 * (i % 3)
        rois.append([0.0, x1, y1, min(x1 + 0.14, 1.0), min(y1 + 0.45, 1.0)])
    return img.contiguous(), torch.tensor(rois, dtype=torch.float32)


@torch.no_grad()
def make_outputs_informative(
    model: nn.Module, images: torch.Tensor, rois: torch.Tensor, seed: int = 1234
) -> None:
    """Give random weights non-trivial BatchNorm affine + statistics so outputs are not flat.

    A fresh network has BN ~ identity and near-constant masks, which would hide precision losses;
    like the parity fixture, set BN weight ~ U(0.75, 1.25), bias ~ 0.1 N(0,1), re-estimate the
    running stats on the bench input and clamp the variance to >= 0.01 (0.1 below 320 px).
    """
    g = torch.Generator().manual_seed(seed)
    # Deep UNet levels of a small input hold few pixels: their variance estimates are noisy and a
    # 0.01 floor lets the gains explode (logits in the hundreds), so small inputs get a 0.1 floor.
    min_var = 0.01 if min(images.shape[-2:]) >= 320 else 0.1
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(0.75 + 0.5 * torch.rand(bn.weight.shape, generator=g))
        bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=g))
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    model(images, rois, with_aux=True)
    for bn in bns:
        bn.running_var.clamp_(min=min_var)
        bn.momentum = 0.1
    model.eval()


# ----------------------------------------------------------------------------- measuring
class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms on a thread (CPU runs)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = 0

    def __enter__(self) -> PeakRSS:  # noqa: PYI034
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def time_call(
    fn: Callable[[], Any], repeats: int, warmup: int, device: str
) -> tuple[list[float], Any, dict[str, float]]:
    """(times, last output, memory) of ``fn``.

    Memory on CPU: process RSS growth from just before the warm-up to the peak while running
    (``peak_mem_mb``; allocators keep memory, so a setting that follows a bigger one on the same
    backend shows ~0) and the absolute peak RSS. On CUDA: torch.cuda.max_memory_allocated above
    the allocation at the start.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gc.collect()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start_alloc = torch.cuda.memory_allocated()
    times: list[float] = []
    with PeakRSS() as mem:
        out = None
        for _ in range(warmup):
            out = fn()
        for _ in range(max(1, repeats)):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t0)
    if device == "cuda":
        memory = {
            "peak_mem_mb": round((torch.cuda.max_memory_allocated() - start_alloc) / 2**20, 1)
        }
    else:
        memory = {"peak_mem_mb": round(mem.delta_mb, 1), "peak_rss_mb": round(mem.peak / 2**20, 1)}
    return times, out, memory


def compare_masks(
    ref: torch.Tensor | np.ndarray, out: torch.Tensor | np.ndarray
) -> dict[str, float]:
    """Max |diff| of the logits, argmax agreement, mean target-mask IoU (output vs reference)."""
    a = torch.as_tensor(
        np.asarray(ref.detach().float().cpu() if isinstance(ref, torch.Tensor) else ref)
    )
    b = torch.as_tensor(
        np.asarray(out.detach().float().cpu() if isinstance(out, torch.Tensor) else out)
    )
    am, bm = a.argmax(1), b.argmax(1)
    ta, tb = am == 1, bm == 1
    inter = (ta & tb).flatten(1).sum(1).float()
    union = (ta | tb).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return {
        "masks_max_abs_diff": float((a - b).abs().max()),
        "argmax_agree": float((am == bm).float().mean()),
        "target_iou": float(iou.mean()),
    }


def count_flops(model: nn.Module, images: torch.Tensor, rois: torch.Tensor, with_aux: bool) -> int:
    """FLOPs of one forward (FlopCounterMode: convs, matmuls and friends; 1 MAC = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(images, rois, with_aux=with_aux)
    return int(fc.get_total_flops())


def param_counts(model: nn.Module) -> dict[str, int]:
    """Total parameters, and trainable ones with the people-seg UNet frozen (as in training)."""
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.pretrained_unet.model.parameters())
    return {
        "params_total": total,
        "params_trainable": total - frozen,
        "params_peopleseg_unet": frozen,
    }


# ----------------------------------------------------------------------------- compute floor
def dense_peak_gflops(device: str = "cpu", repeats: int = 3) -> dict[str, float]:
    """Best fp32 rate this machine reaches on dense work like the model's (GFLOP/s).

    Why: the model is almost all dense 3x3 convolution, so (FLOPs of the inference path) / (this
    rate) is a lower bound on the time of any path that performs those multiplies; only an
    algorithm that needs fewer of them (Winograd) can go below it.
    Two probes: the model's dominant layer (256->256 3x3 conv on 8 ROIs of 64x48, NHWC) and a
    2048^3 sgemm; the best single run of each counts.
    """
    import torch.nn.functional as F

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 256, 64, 48, generator=g).to(device, memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, generator=g).to(device, memory_format=torch.channels_last)
    a = torch.randn(2048, 2048, generator=g).to(device)
    probes = {
        "conv3x3_256_8x64x48": (2.0 * 8 * 64 * 48 * 256 * 256 * 9, lambda: F.conv2d(x, w, padding=1)),
        "sgemm_2048": (2.0 * 2048**3, lambda: a @ a),
    }
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, (flops, fn) in probes.items():
            fn()
            best = float("inf")
            for _ in range(max(1, repeats)):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                best = min(best, time.perf_counter() - t0)
            out[name] = flops / best / 1e9
    out["best"] = max(out.values())
    return out


def compute_floor(flops: int, peak: dict[str, float], reference_s: float) -> dict[str, Any]:
    """Lower bound on the fast path's time, and on its ratio to the reference, from FLOPs / peak."""
    floor_s = flops / (peak["best"] * 1e9)
    return {
        "gflops_inference_path": flops / 1e9,
        "peak_gflops_per_s": peak,
        "time_floor_s": floor_s,
        "time_ratio_floor": floor_s / reference_s,
        "why": "FLOPs counted by FlopCounterMode for the path without aux heads, divided by the "
        "best dense fp32 rate measured in this run: no path that does the same multiplies (direct "
        "convolution in any engine) goes below it; Winograd candidates do fewer multiplies",
    }


# ----------------------------------------------------------------------------- the fast path
def fast_torch_model(model: nn.Module, device: str = "cpu") -> nn.Module:
    """The inference path ``streamseg run`` uses: BN folded, channels_last, no aux heads, and on
    a CPU Winograd F(4x4,3x3) convolutions when a C compiler is available (call under inference_mode).
    """
    from ..models.fuse import optimize_for_inference
    from ..models.winograd import kernel_available

    tile = 4 if device == "cpu" and kernel_available() else None
    return optimize_for_inference(model, fold_bn=True, channels_last=True, with_aux=False, winograd=tile)


def _ort_callable(
    sess: Any, images: torch.Tensor, rois: torch.Tensor
) -> Callable[[], dict[str, Any]]:
    im, ro = images.numpy(), rois.numpy()
    return lambda: sess(im, ro)


def _variant_model(
    name: str, opts: argparse.Namespace, cache: dict[str, Any]
) -> tuple[nn.Module, str]:
    """The variant's model (checkpoint weights when it holds this variant), built once per run."""
    from ..models import create_model, load_checkpoint

    key = f"model:{name}"
    if key in cache:
        return cache[key]
    over = {"roi_size": opts.roi_size, "mask_size": opts.mask_size}
    m = None
    if opts.checkpoint:
        m = load_checkpoint(opts.checkpoint, roi_size=opts.roi_size, mask_size=opts.mask_size)
        weights = f"checkpoint {opts.checkpoint}"
        if m.spec.name != name:
            m = None
    if m is None:
        torch.manual_seed(0)
        m = create_model(name, **over).eval()
        make_outputs_informative(m, *bench_inputs(opts.height, opts.width, 8))
        weights = "random (BN affine and statistics re-estimated on the bench input)"
    cache[key] = (m.eval(), weights)
    return cache[key]


def _onnx_for(
    name: str, model: nn.Module, opts: argparse.Namespace, tmp: Path, cache: dict[str, Any]
) -> Path:
    """The variant exported once per run (fp32, the bench image size)."""
    from ..models.onnx_export import export_onnx

    key = f"onnx:{name}"
    if key not in cache:
        cache[key] = export_onnx(model, tmp / f"{name}.onnx", height=opts.height, width=opts.width)
    return cache[key]


def _int8_for(
    name: str, fp32_path: Path, opts: argparse.Namespace, cache: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """The variant's INT8 graph (calibrated on ``--calib-video``), quantised once per run."""
    from ..models.quantize import quantize_person_model

    key = f"int8:{name}"
    if key not in cache:
        q_path = fp32_path.with_name(f"{name}_int8.onnx")
        report = quantize_person_model(
            fp32_path,
            q_path,
            opts.calib_video,
            calib_frames=opts.calib_frames,
            held_out_frames=opts.held_out_frames,
            threads=opts.threads,
        )
        cache[key] = (q_path, report)
    return cache[key]


def bench_variant(
    name: str, opts: argparse.Namespace, tmp: Path, cache: dict[str, Any]
) -> dict[str, Any]:
    """Everything measured for one variant."""
    device = opts.device
    repeats = 1 if name.startswith("b7") else opts.repeats
    roi_counts = [int(r) for r in _csv(opts.rois)]
    images, rois_all = bench_inputs(opts.height, opts.width, max(roi_counts))
    model, weights = _variant_model(name, opts, cache)
    res: dict[str, Any] = {
        "variant": name,
        "weights": weights,
        "roi_size": list(model.spec.roi_size),
        "mask_size": list(model.spec.mask_size),
        **param_counts(model),
    }
    f1 = count_flops(model, images, rois_all[:1], with_aux=False)
    f2 = count_flops(
        model,
        images,
        rois_all[:2].clone() if len(rois_all) > 1 else torch.cat([rois_all] * 2),
        with_aux=False,
    )
    fa1 = count_flops(model, images, rois_all[:1], with_aux=True)
    res["gflops_fixed"] = (2 * f1 - f2) / 1e9
    res["gflops_per_roi"] = (f2 - f1) / 1e9
    res["gflops_per_roi_aux"] = (fa1 - f1) / 1e9
    res["gflops"] = {str(n): (f1 + (n - 1) * (f2 - f1)) / 1e9 for n in roi_counts}
    res["flop_counter"] = (
        "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per MAC), inference path without aux heads"
    )

    fast = fast_torch_model(model, device)
    if device == "cuda":
        fast = fast.cuda()
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    backends, precisions = _csv(opts.backends), _csv(opts.precisions)
    sessions: dict[str, Any] = {}
    if "ort" in backends:
        from ..models.ort_backend import OrtPersonModel

        fp32_path = _onnx_for(name, model, opts, tmp, cache)
        if "fp32" in precisions:
            sessions["fp32"] = OrtPersonModel(fp32_path, threads=opts.threads)
        if "int8" in precisions:
            if opts.calib_video:
                q_path, res["int8_quantisation"] = _int8_for(name, fp32_path, opts, cache)
                sessions["int8"] = OrtPersonModel(q_path, threads=opts.threads)
            else:
                skipped.append("ort int8: no --calib-video given")
        res["onnx_bytes"] = fp32_path.stat().st_size
    for n in roi_counts:
        rois = rois_all[:n].contiguous()
        with torch.inference_mode():
            ref = model(images, rois, with_aux=False)["masks"]
        x, r = (images.cuda(), rois.cuda()) if device == "cuda" else (images, rois)
        for backend in backends:
            for prec in precisions:
                if backend == "torch" and prec == "int8":
                    if n == roi_counts[0]:
                        skipped.append("torch int8: not offered (INT8 runs through ONNX Runtime)")
                    continue
                if backend == "ort" and prec == "bf16":
                    if n == roi_counts[0]:
                        skipped.append("ort bf16: not offered by the CPU execution provider")
                    continue
                if backend == "ort":
                    if prec not in sessions:
                        continue
                    fn = _ort_callable(sessions[prec], images, rois)
                else:
                    fn = _torch_callable(fast, x, r, prec, device)
                times, out, memory = time_call(fn, repeats, opts.warmup, device)
                masks = out["masks"]
                runs.append(
                    {
                        "backend": backend,
                        "precision": _prec_name(prec, device, backend),
                        "rois": n,
                        "median_s": statistics.median(times),
                        "min_s": min(times),
                        "repeats": len(times),
                        **memory,
                        **compare_masks(ref, masks),
                    }
                )
                log.info(
                    "%s %s %s %d ROIs: %.3f s (min %.3f)",
                    name,
                    backend,
                    prec,
                    n,
                    statistics.median(times),
                    min(times),
                )
    res["runs"] = runs
    res["skipped"] = skipped
    return res


def _prec_name(prec: str, device: str, backend: str) -> str:
    if prec == "bf16" and device == "cuda" and backend == "torch":
        return "fp16"
    return prec


def _torch_callable(
    model: nn.Module, x: torch.Tensor, r: torch.Tensor, prec: str, device: str
) -> Callable[[], Any]:
    if prec == "fp32":

        def run() -> Any:
            with torch.inference_mode():
                return model(x, r)
    else:
        dtype = torch.float16 if device == "cuda" else torch.bfloat16

        def run() -> Any:
            with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype):
                out = model(x, r)
            return {"masks": out["masks"].float()}

    return run


# ----------------------------------------------------------------------------- the speed target
def speed_target(opts: argparse.Namespace, tmp: Path, cache: dict[str, Any]) -> dict[str, Any]:
    """B0 reference vs candidate fast paths, interleaved; picks the fastest that keeps outputs."""
    from ..models.fuse import optimize_for_inference
    from ..models.ort_backend import OrtPersonModel

    n_rois = opts.target_rois
    images, rois = bench_inputs(opts.height, opts.width, n_rois, seed=7)
    model, weights = _variant_model("b0", opts, cache)
    cands: dict[str, tuple[str, Callable[[], Any]]] = {}

    def ref() -> Any:
        with torch.no_grad():
            return model(images, rois)

    from ..models.winograd import kernel_available

    noaux = optimize_for_inference(model, fold_bn=False, with_aux=False)
    folded = optimize_for_inference(model, fold_bn=True, with_aux=False)
    fast = optimize_for_inference(model, fold_bn=True, channels_last=True, with_aux=False)

    def torch_run(m: nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return m(images, rois)

        return run

    fast_call = (
        "streamseg.models.fuse.optimize_for_inference(model, fold_bn=True, channels_last=True, "
        "with_aux=False); call under torch.inference_mode()"
    )
    cands["torch_noaux"] = (
        "optimize_for_inference(model, fold_bn=False, with_aux=False) under torch.inference_mode()",
        torch_run(noaux),
    )
    cands["torch_fold_noaux"] = (
        "optimize_for_inference(model, fold_bn=True, with_aux=False) under torch.inference_mode()",
        torch_run(folded),
    )
    cands["torch_fold_cl_noaux"] = (fast_call, torch_run(fast))
    if kernel_available():
        for tile in (2, 4):
            wm = optimize_for_inference(
                model, fold_bn=True, channels_last=True, with_aux=False, winograd=tile
            )
            cands[f"torch_fold_cl_noaux_winograd_f{tile}"] = (
                fast_call.replace("with_aux=False)", f"with_aux=False, winograd={tile})"),
                torch_run(wm),
            )
    if "ort" in _csv(opts.backends):
        sess = OrtPersonModel(_onnx_for("b0", model, opts, tmp, cache), threads=opts.threads)
        ort_call = (
            "streamseg.models.onnx_export.export_onnx(model, path, height=H, width=W); "
            "streamseg.models.ort_backend.OrtPersonModel(path)(images_np, rois_np)"
        )
        cands["ort_fp32"] = (ort_call, _ort_callable(sess, images, rois))
        if (
            "int8" in _csv(opts.precisions) and opts.calib_video
        ):  # shown for its speed; its masks move
            q_path, _ = _int8_for("b0", cache["onnx:b0"], opts, cache)
            int8_call = (
                "streamseg.models.quantize.quantize_person_model(fp32_path, int8_path, video); "
                "OrtPersonModel(int8_path)(images_np, rois_np)"
            )
            cands["ort_int8"] = (
                int8_call,
                _ort_callable(OrtPersonModel(q_path, threads=opts.threads), images, rois),
            )
    # warm everything once, keep the reference output
    ref_out = ref()["masks"]
    checks = {k: compare_masks(ref_out, fn()["masks"]) for k, (_, fn) in cands.items()}
    times: dict[str, list[float]] = {"reference": [], **{k: [] for k in cands}}
    for _ in range(max(1, opts.target_repeats)):
        for k, fn in [("reference", ref)] + [(k, v[1]) for k, v in cands.items()]:
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    ref_med = statistics.median(times["reference"])
    floor = compute_floor(
        count_flops(model, images, rois, with_aux=False), dense_peak_gflops("cpu"), ref_med
    )
    result: dict[str, Any] = {
        "variant": "b0",
        "rois": n_rois,
        "image_size": [opts.height, opts.width],
        "weights": weights,
        "reference": {
            "call": "model(images, rois) under torch.no_grad() (aux heads on, no fusion, fp32, NCHW)",
            "times_s": times["reference"],
            "median_s": ref_med,
        },
        "tolerance": {"masks_max_abs_diff": MASK_ATOL, "argmax_agree_min": ARGMAX_MIN_AGREE},
        "candidates": {},
        "compute_floor": floor,
    }
    best, best_ratio = None, 0.0
    for k, (call, _) in cands.items():
        med = statistics.median(times[k])
        paired = statistics.median(r / c for r, c in zip(times["reference"], times[k]))
        ok = (
            checks[k]["masks_max_abs_diff"] <= MASK_ATOL
            and checks[k]["argmax_agree"] >= ARGMAX_MIN_AGREE
        )
        result["candidates"][k] = {
            "call": call,
            "times_s": times[k],
            "median_s": med,
            "time_ratio_vs_reference": med / ref_med,
            "speedup_paired_median": paired,
            "outputs_unchanged": ok,
            **checks[k],
        }
        if ok and ref_med / med > best_ratio:
            best, best_ratio = k, ref_med / med
    result["chosen"] = best
    result["chosen_time_ratio"] = (1.0 / best_ratio) if best else None
    result["target_met"] = bool(best) and (1.0 / best_ratio) <= 0.5
    log.info(
        "speed target: %s at %.2fx the reference time (%s); fp32 compute floor %.2fx "
        "(%.0f GFLOP at %.0f GFLOP/s)",
        best,
        result["chosen_time_ratio"] or float("nan"),
        "met" if result["target_met"] else "NOT met",
        floor["time_ratio_floor"],
        floor["gflops_inference_path"],
        floor["peak_gflops_per_s"]["best"],
    )
    return result


# ----------------------------------------------------------------------------- entry point
def run_bench(opts: argparse.Namespace) -> dict[str, Any]:
    """Measure everything asked for by ``opts``; returns the JSON-ready result."""
    variants = [v.lower() for v in _csv(opts.variants)]
    bad = [v for v in variants if v not in ALL_VARIANTS]
    if bad:
        raise UserError(
            f"bench model --variants: unknown {bad}; allowed: {', '.join(ALL_VARIANTS)}"
        )
    if opts.quick:
        variants = [v for v in variants if not v.startswith("b7")]
        opts.repeats = 1
    for v in _csv(opts.precisions):
        if v not in ("fp32", "bf16", "int8"):
            raise UserError(f"bench model --precisions: unknown {v!r}; allowed: fp32, bf16, int8")
    for v in _csv(opts.backends):
        if v not in ("torch", "ort"):
            raise UserError(f"bench model --backends: unknown {v!r}; allowed: torch, ort")
    if opts.height % 32 or opts.width % 32:
        raise UserError(
            f"bench model --height/--width must be multiples of 32, got {opts.height}x{opts.width}"
        )
    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "note": opts.note,
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(opts).items()
            if k not in ("out", "note")
        },
        "variants": {},
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="streamseg_bench_") as td:
        tmp = Path(td)
        cache: dict[str, Any] = {}
        if "b0" in variants and not opts.no_target:
            result["speed_target"] = speed_target(opts, tmp, cache)
        for v in variants:
            log.info("benchmarking %s", v)
            result["variants"][v] = bench_variant(v, opts, tmp, cache)
            cache.clear()
            gc.collect()
    result["total_s"] = time.perf_counter() - t_start
    return result


def default_out() -> Path:
    import socket

    day = _dt.date.today().isoformat()
    return Path("benchmarks/results") / f"model_{socket.gethostname().split('.')[0]}_{day}.json"


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``streamseg bench model ...``); writes the JSON and prints a short table."""
    opts = build_parser().parse_args(argv)
    out = Path(opts.out) if opts.out else default_out()
    result = run_bench(opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, v in result["variants"].items():
        for r in v["runs"]:
            print(
                f"{name:12s} {r['backend']:5s} {r['precision']:5s} {r['rois']:2d} ROIs  "
                f"{r['median_s'] * 1000:8.1f} ms  (min {r['min_s'] * 1000:.1f})  "
                f"argmax agree {r['argmax_agree']:.4f}"
            )
    st = result.get("speed_target")
    if st:
        print(
            f"speed target (B0, {st['rois']} ROIs): reference {st['reference']['median_s']:.3f} s; chosen "
            f"{st['chosen']} at {st['chosen_time_ratio'] or float('nan'):.2f}x the reference time"
        )
    print(f"wrote {out}")
    return 0
