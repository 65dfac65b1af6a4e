"""Would Winograd convolution get the B0 head under half the reference time on this CPU? Measure it.

The person model is ~92% dense 3x3 convolution, which oneDNN already runs near the machine's fp32
peak. Winograd F(m x m, 3 x 3) is the one exact-arithmetic rewrite that needs fewer multiplies
(2.25x fewer for m=2, 4x for m=4), at the price of tile transforms that are pure memory traffic.
This probe times a straightforward NHWC Winograd (transforms as strided slices + adds, the
products as one batched GEMM) against oneDNN on the model's conv shapes and records the error
against a float64 conv. Run: ``python benchmarks/winograd_probe.py [out.json]``.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from streamseg.bench.machine import machine_info
from streamseg.metrics import write_json

# Transform matrices (Lavin & Gray 2015): B^T (input), G (filter), A^T (output).
F2 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
)
F4 = (
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
SHAPES = [(8, 256, 64, 48), (8, 128, 128, 96), (8, 64, 64, 48), (8, 256, 16, 12)]


def _combine(matrix: list[list[float]], parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rows of a small sparse matrix applied to a list of tensors (skips zeros, no multiply by 1)."""
    out = []
    for row in matrix:
        acc = None
        for c, p in zip(row, parts):
            if c:
                t = p if c == 1 else (-p if c == -1 else p * c)
                acc = t if acc is None else acc + t
        out.append(acc)
    return out


def filter_transform(w: torch.Tensor, g: list[list[float]]) -> torch.Tensor:
    """[Cout,Cin,3,3] -> [a*a, Cin, Cout] (float64 maths, stored fp32)."""
    gm = torch.tensor(g, dtype=torch.float64)
    u = torch.einsum("ij,ocjk,lk->ilco", gm, w.double(), gm)
    return u.reshape(gm.shape[0] ** 2, w.shape[1], w.shape[0]).float().contiguous()


def winograd_conv(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, bt: list, at: list) -> torch.Tensor:
    """3x3, stride 1, padding 1 conv of NHWC ``x`` [N,H,W,C]; returns NHWC."""
    n, h, w, c = x.shape
    a, m = len(bt), len(at)
    th, tw = -(-h // m), -(-w // m)
    xp = F.pad(x, (0, 0, 1, tw * m + 1 - w, 1, th * m + 1 - h))
    v = torch.empty(a, a, n, th, tw, c)
    for i, r in enumerate(_combine(bt, [xp[:, k : k + (th - 1) * m + 1 : m] for k in range(a)])):
        for j, t in enumerate(_combine(bt, [r[:, :, k : k + (tw - 1) * m + 1 : m] for k in range(a)])):
            v[i, j] = t
    prod = torch.bmm(v.view(a * a, n * th * tw, c), u).view(a, a, n, th, tw, -1)
    y = torch.empty(n, th, m, tw, m, prod.shape[-1])
    for i, r in enumerate(_combine(at, [prod[k] for k in range(a)])):
        for j, t in enumerate(_combine(at, [r[k] for k in range(a)])):
            y[:, :, i, :, j] = t
    return y.view(n, th * m, tw * m, -1)[:, :h, :w] + bias


def best_time(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(out: Path) -> dict:
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for n, c, h, w in SHAPES:
            x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
            wt = (torch.randn(c, c, 3, 3) / (9 * c) ** 0.5).contiguous(memory_format=torch.channels_last)
            b = torch.randn(c)
            exact = F.conv2d(x.double(), wt.double(), b.double(), padding=1)
            row = {"shape_nchw": [n, c, h, w], "gflop": 2 * n * h * w * c * c * 9 / 1e9}
            y = F.conv2d(x, wt, b, padding=1)
            row["onednn"] = {
                "s": best_time(lambda: F.conv2d(x, wt, b, padding=1)),
                "max_abs_err": float((y.double() - exact).abs().max()),
            }
            xn = x.permute(0, 2, 3, 1)  # NHWC view of the channels_last tensor, no copy
            for name, (bt, g, at) in {"winograd_f2x2": F2, "winograd_f4x4": F4}.items():
                u = filter_transform(wt, g)
                yw = winograd_conv(xn, u, b, bt, at).permute(0, 3, 1, 2)
                row[name] = {
                    "s": best_time(lambda: winograd_conv(xn, u, b, bt, at)),
                    "max_abs_err": float((yw.double() - exact).abs().max()),
                }
                row[name]["time_vs_onednn"] = row[name]["s"] / row["onednn"]["s"]
            rows.append(row)
            print(row)
    result = {
        "schema": "streamseg.bench.winograd_probe/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "why": __doc__.split("\n\n")[0],
        "rows": rows,
    }
    write_json(out, result)
    return result


if __name__ == "__main__":
    day = _dt.date.today().isoformat()
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(f"benchmarks/results/winograd_probe_{day}.json"))
