"""ONNX export, the ORT backend (our graphs and upstream-style graphs), INT8 quantisation, dilation."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from streamseg.bench.model import bench_inputs, make_outputs_informative
from streamseg.errors import CheckpointError, UserError
from streamseg.models import create_model, save_checkpoint
from streamseg.models.onnx_export import ExportWrapper, export_main
from streamseg.models.ort_backend import OrtPersonModel
from streamseg.models.postprocess import dilate_target_logits

H, W = 128, 160  # not square: catches swapped height/width
ROI, MASK = (32, 24), (64, 48)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    m = create_model("b0", roi_size=ROI, mask_size=MASK).eval()
    make_outputs_informative(m, *bench_inputs(H, W, 3))
    return m


@pytest.fixture(scope="module")
def ckpt_path(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "small.pt")


@pytest.fixture(scope="module")
def onnx_path(ckpt_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported through the CLI entry point, from a checkpoint in streamseg's format."""
    ckpt = ckpt_path
    out = tmp_path_factory.mktemp("onnx") / "b0_small.onnx"
    assert export_main(_ns(checkpoint=str(ckpt), output=str(out))) == 0
    return out


@pytest.fixture(scope="module")
def session(onnx_path: Path) -> OrtPersonModel:
    return OrtPersonModel(onnx_path, threads=2)


def _rois(n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.6
    wh = 0.15 + 0.25 * torch.rand(n, 2, generator=g)
    b = torch.arange(n, dtype=torch.float32).remainder(batch)[:, None]
    return torch.cat([b, xy, (xy + wh).clamp(max=1.0)], dim=1)


@pytest.mark.parametrize("n_rois", [1, 5])
def test_onnx_round_trip_matches_pytorch(
    model: nn.Module, session: OrtPersonModel, n_rois: int
) -> None:
    images = torch.cat([bench_inputs(H, W, 1, seed=s)[0] for s in (4, 5)])  # batch of 2 frames
    rois = _rois(n_rois, 2, seed=n_rois)
    with torch.inference_mode():
        ref = model(images, rois, with_aux=False)
    ort_model = session
    out = ort_model(images.numpy(), rois.numpy())
    assert ort_model.flavour == "streamseg" and ort_model.has_logits
    assert ort_model.input_hw == (H, W) and ort_model.mask_hw == MASK
    assert out["masks"].shape == (n_rois, 3, *MASK)
    assert out["binary_masks"].shape == (2, 1, H, W)
    assert np.abs(out["masks"] - ref["masks"].numpy()).max() < 1e-3
    want_bin = torch.softmax(ref["full_image_logits"], 1)[:, :1].numpy()
    assert np.abs(out["binary_masks"] - want_bin).max() < 1e-3
    assert (out["masks"].argmax(1) == ref["masks"].numpy().argmax(1)).mean() >= 0.999


def test_onnx_graph_io_and_metadata(onnx_path: Path) -> None:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    ins = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in proto.graph.input
    }
    outs = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in proto.graph.output
    }
    assert ins == {"images": ["batch", 3, H, W], "rois": ["num_rois", 5]}
    assert outs == {"masks": ["num_rois", 3, *MASK], "binary_masks": ["batch", 1, H, W]}
    side = json.loads(onnx_path.with_suffix(".json").read_text())
    assert (
        side["variant"] == "b0"
        and side["roi_size"] == list(ROI)
        and side["mask_size"] == list(MASK)
    )
    assert side["image_size"] == [H, W] and side["dilation"] == 0 and side["opset"] == 17
    assert side["untrained"] is False and side["source"].endswith("small.pt")
    embedded = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(embedded["streamseg"])["variant"] == "b0"


def test_zero_rois_gives_empty_masks(session: OrtPersonModel) -> None:
    out = session(bench_inputs(H, W, 1)[0].numpy(), np.zeros((0, 5), np.float32))
    assert out["masks"].shape == (0, 3, *MASK) and out["binary_masks"].shape == (1, 1, H, W)


def test_legacy_flavour_without_metadata(onnx_path: Path, tmp_path: Path) -> None:
    """Older upstream exports: output ``masks`` (3-class logits), no streamseg metadata."""
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    legacy = tmp_path / "legacy.onnx"
    onnx.save(proto, str(legacy))
    m = OrtPersonModel(legacy)
    assert m.flavour == "upstream-legacy" and m.has_logits and m.mask_hw == MASK


class UpstreamStyle(nn.Module):
    """Stands in for upstream's HEAD export file (we cannot run upstream's exporter here): same
    input names, output names and semantics: ``instance_masks`` = (argmax == target) as float,
    ``binary_masks`` = softmax channel 0; with dilation 1 baked in like the released "dil1" files."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = ExportWrapper(model, H, W, dilation=1)

    def forward(
        self, images: torch.Tensor, rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, binary = self.inner(images, rois)
        return (masks.argmax(1, keepdim=True) == 1).float(), binary


def test_upstream_style_export_runs_through_backend(model: nn.Module, tmp_path: Path) -> None:
    import copy

    path = tmp_path / "best_model_b0_r32x24m64x48_dil1.onnx"
    wrapper = UpstreamStyle(copy.deepcopy(model)).eval()
    images, rois = bench_inputs(H, W, 3, seed=9)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (images, rois),
            str(path),
            input_names=["images", "rois"],
            output_names=["instance_masks", "binary_masks"],
            opset_version=16,
            dynamo=False,
            dynamic_axes={
                "images": {0: "batch_size"},
                "rois": {0: "num_rois"},
                "instance_masks": {0: "num_rois"},
                "binary_masks": {0: "batch_size"},
            },
        )
    m = OrtPersonModel(path)
    assert m.flavour == "upstream" and not m.has_logits
    assert m.input_hw == (H, W) and m.mask_hw == MASK
    out = m(images.numpy(), rois.numpy())
    with torch.inference_mode():
        ref = dilate_target_logits(model(images, rois, with_aux=False)["masks"], 1)
    want = (ref.argmax(1, keepdim=True) == 1).float().numpy()
    assert out["instance_masks"].shape == (3, 1, *MASK)
    assert (out["instance_masks"] == want).mean() >= 0.999
    assert 0 < want.sum() < want.size  # the comparison is not trivially all-0 / all-1
    # synthesised logits give the instance back through argmax
    assert np.array_equal(out["masks"].argmax(1)[:, None] == 1, out["instance_masks"] > 0.5)
    assert np.array_equal(out["target_prob"], out["instance_masks"][:, 0])
    assert out["binary_masks"].shape == (1, 1, H, W)


def test_dilation_grows_target_only() -> None:
    masks = torch.full((1, 3, 20, 20), -2.0)
    masks[:, 0] = 2.0
    masks[:, 1, 8:12, 8:12] = 5.0  # a 4x4 target blob
    out = dilate_target_logits(masks, 1)
    assert torch.equal(dilate_target_logits(masks, 0), masks)
    assert torch.equal(out[:, [0, 2]], masks[:, [0, 2]])
    grown = out[0, 1] - masks[0, 1]
    assert set(grown.unique().tolist()) == {0.0, 2.0}
    # the +2 ring is exactly the 1-pixel border around the blob
    ring = torch.zeros(20, 20, dtype=torch.bool)
    ring[7:13, 7:13] = True
    ring[8:12, 8:12] = False
    assert torch.equal(grown == 2.0, ring)
    with pytest.raises(ValueError):
        dilate_target_logits(masks, -1)


def test_int8_export_on_footage(ckpt_path: Path, tmp_path: Path) -> None:
    """``streamseg export CKPT OUT.onnx --int8 --calib-video vtest.avi``: INT8 at OUT, FP32 beside it."""
    from _shared import shared_file

    video = shared_file("data", "vtest.avi")
    int8 = tmp_path / "b0_small_int8.onnx"
    assert (
        export_main(
            _ns(
                checkpoint=str(ckpt_path),
                output=str(int8),
                int8=True,
                calib_video=str(video),
                calib_frames=2,
            )
        )
        == 0
    )
    fp32 = tmp_path / "b0_small_int8_fp32.onnx"
    assert int8.is_file() and fp32.is_file()
    assert int8.stat().st_size < fp32.stat().st_size / 2
    meta = json.loads(int8.with_suffix(".json").read_text())
    report = meta["int8_quantisation"]
    assert meta["precision"] == "int8" and meta["fp32_model"] == fp32.name
    assert 0.0 <= report["mean_target_iou"] <= 1.0 and report["rois"] >= 1 and report["frames"] == 8
    assert report["calib_frames"] == 2 and report["speedup"] > 0
    assert (
        json.loads(int8.with_suffix(".quant.json").read_text())["mean_target_iou"]
        == report["mean_target_iou"]
    )
    q = OrtPersonModel(int8)
    assert q.flavour == "streamseg"  # metadata carried over into the quantised graph
    out = q(bench_inputs(H, W, 1)[0].numpy(), _rois(2, 1, 3).numpy())
    assert out["masks"].shape == (2, 3, *MASK) and np.isfinite(out["masks"]).all()
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)


def test_target_iou_counts_pixels() -> None:
    from streamseg.models.quantize import target_iou

    a = np.zeros((2, 3, 4, 4), np.float32)
    b = np.zeros((2, 3, 4, 4), np.float32)
    a[0, 1, :2] = 1.0  # ROI 0: target on 8 pixels in a, 4 of them in b -> IoU 0.5
    b[0, 1, :1] = 1.0
    # ROI 1: no target anywhere -> defined as 1.0
    np.testing.assert_allclose(target_iou(a, b), [0.5, 1.0])


def _ns(**kw: object) -> argparse.Namespace:
    base = {
        "height": H,
        "width": W,
        "opset": 17,
        "int8": False,
        "calib_video": None,
        "calib_frames": 2,
        "dilation": 0,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_export_main_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="neither an existing checkpoint file nor a model name"):
        export_main(_ns(checkpoint="no_such_model", output=str(tmp_path / "x.onnx")))
    with pytest.raises(UserError, match="must end in .onnx"):
        export_main(_ns(checkpoint="b0", output=str(tmp_path / "x.pt")))
    with pytest.raises(UserError, match="--int8 needs --calib-video"):
        export_main(_ns(checkpoint="b0", output=str(tmp_path / "x.onnx"), int8=True))
    with pytest.raises(UserError, match="multiples of 32"):
        export_main(_ns(checkpoint="b0", output=str(tmp_path / "x.onnx"), height=100))
    with pytest.raises(CheckpointError, match="not found"):
        OrtPersonModel(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OrtPersonModel(bad)
