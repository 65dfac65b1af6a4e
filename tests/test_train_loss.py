"""The training loss reproduces upstream's numbers on the parity fixture's loss case."""

from __future__ import annotations

import pytest
import torch

from streamseg.train import HierarchicalLoss
from streamseg.train.loss import contour_targets, contour_weight, distance_targets
from tests._shared import shared_file


@pytest.fixture(scope="module")
def fixture():
    fx = torch.load(shared_file("fixtures", "upstream_b0_parity.pt"), weights_only=True)
    return fx["outputs"], fx["loss_case"]


def test_loss_matches_upstream_two_calls(fixture):
    outputs, case = fixture
    loss = HierarchicalLoss()
    for call in (1, 2):
        total, parts = loss(outputs, case["targets"])
        assert total.dim() == 0
        assert abs(total.item() - case[f"total_loss_call{call}"]) < 1e-4
        ref = case[f"components_call{call}"]
        for key, value in ref.items():
            assert key in parts, key
            assert abs(parts[key] - value) < 1e-4, (call, key, parts[key], value)
        assert all(isinstance(v, float) for v in parts.values())
    # the second call differs only through the moving bg/fg weights
    assert case["total_loss_call2"] != case["total_loss_call1"]


def test_loss_has_gradients_for_every_head(fixture):
    outputs, case = fixture
    keys = ["masks", "bg_fg_logits", "target_nontarget_logits", "contours", "distance_map"]
    leaves = {k: outputs[k].clone().requires_grad_(True) for k in keys}
    total, _ = HierarchicalLoss()(leaves, case["targets"])
    total.backward()
    for k in keys:
        assert leaves[k].grad is not None and leaves[k].grad.abs().sum() > 0, k


def test_ema_state_roundtrip(fixture):
    outputs, case = fixture
    a = HierarchicalLoss()
    a(outputs, case["targets"])
    b = HierarchicalLoss()
    b.load_ema_state(a.ema_state())
    ta, _ = a(outputs, case["targets"])
    tb, _ = b(outputs, case["targets"])
    assert ta.item() == tb.item()
    assert abs(ta.item() - case["total_loss_call2"]) < 1e-4


def test_contour_fixed_mode_differs_and_is_lower_for_perfect_contours():
    t = torch.zeros(1, 128, 96, dtype=torch.long)
    t[0, 30:90, 20:70] = 1
    tgt = contour_targets(t)
    # targets are a 5x5-thickened ring: some ones, far fewer than pixels
    assert 0 < tgt.sum() < tgt.numel() / 4
    perfect = {"contours": tgt.clone()}
    up = HierarchicalLoss(contour_mode="upstream")._contour_term(perfect["contours"], t)
    fixed = HierarchicalLoss(contour_mode="logits_fixed")._contour_term(perfect["contours"], t)
    assert fixed.item() < 1e-4  # a perfect probability map costs ~nothing
    assert up.item() > 0.3  # the double sigmoid keeps upstream's term high
    assert contour_weight(128, 96) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="contour_mode"):
        HierarchicalLoss(contour_mode="bogus")  # type: ignore[arg-type]


def test_distance_target_is_pseudo_distance():
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, 8, 8] = 1
    d = distance_targets(t)[0, 0]
    assert d[8, 8] == 1.0
    assert d[8, 9] == pytest.approx(1 - 0.5**5)
    assert d[0, 0] == 0.0
