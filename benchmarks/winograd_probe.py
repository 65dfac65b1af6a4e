"""Winograd 3x3 layers vs oneDNN's direct convolution, per conv shape of the B0 model at 8 ROIs.

Why: ``apply_winograd`` replaces only convs with >= 64 input and output channels; this probe is
the measurement behind that threshold and the per-layer speed and error (against a float64
conv) of F(2x2, 3x3) and F(4x4, 3x3). Run: ``python benchmarks/winograd_probe.py [out.json]``.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from streamseg.bench.machine import machine_info
from streamseg.metrics import write_json
from streamseg.models.winograd import WinogradConv2d, kernel_available

# (N, Cin, Cout, H, W): head and RGB extractor at 8 ROIs of 64x48 (mask 128x96), UNet decoder
SHAPES = [
    (8, 256, 256, 64, 48), (8, 128, 128, 128, 96), (8, 128, 128, 64, 48), (8, 256, 64, 64, 48),
    (8, 64, 64, 64, 48), (8, 64, 128, 64, 48), (8, 256, 256, 16, 12), (8, 128, 128, 32, 24),
    (1, 432, 256, 40, 40), (1, 296, 128, 80, 80), (1, 152, 64, 160, 160), (1, 96, 32, 320, 320),
]


def median_time(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(out: Path) -> dict:
    if not kernel_available():
        raise SystemExit("the Winograd kernel could not be built (no C compiler?)")
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for n, cin, cout, h, w in SHAPES:
            conv = nn.Conv2d(cin, cout, 3, padding=1).eval().to(memory_format=torch.channels_last)
            x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
            exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
            row = {"shape_n_cin_cout_h_w": [n, cin, cout, h, w]}
            row["onednn"] = {
                "s": median_time(lambda: conv(x)),
                "max_abs_err": float((conv(x).double() - exact).abs().max()),
            }
            for tile in (2, 4):
                layer = WinogradConv2d(conv, tile)
                row[f"winograd_f{tile}"] = {
                    "s": median_time(lambda: layer(x)),
                    "max_abs_err": float((layer(x).double() - exact).abs().max()),
                }
                row[f"winograd_f{tile}"]["time_vs_onednn"] = row[f"winograd_f{tile}"]["s"] / row["onednn"]["s"]
            rows.append(row)
            print(
                row["shape_n_cin_cout_h_w"],
                " ".join(f"{k} {v['s'] * 1e3:.1f} ms (err {v['max_abs_err']:.1e})" for k, v in row.items() if k != "shape_n_cin_cout_h_w"),
            )
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
