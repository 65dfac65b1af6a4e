"""COCO-format person dataset producing one training sample per target person (upstream rules).

Upstream trained on COCO files pre-filtered to person / non-crowd; streamseg does that filtering
itself, so raw COCO annotation files work as well as pre-filtered ones.  Sample rules
(UPSTREAM.md section 10):

* a person annotation is *valid* when its original bbox width and height are >= ``min_size``
  (16 px) and it is not a crowd annotation;
* each of the first ``max_targets`` (10) valid annotations of an image is one sample (target);
  all valid annotations of the image are potential non-targets; smaller persons are background;
* the image is resized to the training size (PIL bilinear, aspect ratio not kept) and every
  instance mask to the same size (nearest);
* the target box is scaled, floored to integers (``x1 = int(x)``, ``x2 = int(x + w)``), clamped,
  and widened to at least ``min_size`` px around its centre; no jitter, no padding;
* the label crop ``[y1:y2, x1:x2]`` holds 1 for the target, 2 for other valid persons, 0 else,
  resized (nearest) to the mask size; the ROI is the box divided by the image size.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from streamseg.errors import UserError

log = logging.getLogger(__name__)


class DatasetError(UserError):
    """The training/validation data cannot be used (missing image, broken JSON, no persons)."""


@dataclass(frozen=True)
class RoiSample:
    """One target person: its image, its annotation and every valid person of that image."""

    image_id: int
    target_ann_id: int
    valid_ann_ids: tuple[int, ...]


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: broken annotation JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: annotation file is not UTF-8 JSON ({exc.reason})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: annotation JSON must be an object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: annotation JSON has no '{key}' list (COCO format required)")
    return data


def _person_category_ids(data: dict[str, Any], path: Path) -> set[int]:
    cats = data.get("categories") or []
    ids = {int(c["id"]) for c in cats if isinstance(c, dict) and str(c.get("name", "")).lower() == "person"}
    if cats and not ids:
        names = ", ".join(sorted({str(c.get("name")) for c in cats if isinstance(c, dict)})[:10])
        raise DatasetError(f"{path}: no 'person' category; categories present: {names}")
    if not cats:
        ids = {1}  # COCO's person id when a file carries no category list
        log.warning("%s: no 'categories' list; assuming person is category_id 1", path)
    return ids


def index_person_samples(
    data: dict[str, Any], path: Path, min_size: float = 16, max_targets: int = 10
) -> tuple[list[RoiSample], dict[str, int]]:
    """Apply upstream's sample rules to a parsed COCO dict; also return filtering counts."""
    person_ids = _person_category_ids(data, path)
    by_image: dict[int, list[dict[str, Any]]] = {}
    counts = {"annotations": 0, "non_person": 0, "crowd": 0, "too_small": 0, "valid": 0}
    for ann in data["annotations"]:
        counts["annotations"] += 1
        try:
            img_id = int(ann["image_id"])
            cat = int(ann.get("category_id", 1))
            bbox = ann["bbox"]
            w, h = float(bbox[2]), float(bbox[3])
            _ = ann["segmentation"]
            _ = ann["id"]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DatasetError(
                f"{path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'} is malformed "
                f"(needs id, image_id, category_id, bbox [x,y,w,h], segmentation): {exc!r}"
            ) from None
        if cat not in person_ids:
            counts["non_person"] += 1
            continue
        if int(ann.get("iscrowd", 0)):
            counts["crowd"] += 1
            continue
        if w < min_size or h < min_size:
            counts["too_small"] += 1
            continue
        counts["valid"] += 1
        by_image.setdefault(img_id, []).append(ann)
    samples: list[RoiSample] = []
    known_images = {int(im["id"]) for im in data["images"]}
    for img in data["images"]:
        img_id = int(img["id"])
        anns = by_image.get(img_id, [])
        ids = tuple(int(a["id"]) for a in anns)
        for a in anns[:max_targets]:
            samples.append(RoiSample(img_id, int(a["id"]), ids))
    orphans = set(by_image) - known_images
    if orphans:
        raise DatasetError(f"{path}: annotations refer to image ids missing from 'images': {sorted(orphans)[:5]}")
    return samples, counts


class CocoPersonRoiDataset(Dataset):
    """One item per target person: image [3,H,W] in [0,1], label [Hm,Wm] int64, roi [4] normalised.

    ``repeat`` > 1 makes one epoch pass over every sample that many times (tiny datasets);
    the repeats get different augmentations.  ``augment`` is an albumentations Compose (see
    :func:`streamseg.train.augment.build_train_augmentation`) or None.  Its randomness is reseeded
    per item from (``seed``, epoch, index), so a run is reproducible, resumable and independent of
    DataLoader worker scheduling; call :meth:`set_epoch` at the start of each epoch.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        image_size: tuple[int, int] = (640, 640),
        mask_size: tuple[int, int] = (128, 96),
        min_size: float = 16,
        max_targets: int = 10,
        augment: Any | None = None,
        seed: int = 0,
        check_images: bool = True,
        repeat: int = 1,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.image_size = (int(image_size[0]), int(image_size[1]))  # (H, W)
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))  # (H, W)
        self.min_size = min_size
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.repeat = max(1, int(repeat))
        data = _load_json(self.annotation_file)
        self.samples, self.counts = index_person_samples(data, self.annotation_file, min_size, max_targets)
        if not self.samples:
            c = self.counts
            raise DatasetError(
                f"{self.annotation_file}: no usable person annotations ({c['annotations']} annotations: "
                f"{c['non_person']} not person, {c['crowd']} crowd, {c['too_small']} smaller than "
                f"{min_size:g} px); nothing to train or evaluate on"
            )
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        if check_images:
            self._check_images()
        log.info(
            "%s: %d samples from %d images (%s)", self.annotation_file, len(self.samples),
            len({s.image_id for s in self.samples}), self.counts,
        )

    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _check_images(self) -> None:
        missing = []
        for img_id in sorted({s.image_id for s in self.samples}):
            p = self._image_path(img_id)
            if not p.is_file():
                missing.append(p)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetError(
                f"{self.annotation_file}: image file not found: {missing[0]}{more}; "
                f"check data image_dir ({self.image_dir})"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of ``epoch`` (deterministic per item)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples) * self.repeat

    def _read_image(self, image_id: int) -> Image.Image:
        p = self._image_path(image_id)
        try:
            with Image.open(p) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise DatasetError(f"{self.annotation_file}: image file not found: {p}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"{p}: cannot read image ({exc})") from None

    def _instance_mask(self, ann: dict[str, Any], size_wh: tuple[int, int]) -> np.ndarray:
        try:
            m = self.coco.annToMask(ann)
        except Exception as exc:  # pycocotools raises assorted errors on bad polygons/RLE
            raise DatasetError(
                f"{self.annotation_file}: annotation {ann['id']} has an unreadable segmentation ({exc!r})"
            ) from None
        return cv2.resize(m, size_wh, interpolation=cv2.INTER_NEAREST)

    def target_box(self, ann: dict[str, Any], orig_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """The integer target box in resized-image pixels, built as upstream does."""
        H, W = self.image_size
        ow, oh = orig_wh
        x, y, w, h = (float(v) for v in ann["bbox"])
        x, w = x * W / ow, w * W / ow
        y, h = y * H / oh, h * H / oh
        x1, y1 = max(0, int(x)), max(0, int(y))
        x2, y2 = min(W, int(x + w)), min(H, int(y + h))
        m = int(self.min_size)
        if x2 - x1 < m:
            cx = (x1 + x2) // 2
            x1 = max(0, cx - m // 2)
            x2 = min(W, x1 + m)
        if y2 - y1 < m:
            cy = (y1 + y2) // 2
            y1 = max(0, cy - m // 2)
            y2 = min(H, y1 + m)
        return x1, y1, x2, y2

    def item_seed(self, index: int) -> int:
        """The augmentation seed of ``index`` in the current epoch."""
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def full_label_map(self, sample: RoiSample, orig_wh: tuple[int, int]) -> np.ndarray:
        """Label map at image size: 1 target, 2 other valid persons, 0 elsewhere (uint8)."""
        H, W = self.image_size
        label = np.zeros((H, W), dtype=np.uint8)
        img_info = self.coco.imgs[sample.image_id]
        if (int(img_info.get("width", orig_wh[0])), int(img_info.get("height", orig_wh[1]))) != orig_wh:
            raise DatasetError(
                f"{self._image_path(sample.image_id)}: image is {orig_wh[0]}x{orig_wh[1]} but the "
                f"annotation file says {img_info.get('width')}x{img_info.get('height')}"
            )
        target = self._instance_mask(self.coco.anns[sample.target_ann_id], (W, H))
        label[target > 0] = 1
        for aid in sample.valid_ann_ids:
            if aid == sample.target_ann_id:
                continue
            other = self._instance_mask(self.coco.anns[aid], (W, H))
            label[(other > 0) & (label == 0)] = 2
        return label

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index % len(self.samples)]
        H, W = self.image_size
        pil = self._read_image(sample.image_id)
        orig_wh = pil.size
        image = np.asarray(pil.resize((W, H), Image.BILINEAR), dtype=np.uint8)
        label = self.full_label_map(sample, orig_wh)
        x1, y1, x2, y2 = self.target_box(self.coco.anns[sample.target_ann_id], orig_wh)
        if self.augment is not None:
            self.augment.set_random_seed(self.item_seed(index))
            out = self.augment(image=image, mask=label, bboxes=[[x1, y1, x2, y2]], box_labels=[0])
            image, label = out["image"], out["mask"]
            if len(out["bboxes"]) != 1:
                raise RuntimeError(f"augmentation dropped the target box of sample {index}")
            x1, y1, x2, y2 = (int(round(float(v))) for v in out["bboxes"][0])
        crop = np.ascontiguousarray(label[y1:y2, x1:x2])
        Hm, Wm = self.mask_size
        crop = cv2.resize(crop, (Wm, Hm), interpolation=cv2.INTER_NEAREST)
        img_t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
        roi = torch.tensor([x1 / W, y1 / H, x2 / W, y2 / H], dtype=torch.float32)
        return {
            "image": img_t,
            "label": torch.from_numpy(crop.astype(np.int64)),
            "roi": roi,
            "box": (x1, y1, x2, y2),
            "image_id": sample.image_id,
            "ann_id": sample.target_ann_id,
        }


def collate_rois(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples: images [B,3,H,W], labels [B,Hm,Wm], rois [B,5] = (batch index, x1,y1,x2,y2)."""
    images = torch.stack([b["image"] for b in batch])
    labels = torch.stack([b["label"] for b in batch])
    idx = torch.arange(len(batch), dtype=torch.float32).unsqueeze(1)
    rois = torch.cat([idx, torch.stack([b["roi"] for b in batch])], dim=1)
    return {
        "images": images,
        "labels": labels,
        "rois": rois,
        "image_ids": [b["image_id"] for b in batch],
        "ann_ids": [b["ann_id"] for b in batch],
    }


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of ``epoch``: a pure function of (seed, epoch) for exact resume."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1)[0]))
    return torch.randperm(n, generator=g).tolist()
