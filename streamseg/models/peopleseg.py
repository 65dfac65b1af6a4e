"""The full-image people-segmentation UNet (smp Unet on a timm EfficientNet) and its 1->2 output conv.

Module nesting mirrors upstream so keys read ``pretrained_unet.model.model.<smp key>``.
Input is RGB in [0, 1]; ImageNet normalisation happens here from stored buffers. Unlike upstream
there is no "divide by 255 if the batch max exceeds 1" guess: callers must pass [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_smp_unet(encoder_name: str) -> nn.Module:
    """A stock smp Unet (1 class, random init: no download ever)."""
    import warnings

    import segmentation_models_pytorch as smp

    with warnings.catch_warnings():
        # smp marks timm-* encoders deprecated, but upstream's checkpoints use exactly these keys.
        warnings.filterwarnings("ignore", message=".*timm-.*encoders are deprecated.*")
        return smp.Unet(encoder_name=encoder_name, encoder_weights=None, classes=1)


class NormalizedUNet(nn.Module):
    """Holds the normalisation buffers and the smp Unet (upstream's middle wrapper)."""

    def __init__(self, encoder_name: str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.model = build_smp_unet(encoder_name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.norm_mean) / self.norm_std)


class PeopleSegUNet(nn.Module):
    """Full-image person logits [B,1,H,W] mapped by a 1x1 conv to [B,2,H,W] (+logit, -logit at init)."""

    def __init__(self, encoder_name: str):
        super().__init__()
        self.model = NormalizedUNet(encoder_name)
        self.output_conv = nn.Conv2d(1, 2, kernel_size=1)
        self.reset_output_conv()
        self.frozen = False

    def reset_output_conv(self) -> None:
        with torch.no_grad():
            self.output_conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.output_conv.bias.zero_()

    def freeze(self, frozen: bool = True) -> None:
        """Freeze the smp UNet: no gradients, BatchNorm statistics kept (eval) even in train()."""
        self.frozen = frozen
        for p in self.model.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.model.eval()

    def train(self, mode: bool = True) -> "PeopleSegUNet":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.frozen and torch.is_grad_enabled():
            with torch.no_grad():
                logits = self.model(images)
        else:
            logits = self.model(images)
        return self.output_conv(logits)
