"""Winograd 3x3 convolutions: exact transforms, conv-equal outputs, fusions, fallback, model parity."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import streamseg.models.winograd as W
from streamseg.models import load_checkpoint
from streamseg.models.fuse import optimize_for_inference
from streamseg.pipeline import winograd_tile

from tests._shared import shared_file

needs_kernel = pytest.mark.skipif(not W.kernel_available(), reason="no C compiler for the Winograd kernel")


@pytest.mark.parametrize("m", [2, 4])
def test_transform_matrices_compute_the_correlation(m: int) -> None:
    bt, g, at = W.winograd_matrices(m)
    assert bt.shape == (m + 2, m + 2) and g.shape == (m + 2, 3) and at.shape == (m, m + 2)
    gen = torch.Generator().manual_seed(m)
    for _ in range(5):
        d = torch.randn(m + 2, dtype=torch.float64, generator=gen)
        k = torch.randn(3, dtype=torch.float64, generator=gen)
        want = torch.stack([(k * d[i : i + 3]).sum() for i in range(m)])
        assert torch.allclose(at @ ((g @ k) * (bt @ d)), want, atol=1e-12)


def _conv(cin: int, cout: int, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, padding=1).eval()
    return conv.to(memory_format=torch.channels_last)


@needs_kernel
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", [(2, 64, 96, 13, 10), (1, 128, 128, 16, 12), (3, 64, 64, 7, 9)])
def test_winograd_conv_equals_direct_conv(tile: int, shape: tuple[int, ...]) -> None:
    n, cin, cout, h, w = shape
    conv = _conv(cin, cout)
    x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    with torch.inference_mode():
        y = W.WinogradConv2d(conv, tile)(x)
        direct = conv(x)
    assert y.shape == (n, cout, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    err = (y.double() - exact).abs().max().item()
    direct_err = (direct.double() - exact).abs().max().item()
    # F(2x2) about as exact as direct convolution, F(4x4) within ~20x of it; both far below 1e-4
    assert err < 1e-4
    assert err < (4 if tile == 2 else 40) * max(direct_err, 1e-7)


@needs_kernel
@pytest.mark.parametrize("tile", [2, 4])
def test_fused_residual_and_relu(tile: int) -> None:
    conv = _conv(64, 64, seed=1)
    x = torch.randn(2, 64, 12, 20).contiguous(memory_format=torch.channels_last)
    res = torch.randn(2, 64, 12, 20)  # NCHW on purpose: the layer makes it channels_last itself
    layer = W.WinogradConv2d(conv, tile, relu=True)
    with torch.no_grad():  # not inference_mode: the pooled buffers must be writable here too
        y = layer(x, residual=res)
        want = torch.relu(conv(x) + res)
    assert (y == 0).float().mean() > 0.2  # the ReLU really clipped something
    torch.testing.assert_close(y, want, atol=1e-4, rtol=1e-4)


@needs_kernel
def test_pooled_outputs_are_never_overwritten_while_held() -> None:
    conv = _conv(64, 64, seed=2)
    layer = W.WinogradConv2d(conv, 4)
    a = torch.randn(1, 64, 16, 16).contiguous(memory_format=torch.channels_last)
    b = torch.randn(1, 64, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ya = layer(a)
        keep = ya.clone()
        yb = layer(b)
        assert ya.data_ptr() != yb.data_ptr()
        assert torch.equal(ya, keep)
        del ya
        yc = layer(b)  # the first buffer is free again and may be reused; values are b's
        torch.testing.assert_close(yc, yb)


@needs_kernel
def test_gradients_fall_back_to_direct_convolution() -> None:
    conv = _conv(64, 64, seed=3)
    layer = W.WinogradConv2d(conv, 4)
    x = torch.randn(1, 64, 8, 8, requires_grad=True)
    y = layer(x)
    assert y.requires_grad
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    torch.testing.assert_close(y, conv(x), atol=0, rtol=0)


def test_without_a_compiler_it_warns_once_and_uses_direct_convolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(W, "_lib", None)
    monkeypatch.setattr(W, "_lib_error", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="streamseg.models.winograd"):
        assert W.load_kernel() is None
        assert W.load_kernel() is None
    warnings = [r.getMessage() for r in caplog.records if "Winograd kernel unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-cc" in warnings[0]
    assert winograd_tile(types.SimpleNamespace(winograd="auto", device="cpu", precision="fp32")) is None
    conv = _conv(64, 64, seed=4)
    x = torch.randn(1, 64, 10, 10)
    with torch.inference_mode():
        torch.testing.assert_close(W.WinogradConv2d(conv, 4, relu=True)(x), torch.relu(conv(x)), atol=0, rtol=0)


@needs_kernel
def test_kernel_is_built_once_per_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path))
    first = W.build_kernel()
    stamp = first.stat().st_mtime_ns
    again = W.build_kernel()
    assert first == again and again.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "kernels" and first.suffix == ".so"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp files left behind


def test_winograd_choice_follows_runtime_settings() -> None:
    def rt(**kw: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(**{"winograd": "auto", "device": "cpu", "precision": "fp32", **kw})

    assert winograd_tile(rt(winograd="off")) is None
    assert winograd_tile(rt(precision="bf16")) is None
    assert winograd_tile(rt(device="cuda:0")) is None
    if W.kernel_available():
        assert winograd_tile(rt()) == 4
        assert winograd_tile(rt(winograd="f2")) == 2
        assert winograd_tile(rt(winograd="f4")) == 4
        assert winograd_tile(rt(precision="fp16")) == 4  # fp16 runs as fp32 on a CPU


@needs_kernel
@pytest.mark.parametrize("tile", [2, 4])
def test_b0_fast_path_reproduces_the_upstream_outputs(tile: int, tmp_path: Path) -> None:
    fx = torch.load(shared_file("fixtures", "upstream_b0_parity.pt"), weights_only=True)
    ckpt = tmp_path / "best_model.pth"
    torch.save(fx["checkpoint"], ckpt)
    model = load_checkpoint(ckpt)
    fast = optimize_for_inference(model, fold_bn=True, channels_last=True, with_aux=False, winograd=tile)
    replaced = [m for m in fast.modules() if isinstance(m, W.WinogradConv2d)]
    fused = [m for m in fast.modules() if isinstance(m, W.FusedResBlock)]
    assert len(replaced) >= 40 and len(fused) >= 15
    assert fast.inference_optimized["winograd"] == tile
    with torch.inference_mode():
        out = fast(fx["inputs"]["images"], fx["inputs"]["rois"])
    want = fx["outputs"]
    for key in ("masks", "bg_fg_logits", "target_nontarget_logits"):
        # measured 6e-5 (F2) / 1e-4 (F4) here, BN folding included; the fixture suggests 5e-3
        assert (out[key] - want[key]).abs().max().item() < 3e-4, key
    agree = (out["masks"].argmax(1) == want["masks"].argmax(1)).float().mean().item()
    assert agree >= 0.9999
    # the original model is untouched (still the exact path)
    assert not any(isinstance(m, W.WinogradConv2d) for m in model.modules())
    with torch.inference_mode():
        plain = model(fx["inputs"]["images"], fx["inputs"]["rois"])["masks"]
    assert (plain - want["masks"]).abs().max().item() < 1e-4


@pytest.mark.parametrize("relu", [False, True])
def test_gemm_transposed_conv_equals_conv_transpose2d(relu: bool) -> None:
    torch.manual_seed(5)
    deconv = nn.ConvTranspose2d(96, 40, 2, stride=2).eval()
    layer = W.GemmConvTranspose2x2(deconv, relu=relu)
    x = torch.randn(3, 96, 7, 5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = layer(x)
        want = deconv(x)
    want = torch.relu(want) if relu else want
    assert y.shape == (3, 40, 14, 10)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2x2 stride-2"):
        W.GemmConvTranspose2x2(nn.ConvTranspose2d(8, 8, 3, stride=2))


@needs_kernel
def test_output_pool_stays_within_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "POOL_BYTES", 3 * 64 * 8 * 8 * 4)  # room for three 1x64x8x8 outputs
    monkeypatch.setattr(W._local, "outputs", W.OrderedDict(), raising=False)
    layer = W.WinogradConv2d(_conv(64, 64, seed=6), 4)
    with torch.inference_mode():
        for w in (8, 16, 24, 32):  # four shapes, each bigger than the last
            layer(torch.randn(1, 64, 8, w))
    pools = W._local.outputs
    kept = sum(b.numel() * 4 for bufs in pools.values() for b in bufs)
    assert kept <= W.POOL_BYTES or len(pools) == 1
    assert list(pools)[-1] == (1, 8, 32, 64)  # the newest shape is kept


@needs_kernel
@pytest.mark.parametrize("tile", [2, 4])
def test_chunked_tiles_give_the_same_output(tile: int, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = _conv(64, 64, seed=7)
    layer = W.WinogradConv2d(conv, tile, relu=True)
    x = torch.randn(3, 64, 11, 14).contiguous(memory_format=torch.channels_last)
    res = torch.randn(3, 64, 11, 14).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = layer(x, residual=res).clone()
        # 7 tiles per chunk: chunks cut through rows and images; the workspace shrinks to match
        monkeypatch.setattr(W, "CHUNK_BYTES", 7 * (tile + 2) ** 2 * 64 * 4)
        monkeypatch.setattr(W._local, "bufs", {}, raising=False)
        chunked = layer(x, residual=res)
    assert W._local.bufs["v"].numel() == 7 * (tile + 2) ** 2 * 64
    # same transforms; only the GEMM's blocking (and so its summation order) may differ
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
