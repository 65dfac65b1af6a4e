"""Validation metrics (upstream definitions) on hand-made prediction/label pairs."""

from __future__ import annotations

import pytest
import torch

from streamseg.train.metrics import SegMetrics, format_report, per_roi_iou


def _pair():
    # ROI 0 (4x4): label target in the left half, other person top-right, background bottom-right
    lab0 = torch.tensor([[1, 1, 2, 2],
                         [1, 1, 2, 2],
                         [1, 1, 0, 0],
                         [1, 1, 0, 0]])
    pred0 = torch.tensor([[1, 1, 1, 2],   # one non-target pixel called target
                          [1, 0, 2, 2],   # one target pixel missed (background)
                          [1, 1, 0, 0],
                          [2, 1, 0, 1]])  # one target called non-target, one background called target
    # ROI 1: no target in label nor prediction (IoU 1 by definition); background vs other person
    lab1 = torch.tensor([[0, 0, 2, 2]] * 4)
    pred1 = torch.tensor([[0, 2, 2, 2]] * 4)
    # ROI 2: a target that is completely missed
    lab2 = torch.tensor([[1, 0, 0, 0]] * 4)
    pred2 = torch.zeros(4, 4, dtype=torch.long)
    return torch.stack([pred0, pred1, pred2]), torch.stack([lab0, lab1, lab2])


def test_hand_computed_ious():
    pred, lab = _pair()
    m = SegMetrics()
    m.update(pred, lab)
    r = m.compute()
    # ROI0 target: pred {8 incl. (0,2) and (3,3)}, label 8, intersection 6 -> 6 / 10
    t = [6 / 10, 1.0, 0.0]
    assert per_roi_iou(pred, lab, 1).tolist() == pytest.approx(t)
    assert r["target_iou"] == pytest.approx(sum(t) / 3)
    assert r["miou"] == r["target_iou"]
    # background: ROI0 pred {(1,1),(2,2),(2,3),(3,2)} vs label {(2,2),(2,3),(3,2),(3,3)} -> 3/5
    #             ROI1 pred 4 vs label 8 -> 4/8; ROI2 pred 16 vs label 12 -> 12/16
    assert r["iou_class_0"] == pytest.approx((3 / 5 + 4 / 8 + 12 / 16) / 3)
    # other person: ROI0 pred {(0,3),(1,2),(1,3),(3,0)} vs label {(0,2),(0,3),(1,2),(1,3)} -> 3/5
    #               ROI1 12 vs 8 -> 8/12; ROI2 both empty -> 1
    assert r["iou_class_2"] == pytest.approx((3 / 5 + 8 / 12 + 1.0) / 3)
    # detection: IoU strictly above the threshold
    assert r["detection_rate_0.5"] == pytest.approx(2 / 3)
    assert r["detection_rate_0.7"] == pytest.approx(1 / 3)
    # target pixels: tp 6, fp 2 (ROI0), fn 2 (ROI0) + 4 (ROI2)
    assert r["target_precision"] == pytest.approx(6 / 8)
    assert r["target_recall"] == pytest.approx(6 / 12)
    assert r["target_f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    # separation on label foreground (is non-target?): ROI0 12 px, wrong at (0,2) and (3,0);
    # ROI1 8 px all right; ROI2 4 px, predicted background = "not non-target" = right
    assert r["instance_separation_accuracy"] == pytest.approx((12 - 2 + 8 + 4) / 24)
    # overall: ROI0 12/16 right (4 errors listed above), ROI1 12/16, ROI2 12/16
    assert r["overall_accuracy"] == pytest.approx((12 + 12 + 12) / 48)
    assert r["num_rois"] == 3


def test_logits_and_batches_accumulate_like_one_pass():
    pred, lab = _pair()
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 5 - 1
    one = SegMetrics()
    one.update(pred, lab)
    two = SegMetrics()
    two.update(logits[:1], lab[:1])
    two.update(logits[1:], lab[1:])
    assert two.compute() == one.compute()


def test_report_text_and_loss_average():
    pred, lab = _pair()
    m = SegMetrics()
    m.update(pred, lab)
    m.add_loss({"loss": 2.0})
    m.add_loss({"loss": 4.0})
    r = m.compute()
    assert r["loss/loss"] == 3.0
    text = format_report(r)
    assert "Target mIoU (upstream):       0.5333" in text
    assert "Detection rate IoU > 0.5:     66.67%" in text
    assert "non_target" in text and "Validation loss:              3.0000" in text


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="prediction shape"):
        SegMetrics().update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))
