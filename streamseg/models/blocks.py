"""Small building blocks of the hierarchical head (names chosen so state_dict keys match upstream)."""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def conv1x1(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    """Conv (bias) + BatchNorm + ReLU as three list entries, so Sequential indices match upstream."""
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input, then ReLU (keys conv1/norm1/conv2/norm2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.norm2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.relu(y + x)


class SpatialAttention(nn.Module):
    """Gate every pixel by a 7x7 conv over its channel mean and max (no bias)."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class ChannelAttention(nn.Module):
    """Squeeze-excite gate: global average pool, bottleneck max(C/8, 8), sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        mid = max(channels // 8, 8)
        self.fc1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.fc2 = nn.Conv2d(mid, channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.sigmoid(self.fc2(self.relu(self.fc1(w))))
        return x * w
