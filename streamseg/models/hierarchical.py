"""RGB Hierarchical UNet V2 with a full-image pretrained people-seg UNet (the whole person model).

Data flow: UNet(image) -> 2-ch logits -> ROI align (mask + raw RGB) -> RGB feature extractor ->
concat 256+2 -> 1x1 combiner -> hierarchical head -> 3-class logits per ROI
(background, target person, other person).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResBlock, conv_bn_relu
from .head import RefinedHierarchicalHead
from .peopleseg import PeopleSegUNet
from .registry import ModelSpec
from .roi_align import GridRoIAlign


def rgb_feature_extractor() -> nn.Sequential:
    """Stride-1 RGB encoder 3->64->128->256->256 with a ResBlock at each width."""
    return nn.Sequential(
        *conv_bn_relu(3, 64), ResBlock(64),
        *conv_bn_relu(64, 128), ResBlock(128),
        *conv_bn_relu(128, 256), ResBlock(256),
        *conv_bn_relu(256, 256, k=1),
    )


class HierarchicalUNetV2(nn.Module):
    """The person instance model. Call ``model(images, rois)``.

    images: float32 [B,3,H,W] RGB in [0, 1] (H, W multiples of 32).
    rois:   float32 [N,5] rows (batch_index, x1, y1, x2, y2), coordinates normalised to [0, 1].
    Returns a dict: ``masks`` [N,3,Hm,Wm] logits (background, target, other person) and the
    auxiliary tensors under upstream's names. ``with_aux=False`` skips contour/distance heads.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.pretrained_unet = PeopleSegUNet(spec.encoder_name)
        self.roi_align_mask = GridRoIAlign(spec.roi_size)
        self.roi_align_rgb = GridRoIAlign(spec.roi_size)
        self.rgb_feature_extractor = rgb_feature_extractor()
        self.feature_combiner = nn.Conv2d(258, 256, kernel_size=1)
        self.segmentation_head = RefinedHierarchicalHead(spec.mask_size, 256, spec.base_channels, spec.depth)
        self.with_aux = True

    @property
    def peopleseg(self) -> PeopleSegUNet:
        return self.pretrained_unet

    def freeze_backbone(self, frozen: bool = True) -> "HierarchicalUNetV2":
        """Freeze the people-seg UNet (weights and BatchNorm stats), like smp's freeze_encoder."""
        self.pretrained_unet.freeze(frozen)
        return self

    def forward_heads(self, images: torch.Tensor, full_logits: torch.Tensor, rois: torch.Tensor,
                      with_aux: bool | None = None) -> dict[str, torch.Tensor]:
        """Everything after the full-image UNet (lets callers reuse one UNet pass for many ROIs)."""
        roi_mask = self.roi_align_mask(full_logits, rois)
        roi_rgb = self.roi_align_rgb(images, rois)
        feats = self.rgb_feature_extractor(roi_rgb)
        fused = self.feature_combiner(torch.cat([feats, roi_mask], dim=1))
        out = self.segmentation_head(fused, self.with_aux if with_aux is None else with_aux)
        out["full_image_logits"] = full_logits
        out["roi_features"] = roi_mask
        out["roi_patches"] = roi_rgb
        return out

    def forward(self, images: torch.Tensor, rois: torch.Tensor, with_aux: bool | None = None) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {tuple(images.shape[-2:])}")
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f"rois must be [N,5] (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
        full_logits = self.pretrained_unet(images)
        return self.forward_heads(images, full_logits, rois, with_aux)
