"""Hierarchical segmentation head: bg/fg UNet, fg gate, target/non-target branch, aux heads.

Attribute names and Sequential indices reproduce upstream's state_dict keys exactly, which is what
lets released checkpoints load strictly. Every norm is BatchNorm2d, every activation ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ChannelAttention, ResBlock, SpatialAttention, conv1x1, conv3x3, conv_bn_relu


def _resize_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


class GatedUNet(nn.Module):
    """Small UNet (upstream "EnhancedUNet") producing 2-channel bg/fg logits at ROI resolution.

    Channels ch = [in, c, 2c, 4c, (8c)]; ``depth`` encoders, depth-1 max-pools, a sigmoid-gated
    bottleneck (conv(x) * attention(x)), transposed-conv decoder with skip connections.
    """

    def __init__(self, in_channels: int = 256, base: int = 64, depth: int = 3):
        super().__init__()
        ch = [in_channels] + [base * 2**i for i in range(depth)]
        self.depth = depth
        enc = [nn.Sequential(*conv_bn_relu(in_channels, base), ResBlock(base), ResBlock(base))]
        for k in range(1, depth):
            enc.append(nn.Sequential(ResBlock(ch[k]), ResBlock(ch[k]), *conv_bn_relu(ch[k], ch[k + 1])))
        self.encoders = nn.ModuleList(enc)
        self.pools = nn.ModuleList([nn.MaxPool2d(2, 2) for _ in range(depth - 1)])
        top = ch[depth]
        self.bottleneck = nn.Sequential(
            ResBlock(top), ResBlock(top), *conv_bn_relu(top, top), conv1x1(top, top), nn.Sigmoid()
        )
        self.bottleneck_conv = conv3x3(top, top)
        ups, decs = [], []
        for i in range(depth - 1):
            cin, cout = ch[depth - i], ch[depth - 1 - i]
            ups.append(nn.ConvTranspose2d(cin, cout, 2, stride=2))
            decs.append(nn.Sequential(*conv_bn_relu(2 * cout, cout), ResBlock(cout), ResBlock(cout)))
        self.upconvs = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decs)
        self.final = nn.Sequential(*conv_bn_relu(base, base // 2), conv1x1(base // 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, enc in enumerate(self.encoders):
            x = enc(x)
            if k < self.depth - 1:
                skips.append(x)
                x = self.pools[k](x)
        x = self.bottleneck_conv(x) * self.bottleneck(x)
        for i, (up, dec) in enumerate(zip(self.upconvs, self.decoders)):
            skip = skips[-1 - i]
            x = _resize_to(up(x), tuple(skip.shape[-2:]))
            x = dec(torch.cat([x, skip], dim=1))
        return self.final(x)


class HierarchicalHeadV2(nn.Module):
    """bg/fg first, then target vs other person inside the foreground (upstream UNetV2 head)."""

    def __init__(self, mask_size: tuple[int, int], mid: int = 256, base: int = 64, depth: int = 3):
        super().__init__()
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))
        self.shared_features = nn.Sequential(
            *conv_bn_relu(mid, mid), nn.Dropout2d(0.1), ResBlock(mid), nn.Dropout2d(0.1), ResBlock(mid)
        )
        self.bg_vs_fg_unet = GatedUNet(mid, base, depth)
        self.upsample_bg_fg = nn.Sequential(
            nn.ConvTranspose2d(2, 32, 2, stride=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True), conv1x1(32, 2)
        )
        self.fg_gate = nn.Sequential(
            conv1x1(2, 64), nn.ReLU(inplace=True), nn.Dropout2d(0.05),
            conv1x1(64, 128), nn.ReLU(inplace=True), conv1x1(128, mid), nn.Sigmoid(),
        )
        half = mid // 2
        self.target_vs_nontarget_branch = nn.ModuleList([
            ResBlock(mid), SpatialAttention(7), nn.Dropout2d(0.1),
            nn.ConvTranspose2d(mid, half, 2, stride=2), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            ChannelAttention(half), nn.Dropout2d(0.1), ResBlock(half), conv1x1(half, 2),
        ])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.shared_features(x)
        bg_fg_low = self.bg_vs_fg_unet(shared)
        bg_fg = _resize_to(self.upsample_bg_fg(bg_fg_low), self.mask_size)
        attention = self.fg_gate(bg_fg_low)
        t = shared * attention
        for layer in self.target_vs_nontarget_branch:
            t = layer(t)
        tn = _resize_to(t, self.mask_size)
        p_fg = torch.softmax(bg_fg, dim=1)[:, 1:2]
        fg_logit = bg_fg[:, 1:2]
        masks = torch.cat([bg_fg[:, 0:1], fg_logit + tn[:, 0:1] * p_fg, fg_logit + tn[:, 1:2] * p_fg], dim=1)
        return {
            "masks": masks,
            "bg_fg_logits": bg_fg,
            "bg_fg_logits_low": bg_fg_low,
            "target_nontarget_logits": tn,
            "fg_attention": attention,
            "shared_features": shared,
        }


class ContourHead(nn.Module):
    """Contour probability (sigmoid inside) at ROI size, resized to the mask size."""

    def __init__(self, mid: int = 256):
        super().__init__()
        self.contour_branch = nn.Sequential(
            *conv_bn_relu(mid, 64), *conv_bn_relu(64, 64), conv1x1(64, 1), nn.Sigmoid()
        )

    def forward(self, shared: torch.Tensor, mask_size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.contour_branch(shared), size=mask_size, mode="bilinear", align_corners=False)


class DistanceHead(nn.Module):
    """Distance-like map and its soft mask sigmoid((map - threshold) * 10), resized to the mask size."""

    def __init__(self, mid: int = 256):
        super().__init__()
        self.distance_head = nn.Sequential(*conv_bn_relu(mid, 128), ResBlock(128), conv1x1(128, 1))
        self.threshold = nn.Parameter(torch.tensor(0.3))

    def forward(self, shared: torch.Tensor, mask_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        dmap = self.distance_head(shared)
        dmask = torch.sigmoid((dmap - self.threshold) * 10)
        up = dict(size=mask_size, mode="bilinear", align_corners=False)
        return F.interpolate(dmap, **up), F.interpolate(dmask, **up)


class RefinedHierarchicalHead(nn.Module):
    """The base head plus contour and distance auxiliary heads (skippable at inference)."""

    def __init__(self, mask_size: tuple[int, int], mid: int = 256, base: int = 64, depth: int = 3):
        super().__init__()
        self.base_head = HierarchicalHeadV2(mask_size, mid, base, depth)
        self.contour_branch = ContourHead(mid)
        self.distance_decoder = DistanceHead(mid)

    def forward(self, x: torch.Tensor, with_aux: bool = True) -> dict[str, torch.Tensor]:
        out = self.base_head(x)
        if with_aux:
            ms = self.base_head.mask_size
            out["contours"] = self.contour_branch(out["shared_features"], ms)
            out["distance_map"], out["distance_mask"] = self.distance_decoder(out["shared_features"], ms)
        return out
