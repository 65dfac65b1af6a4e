"""ROI sampling as the upstream model does it: one bilinear grid_sample tap per output pixel.

Not torchvision's RoIAlign. The grid is corner-inclusive (first/last samples sit exactly on the
box edges) and pixel k has its centre at coordinate k (align_corners=True). Upstream hard-wires
the pixel scale to 640; we use the real input size, which equals upstream at 640x640 and samples
the right pixels at any other size. The float32 formula order is kept so 640x640 matches upstream
to ~1e-6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def roi_grid(rois: torch.Tensor, out_hw: tuple[int, int], feat_hw: tuple[int, int],
             scale_hw: tuple[float, float] | None = None) -> torch.Tensor:
    """Sampling grid [N, h, w, 2] in grid_sample units for normalised rois [N, 5]."""
    h, w = out_hw
    fh, fw = feat_hw
    sh, sw = scale_hw if scale_hw is not None else (float(fh), float(fw))
    dtype = rois.dtype if rois.dtype in (torch.float32, torch.float64) else torch.float32
    r = rois.to(dtype)
    u = torch.linspace(0, 1, w, dtype=dtype, device=rois.device)
    v = torch.linspace(0, 1, h, dtype=dtype, device=rois.device)
    # Scale both corners first, then take the extent: this order matches upstream bit for bit.
    x1, x2 = r[:, 1:2] * sw, r[:, 3:4] * sw
    y1, y2 = r[:, 2:3] * sh, r[:, 4:5] * sh
    px = x1 + u[None, :] * (x2 - x1)  # [N, w]
    py = y1 + v[None, :] * (y2 - y1)  # [N, h]
    gx = px / (fw - 1) * 2 - 1
    gy = py / (fh - 1) * 2 - 1
    n = r.shape[0]
    return torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=-1)


class GridRoIAlign(nn.Module):
    """Crop each ROI of its batch image to a fixed size with bilinear sampling (no parameters)."""

    def __init__(self, output_size: tuple[int, int]):
        super().__init__()
        self.output_size = (int(output_size[0]), int(output_size[1]))
        # Optional fixed pixel scale (H, W), as upstream's exporter bakes in; None = actual size.
        self.scale_hw: tuple[float, float] | None = None
        # Gather each ROI's image explicitly (export-friendly: no batch-size branch is traced).
        self.gather_per_roi = False

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        b, c, fh, fw = features.shape
        h, w = self.output_size
        n = rois.shape[0]
        grid = roi_grid(rois, (h, w), (fh, fw), self.scale_hw).to(features.dtype)
        if b == 1 and not self.gather_per_roi:
            # All ROIs of one image in a single call: stack them along the grid's height.
            out = F.grid_sample(features, grid.reshape(1, n * h, w, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=True)
            return out.reshape(c, n, h, w).permute(1, 0, 2, 3).contiguous()
        idx = rois[:, 0].long()
        return F.grid_sample(features.index_select(0, idx), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=True)
