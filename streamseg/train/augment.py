"""Upstream's "ROI-safe heavy" training augmentation, built with albumentations.

The only geometric transform is a horizontal flip, applied to the image, the full-size label map
and the target box together; everything else is photometric.  Probabilities and ranges are the
upstream ones (UPSTREAM.md section 10).  Values stay uint8 here: the dataset divides by 255.
"""

from __future__ import annotations

import albumentations as A


def build_train_augmentation(enabled: bool = True, flip: bool = True) -> A.Compose | None:
    """The training pipeline, or ``None`` when augmentation is switched off.

    ``Compose`` is given pascal_voc box params so the target box is flipped with the image
    (x1' = W - x2).  Randomness comes from the Compose's own generator, which the dataset
    reseeds per sample for reproducible, resumable runs.
    """
    if not enabled:
        return None
    transforms: list[A.BasicTransform | A.BaseCompose] = []
    if flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    transforms += [
        A.OneOf(
            [
                A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1, p=1.0),
                A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20, p=1.0),
                A.RGBShift(r_shift_limit=15, g_shift_limit=15, b_shift_limit=15, p=1.0),
            ],
            p=0.8,
        ),
        A.OneOf(
            [
                A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=1.0),
                A.CLAHE(clip_limit=2.0, tile_grid_size=(8, 8), p=1.0),
                A.RandomGamma(gamma_limit=(80, 120), p=1.0),
            ],
            p=0.5,
        ),
        A.OneOf(
            [
                A.RandomRain(
                    drop_length=20, drop_width=1, drop_color=(200, 200, 200), blur_value=5,
                    brightness_coefficient=0.7, rain_type="drizzle", p=1.0,
                ),
                A.RandomFog(alpha_coef=0.1, p=1.0),
                A.RandomSunFlare(flare_roi=(0, 0, 1, 0.5), src_radius=100, src_color=(255, 255, 255), p=1.0),
            ],
            p=0.1,
        ),
        A.OneOf(
            [
                A.MotionBlur(blur_limit=7, p=1.0),
                A.GaussianBlur(blur_limit=(3, 7), p=1.0),
                A.MedianBlur(blur_limit=5, p=1.0),
            ],
            p=0.05,
        ),
        A.OneOf(
            [
                A.GaussNoise(p=1.0),
                A.ISONoise(color_shift=(0.01, 0.05), intensity=(0.1, 0.5), p=1.0),
            ],
            p=0.05,
        ),
        A.OneOf(
            [
                A.ImageCompression(quality_range=(70, 95), p=1.0),
                A.Downscale(scale_range=(0.5, 0.9), p=1.0),
            ],
            p=0.1,
        ),
    ]
    return A.Compose(
        transforms,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_labels"], clip=True),
        seed=0,
    )
