"""Post-processing of the person model's outputs that is shared by PyTorch inference and ONNX export."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TARGET_CLASS = 1
DILATION_THRESHOLD = 0.1
DILATION_BOOST = 2.0


def dilate_target_logits(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow the target-person region of 3-class logits by about ``pixels`` mask pixels.

    Upstream's exporter option (``--dilation_pixels k``), reproduced because released "dil1"
    models were exported with it: softmax over the 3 classes, max-pool the target probability
    with a (2k+1)x(2k+1) window, and where the pooled value exceeds the original by more than 0.1
    add +2.0 to the target logit. ``pixels == 0`` returns ``masks`` unchanged. Works on
    [N, 3, H, W] logits in any float dtype and traces to ONNX (Softmax, MaxPool, Greater, Where).
    """
    k = int(pixels)
    if k < 0:
        raise ValueError(f"dilation pixels must be >= 0, got {pixels}")
    if k == 0:
        return masks
    if masks.dim() != 4 or masks.shape[1] != 3:
        raise ValueError(f"masks must be [N,3,H,W] logits, got {tuple(masks.shape)}")
    prob = torch.softmax(masks, dim=1)[:, TARGET_CLASS : TARGET_CLASS + 1]
    pooled = F.max_pool2d(prob, kernel_size=2 * k + 1, stride=1, padding=k)
    grow = (pooled - prob) > DILATION_THRESHOLD
    boost = torch.where(grow, torch.full_like(prob, DILATION_BOOST), torch.zeros_like(prob))
    zeros = torch.zeros_like(prob)
    return masks + torch.cat([zeros, boost, zeros], dim=1)


def binary_person_prob(full_image_logits: torch.Tensor) -> torch.Tensor:
    """Full-frame person probability [B,1,H,W]: softmax of the UNet's 2 channels, channel 0.

    Same as upstream's exported ``binary_masks`` (channel 0 is the +logit after output_conv).
    """
    return torch.softmax(full_image_logits, dim=1)[:, 0:1]
