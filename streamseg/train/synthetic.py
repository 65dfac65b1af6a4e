"""A tiny COCO-format person dataset, generated on the fly, for smoke tests and CPU benchmarks.

People-like figures (head, torso, legs) are painted in flat colours on background frames read from
a video with PyAV (or on drawn gradients when no video is given).  Annotations mix polygon and
RLE segmentations and include the cases the loader must filter: a crowd region, a non-person
object and a person smaller than 16 px.  Run ``python -m streamseg.train.synthetic OUT_DIR
[--video FILE]``; it writes ``OUT_DIR/images/*.png`` and ``OUT_DIR/{train,val}.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

log = logging.getLogger(__name__)

PERSON = {"id": 1, "name": "person", "supercategory": "person"}
CAR = {"id": 3, "name": "car", "supercategory": "vehicle"}


def read_video_frames(path: str | Path, count: int, size_wh: tuple[int, int], stride: int = 37) -> list[np.ndarray]:
    """``count`` RGB frames (uint8, resized to ``size_wh``) taken every ``stride`` frames with PyAV."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % stride:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, size_wh, interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames decoded")
    while len(frames) < count:
        frames.append(frames[len(frames) % max(1, len(frames))].copy())
    return frames


def drawn_background(size_wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random gradient with noise, when no video is available."""
    w, h = size_wh
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    gx, gy = rng.uniform(-60, 60, size=(2, 3))
    img = base + gx * xx[..., None] / w + gy * yy[..., None] / h + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def person_mask(size_wh: tuple[int, int], cx: float, top: float, height: float) -> np.ndarray:
    """A standing figure: round head, elliptic torso, two leg polygons (uint8 0/1)."""
    w, h = size_wh
    m = np.zeros((h, w), dtype=np.uint8)
    head_r = max(1, int(round(height * 0.09)))
    hy = int(round(top + head_r))
    cv2.circle(m, (int(round(cx)), hy), head_r, 1, thickness=-1)
    torso_h = height * 0.42
    torso_cy = top + 2 * head_r + torso_h / 2
    cv2.ellipse(m, (int(round(cx)), int(round(torso_cy))),
                (max(1, int(round(height * 0.14))), max(1, int(round(torso_h / 2)))), 0, 0, 360, 1, -1)
    hip = top + 2 * head_r + torso_h * 0.85
    foot = top + height
    lw = max(1.0, height * 0.06)
    for side in (-1, 1):
        pts = np.array([
            [cx + side * 0.5, hip], [cx + side * (0.5 + 2 * lw), hip],
            [cx + side * (0.5 + 2.6 * lw), foot], [cx + side * (0.5 + 0.6 * lw), foot],
        ])
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return polys


def _rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    if compressed:
        r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = int(v), 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


@dataclass
class TinyDataset:
    """Paths of a generated dataset and the exact masks painted into it (for tests)."""

    root: Path
    train_json: Path
    val_json: Path
    image_dir: Path
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # annotation id -> full-size mask


def make_tiny_coco(
    out_dir: str | Path,
    num_train: int = 6,
    num_val: int = 2,
    size_wh: tuple[int, int] = (256, 192),
    video: str | Path | None = None,
    seed: int = 0,
) -> TinyDataset:
    """Write a small COCO person dataset (PNG images, two annotation files) and return its paths.

    Every image holds 2-3 people (overlapping pairs included, so label maps have class 2);
    the first training image also carries a crowd region, a car and a 10-px person, which the
    loader must drop.  Segmentations alternate polygon / compressed RLE / uncompressed RLE.
    """
    root = Path(out_dir)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = num_train + num_val
    w, h = size_wh
    bgs = read_video_frames(video, n, size_wh) if video else [drawn_background(size_wh, rng) for _ in range(n)]
    out = TinyDataset(root, root / "train.json", root / "val.json", img_dir)
    splits: dict[str, dict[str, Any]] = {
        s: {"info": {"description": f"streamseg tiny synthetic {s}"}, "images": [], "annotations": [],
            "categories": [PERSON, CAR]} for s in ("train", "val")
    }
    ann_id = 1
    for i in range(n):
        split = "train" if i < num_train else "val"
        img = bgs[i].copy()
        image_id = i + 1
        people = []
        k = 2 + int(rng.integers(0, 2))
        xs = np.linspace(w * 0.22, w * 0.78, k) + rng.uniform(-w * 0.05, w * 0.05, k)
        for j in range(k):
            ph = float(rng.uniform(0.45, 0.8) * h)
            top = float(rng.uniform(0.02, 0.95 - ph / h) * h)
            cx = float(xs[j]) if j != 1 else float(xs[0] + ph * 0.18)  # second figure overlaps the first
            people.append(person_mask(size_wh, cx, top, ph))
        colours = rng.integers(0, 255, size=(len(people), 3))
        occupied = np.zeros((h, w), dtype=np.uint8)
        visible_masks = []
        for m, c in zip(reversed(people), reversed(colours)):  # last painted = front-most
            vis = (m > 0) & (occupied == 0)
            img[vis] = c
            occupied |= m
            visible_masks.append(vis.astype(np.uint8))
        visible_masks.reverse()
        anns = []
        for j, vm in enumerate(visible_masks):
            if vm.sum() < 20:
                continue
            style = (i + j) % 3
            seg: Any = _polygons(vm) if style == 0 else _rle(vm, compressed=(style == 1))
            if style == 0:  # the dataset's truth for a polygon is its rasterisation
                rles = mask_utils.frPyObjects(seg, h, w)
                vm = mask_utils.decode(mask_utils.merge(rles))
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "bbox": _bbox(vm), "area": float(vm.sum()), "segmentation": seg})
            out.masks[ann_id] = vm
            ann_id += 1
        if i == 0:
            crowd = np.zeros((h, w), dtype=np.uint8)
            crowd[h - 30:h - 4, 4:60] = 1
            img[crowd > 0] = (img[crowd > 0] // 2 + 60)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                         "bbox": _bbox(crowd), "area": float(crowd.sum()), "segmentation": _rle(crowd, False)})
            out.masks[ann_id] = crowd
            ann_id += 1
            car = np.zeros((h, w), dtype=np.uint8)
            car[6:40, w - 70:w - 6] = 1
            img[car > 0] = (200, 30, 30)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 3, "iscrowd": 0,
                         "bbox": _bbox(car), "area": float(car.sum()),
                         "segmentation": _polygons(car)})
            out.masks[ann_id] = car
            ann_id += 1
            tiny = person_mask(size_wh, w * 0.5, 2, 10)
            tiny &= (occupied == 0).astype(np.uint8)
            img[tiny > 0] = (250, 250, 0)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "bbox": _bbox(tiny), "area": float(tiny.sum()), "segmentation": _rle(tiny)})
            out.masks[ann_id] = tiny
            ann_id += 1
        name = f"{split}_{image_id:04d}.png"
        cv2.imwrite(str(img_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        splits[split]["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        splits[split]["annotations"].extend(anns)
    for s, path in (("train", out.train_json), ("val", out.val_json)):
        path.write_text(json.dumps(splits[s]))
    log.info("tiny dataset written to %s (%d train, %d val images)", root, num_train, num_val)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--video", default=None, help="background video (e.g. vtest.avi); drawn backgrounds if omitted")
    ap.add_argument("--train", type=int, default=6)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--size", default="256x192", help="image size WxH")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_tiny_coco(a.out_dir, a.train, a.val, (w, h), a.video, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
