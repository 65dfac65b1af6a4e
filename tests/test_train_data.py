"""COCO person dataset: filtering, sample list, label maps, boxes, flip, and clear data errors."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from streamseg.errors import UserError
from streamseg.train.augment import build_train_augmentation
from streamseg.train.data import CocoPersonRoiDataset, DatasetError, RoiSample, collate_rois
from streamseg.train.synthetic import make_tiny_coco, read_video_frames
from tests._shared import shared_file

W, H = 128, 96


def _rle_compressed(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def _rle_uncompressed(m: np.ndarray) -> dict:
    flat = m.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": runs}


def _bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _nearest(crop: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest resize written out (OpenCV INTER_NEAREST: source index = floor(dst * src / dst))."""
    h, w = crop.shape
    rows = np.floor(np.arange(hw[0]) * (h / hw[0])).astype(int)
    cols = np.floor(np.arange(hw[1]) * (w / hw[1])).astype(int)
    return crop[rows][:, cols]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """Three vtest frames with hand-made annotations covering every filtering rule."""
    root = tmp_path_factory.mktemp("coco")
    frames = read_video_frames(shared_file("data", "vtest.avi"), 3, (W, H))
    names = []
    for i, f in enumerate(frames):
        names.append(f"frame_{i}.png")
        cv2.imwrite(str(root / names[-1]), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    poly_a = [20, 10, 44, 10, 44, 74, 20, 74]  # rasterises to x 20..43, y 10..73
    m_a = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly_a], H, W)))
    m_b = np.zeros((H, W), np.uint8)
    cv2.ellipse(m_b, (50, 50), (12, 30), 0, 0, 360, 1, -1)
    m_crowd = np.zeros((H, W), np.uint8)
    m_crowd[64:94, 56:126] = 1  # crowd, car and tiny person all reach into B's box
    m_car = np.zeros((H, W), np.uint8)
    m_car[22:36, 58:100] = 1
    m_tiny = np.zeros((H, W), np.uint8)
    m_tiny[20:32, 50:58] = 1  # 8 x 12 px: below 16
    m_c = np.zeros((H, W), np.uint8)
    m_c[60:90, 70:94] = 1
    anns = [
        {"id": 101, "image_id": 10, "category_id": 1, "iscrowd": 0, "bbox": _bbox(m_a), "segmentation": [poly_a], "area": 1},
        {"id": 102, "image_id": 10, "category_id": 1, "iscrowd": 0, "bbox": _bbox(m_b), "segmentation": _rle_compressed(m_b), "area": 1},
        {"id": 103, "image_id": 10, "category_id": 1, "iscrowd": 1, "bbox": _bbox(m_crowd), "segmentation": _rle_uncompressed(m_crowd), "area": 1},
        {"id": 104, "image_id": 10, "category_id": 3, "iscrowd": 0, "bbox": _bbox(m_car), "segmentation": [[58, 22, 100, 22, 100, 36, 58, 36]], "area": 1},
        {"id": 105, "image_id": 10, "category_id": 1, "iscrowd": 0, "bbox": _bbox(m_tiny), "segmentation": _rle_compressed(m_tiny), "area": 1},
        {"id": 201, "image_id": 20, "category_id": 1, "iscrowd": 0, "bbox": _bbox(m_c), "segmentation": _rle_uncompressed(m_c), "area": 1},
        {"id": 301, "image_id": 30, "category_id": 1, "iscrowd": 0, "bbox": _bbox(m_tiny), "segmentation": _rle_compressed(m_tiny), "area": 1},
        {"id": 302, "image_id": 30, "category_id": 3, "iscrowd": 0, "bbox": _bbox(m_car), "segmentation": _rle_compressed(m_car), "area": 1},
    ]
    data = {
        "images": [{"id": 10 * (i + 1), "file_name": n, "width": W, "height": H} for i, n in enumerate(names)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    others = {"crowd": m_crowd, "car": m_car, "tiny": m_tiny}
    return {"root": root, "ann": ann_file, "data": data, "masks": {101: m_a, 102: m_b, 201: m_c}, "frames": frames,
            "others": others}


def test_person_filtering_and_sample_list(coco):
    ds = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=(64, 24))
    assert ds.samples == [RoiSample(10, 101, (101, 102)), RoiSample(10, 102, (101, 102)), RoiSample(20, 201, (201,))]
    assert ds.counts == {"annotations": 8, "non_person": 2, "crowd": 1, "too_small": 2, "valid": 3}
    assert len(ds) == 3
    # max_targets caps the targets, not the non-targets
    ds1 = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=(64, 24), max_targets=1)
    assert ds1.samples == [RoiSample(10, 101, (101, 102)), RoiSample(20, 201, (201,))]


def test_label_maps_boxes_and_image_at_native_size(coco):
    mask_hw = (64, 24)
    ds = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=mask_hw)
    m = coco["masks"]
    full = {101: np.where(m[101] > 0, 1, np.where(m[102] > 0, 2, 0)),
            102: np.where(m[102] > 0, 1, np.where(m[101] > 0, 2, 0)),
            201: np.where(m[201] > 0, 1, 0)}
    for i, ann_id in enumerate((101, 102, 201)):
        item = ds[i]
        x, y, w, h = (int(v) for v in _bbox(m[ann_id]))
        assert item["box"] == (x, y, x + w, y + h)
        assert torch.allclose(item["roi"], torch.tensor([x / W, y / H, (x + w) / W, (y + h) / H]))
        want = _nearest(full[ann_id][y:y + h, x:x + w].astype(np.int64), mask_hw)
        assert item["label"].dtype == torch.int64 and tuple(item["label"].shape) == mask_hw
        assert np.array_equal(item["label"].numpy(), want), ann_id
        assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
        frame = coco["frames"][0 if ann_id < 200 else 1]
        assert torch.equal(item["image"], torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    # A is a full 24 x 64 rectangle = the mask size: its label is all target, although B overlaps it
    assert (ds[0]["label"] == 1).all()
    # inside B's box, A is the other person (class 2) wherever B is not
    b = ds[1]["label"].numpy()
    assert (b == 2).sum() > 50 and (b == 1).sum() > 200 and (b == 0).sum() > 50
    # crowd, car and tiny person overlap B's box outside A and B, so the exact match above shows
    # that their pixels are background
    x, y, w, h = (int(v) for v in _bbox(m[102]))
    free = (m[101] == 0) & (m[102] == 0)
    for name, om in coco["others"].items():
        assert (om[y:y + h, x:x + w] & free[y:y + h, x:x + w]).sum() > 10, name


def test_resize_scales_boxes_and_widens_small_ones(coco):
    ds = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(48, 64), mask_size=(32, 24))
    assert ds[0]["box"] == (8, 5, 24, 37)  # A: x 20->10, w 24->12 < 16: widened to 16 around x=16
    assert ds[2]["box"] == (33, 29, 49, 45)  # C: 12 x 15 px after resize, widened to 16 x 16 around the centre
    b = collate_rois([ds[0], ds[2]])
    assert b["images"].shape == (2, 3, 48, 64) and b["labels"].shape == (2, 32, 24)
    assert torch.allclose(b["rois"], torch.tensor([[0, 8 / 64, 5 / 48, 24 / 64, 37 / 48],
                                                   [1, 33 / 64, 29 / 48, 49 / 64, 45 / 48]]))


def test_flip_moves_box_and_label_together(coco):
    plain = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=(64, 24))
    flip = A.Compose([A.HorizontalFlip(p=1.0)],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_labels"]))
    flipped = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=(64, 24), augment=flip)
    a, f = plain[0], flipped[0]
    x1, y1, x2, y2 = a["box"]
    assert f["box"] == (W - x2, y1, W - x1, y2)
    assert np.array_equal(f["label"].numpy(), a["label"].numpy()[:, ::-1])
    assert torch.equal(f["image"], a["image"].flip(-1))
    # the upstream pipeline: deterministic per (seed, epoch, index), flips about half the time
    heavy = CocoPersonRoiDataset(coco["ann"], coco["root"], image_size=(H, W), mask_size=(64, 24),
                                 augment=build_train_augmentation())
    boxes = []
    for epoch in range(8):
        heavy.set_epoch(epoch)
        item = heavy[0]
        again = heavy[0]
        assert torch.equal(item["image"], again["image"])
        assert item["box"] in (a["box"], f["box"])
        want = a["label"] if item["box"] == a["box"] else f["label"]
        assert torch.equal(item["label"], want)
        boxes.append(item["box"])
    assert a["box"] in boxes and f["box"] in boxes


def test_generated_tiny_dataset_matches_painted_masks(tmp_path):
    tiny = make_tiny_coco(tmp_path / "tiny", num_train=3, num_val=1, size_wh=(160, 128),
                          video=shared_file("data", "vtest.avi"))
    ds = CocoPersonRoiDataset(tiny.train_json, tiny.image_dir, image_size=(128, 160), mask_size=(32, 24))
    assert ds.counts["non_person"] == 1 and ds.counts["crowd"] == 1 and ds.counts["too_small"] == 1
    data = json.loads(tiny.train_json.read_text())
    styles = {type(a["segmentation"]).__name__ + (":" + type(a["segmentation"]["counts"]).__name__
              if isinstance(a["segmentation"], dict) else "") for a in data["annotations"]}
    assert {"list", "dict:str", "dict:list"} <= styles  # polygon, compressed and uncompressed RLE
    assert len(ds) == ds.counts["valid"] >= 6
    for i in range(len(ds)):
        s = ds.samples[i]
        item = ds[i]
        full = np.zeros((128, 160), np.int64)
        for aid in s.valid_ann_ids:
            if aid != s.target_ann_id:
                full[tiny.masks[aid] > 0] = 2
        full[tiny.masks[s.target_ann_id] > 0] = 1
        x1, y1, x2, y2 = item["box"]
        assert np.array_equal(item["label"].numpy(), _nearest(full[y1:y2, x1:x2], (32, 24)))
        assert (item["label"] == 1).any()


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_missing_image_is_a_clear_error(coco, tmp_path):
    data = json.loads(coco["ann"].read_text())
    data["images"][1]["file_name"] = "gone.png"
    ann = _write(tmp_path / "a.json", data)
    with pytest.raises(DatasetError, match=r"image file not found: .*gone\.png") as ei:
        CocoPersonRoiDataset(ann, coco["root"])
    assert isinstance(ei.value, UserError) and "\n" not in str(ei.value)


def test_broken_annotation_json_is_a_clear_error(coco, tmp_path):
    text = coco["ann"].read_text()
    ann = _write(tmp_path / "broken.json", text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"broken\.json: broken annotation JSON at line 1 column \d+"):
        CocoPersonRoiDataset(ann, coco["root"])
    with pytest.raises(DatasetError, match="no 'annotations' list"):
        CocoPersonRoiDataset(_write(tmp_path / "x.json", {"images": []}), coco["root"])
    with pytest.raises(DatasetError, match="annotation file not found"):
        CocoPersonRoiDataset(tmp_path / "nope.json", coco["root"])
    bad = json.loads(text)
    del bad["annotations"][0]["bbox"]
    with pytest.raises(DatasetError, match="annotation 101 is malformed"):
        CocoPersonRoiDataset(_write(tmp_path / "m.json", bad), coco["root"])


def test_dataset_without_persons_is_a_clear_error(coco, tmp_path):
    data = json.loads(coco["ann"].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (103, 104, 105, 301, 302)]
    with pytest.raises(DatasetError, match=r"no usable person annotations \(5 annotations: 2 not person, "
                                           r"1 crowd, 2 smaller than 16 px\)"):
        CocoPersonRoiDataset(_write(tmp_path / "np.json", data), coco["root"])
    data["categories"] = [{"id": 3, "name": "car"}]
    with pytest.raises(DatasetError, match="no 'person' category; categories present: car"):
        CocoPersonRoiDataset(_write(tmp_path / "nc.json", data), coco["root"])
