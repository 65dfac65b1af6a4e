"""The person model family: parity with upstream, every checkpoint layout, errors, sampling geometry."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from streamseg.errors import CheckpointError, UserError
from streamseg.models import create_model, get_spec, list_models, load_checkpoint, load_peopleseg_weights, save_checkpoint
from streamseg.models.boxes import boxes_to_rois, plan_resize, prepare_image
from streamseg.models.checkpoints import detect_spec, read_file, to_upstream_checkpoint
from tests._shared import shared_file

UPSTREAM_PARAMS = {  # UPSTREAM.md section 3 (measured on upstream code)
    "b0": 19_995_836, "b1": 22_501_472, "b7": 80_839_696,
    "b0-enhanced": 21_648_312, "b1-enhanced": 24_153_948, "b7-enhanced": 130_056_704,
}


@pytest.fixture(scope="module")
def parity():
    return torch.load(shared_file("fixtures", "upstream_b0_parity.pt"), weights_only=True)


@pytest.fixture(scope="module")
def upstream_ckpt(parity, tmp_path_factory):
    p = tmp_path_factory.mktemp("ckpt") / "best_model.pth"
    torch.save(parity["checkpoint"], p)
    return p


def test_registry_lists_six_variants_with_upstream_parameter_counts():
    assert list_models() == ["b0", "b1", "b7", "b0-enhanced", "b1-enhanced", "b7-enhanced"]
    for name, n in UPSTREAM_PARAMS.items():
        m = create_model(name)
        assert sum(p.numel() for p in m.parameters()) == n, name


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(UserError, match="unknown model 'b3'; allowed: b0, b1, b7"):
        create_model("b3")


def test_parity_with_upstream_outputs(parity, upstream_ckpt):
    model = load_checkpoint(upstream_ckpt)
    assert model.spec.name == "b0" and not model.training
    with torch.inference_mode():
        out = model(parity["inputs"]["images"], parity["inputs"]["rois"])
    for key, ref in parity["outputs"].items():
        assert out[key].shape == ref.shape, key
        assert (out[key] - ref).abs().max().item() <= 1e-4, key
    agree = (out["masks"].argmax(1) == parity["outputs"]["masks"].argmax(1)).float().mean().item()
    assert agree == 1.0
    # the documented border effect: a full-frame ROI's last row/column samples outside the map
    assert out["roi_patches"][3, :, -1, :].abs().max() == 0 and out["roi_patches"][3, :, :, -1].abs().max() == 0


def test_inference_without_aux_heads_gives_same_masks(parity, upstream_ckpt):
    model = load_checkpoint(upstream_ckpt)
    with torch.inference_mode():
        out = model(parity["inputs"]["images"], parity["inputs"]["rois"], with_aux=False)
    assert "contours" not in out and "distance_map" not in out
    assert (out["masks"] - parity["outputs"]["masks"]).abs().max() <= 1e-4  # thread count varies the sums


@pytest.mark.parametrize("variant,name", [("B0", "b0"), ("B1", "b1"), ("B7", "b7"), ("B0_enhanced", "b0-enhanced"),
                                          ("B1_enhanced", "b1-enhanced"), ("B7_enhanced", "b7-enhanced")])
def test_every_upstream_layout_loads_strictly_and_is_detected(variant, name, tmp_path):
    layout = json.loads(shared_file("fixtures", f"upstream_keys_{variant}.json").read_text())["state_dict"]
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(1, dtype=torch.int64) if k.endswith("num_batches_tracked")
              else torch.rand(shape, generator=g)) for k, shape in layout.items()}
    assert detect_spec(sd).name == name
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": None, "scheduler_state_dict": None,
                "best_miou": 0.5, "config": {"model": {"roi_size": (64, 48), "mask_size": (128, 96)}}}, path)
    model = load_checkpoint(path)
    assert model.spec.name == name
    key = "segmentation_head.base_head.fg_gate.0.weight"
    assert torch.equal(model.state_dict()[key], sd[key])
    assert len(model.state_dict()) == len(layout)


def test_roi_and_mask_size_come_from_the_upstream_config(tmp_path):
    m = create_model("b0", roi_size=(80, 60), mask_size=(160, 120))
    ck = to_upstream_checkpoint(m)
    torch.save(ck, tmp_path / "c.pth")
    loaded = load_checkpoint(tmp_path / "c.pth")
    assert loaded.spec.roi_size == (80, 60) and loaded.spec.mask_size == (160, 120)


@pytest.mark.parametrize("roi,mask", [((32, 24), (64, 48)), ((64, 48), (128, 96)), ((80, 60), (160, 120))])
def test_other_upstream_sizes_build_and_run(roi, mask):
    torch.manual_seed(0)
    m = create_model("b0", roi_size=roi, mask_size=mask).eval()
    rois = torch.tensor([[0, 0.1, 0.1, 0.6, 0.9], [0, 0.5, 0.2, 0.9, 0.8]])
    with torch.inference_mode():
        out = m(torch.rand(1, 3, 64, 96), rois)
    assert out["masks"].shape == (2, 3, *mask)
    assert out["roi_patches"].shape == (2, 3, *roi)
    assert out["contours"].shape == (2, 1, *mask)


def test_b7_enhanced_odd_pooled_sizes_run():
    m = create_model("b7-enhanced", roi_size=(80, 60), mask_size=(160, 120)).eval()
    with torch.inference_mode():
        out = m(torch.rand(1, 3, 64, 64), torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]]), with_aux=False)
    assert out["masks"].shape == (1, 3, 160, 120)


def test_batched_frames_match_single_frame_calls(parity, upstream_ckpt):
    model = load_checkpoint(upstream_ckpt)
    img = parity["inputs"]["images"]
    imgs = torch.cat([img, img.flip(-1)])
    rois = parity["inputs"]["rois"][:2]
    rois_b = torch.cat([rois, rois.clone()])
    rois_b[2:, 0] = 1
    with torch.inference_mode():
        both = model(imgs, rois_b, with_aux=False)["masks"]
        first = model(img, rois, with_aux=False)["masks"]
        second = model(img.flip(-1), rois, with_aux=False)["masks"]
    assert (both[:2] - first).abs().max() < 1e-4
    assert (both[2:] - second).abs().max() < 1e-4


def test_freeze_backbone_keeps_unet_bn_in_eval_and_without_grad():
    m = create_model("b0").freeze_backbone()
    m.train()
    unet = m.pretrained_unet.model
    assert not unet.training and all(not p.requires_grad for p in unet.parameters())
    assert m.pretrained_unet.output_conv.weight.requires_grad  # upstream trains output_conv
    assert m.rgb_feature_extractor.training
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == 13_744_367  # UPSTREAM.md section 3


def test_streamseg_format_round_trip(tmp_path, parity, upstream_ckpt):
    model = load_checkpoint(upstream_ckpt)
    path = save_checkpoint(model, tmp_path / "m.pt", extra={"note": "x"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "streamseg.person_model" and raw["format_version"] == 1
    assert raw["spec"]["name"] == "b0" and raw["spec"]["roi_size"] == [64, 48]
    again = load_checkpoint(path)
    with torch.inference_mode():
        out = again(parity["inputs"]["images"], parity["inputs"]["rois"], with_aux=False)
    assert (out["masks"] - parity["outputs"]["masks"]).abs().max() <= 1e-4  # thread count varies the sums


def test_convert_command_writes_streamseg_format(tmp_path, upstream_ckpt):
    from streamseg.models.convert import convert_main

    assert convert_main(str(upstream_ckpt), str(tmp_path / "c.pt")) == 0
    assert torch.load(tmp_path / "c.pt", weights_only=True)["spec"]["name"] == "b0"


# ------------------------------------------------------------------ errors on bad files
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_truncated_file(tmp_path, upstream_ckpt):
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(upstream_ckpt.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="trunc.pth: not a PyTorch checkpoint"):
        load_checkpoint(bad)


def test_text_file(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth: not a PyTorch checkpoint"):
        load_checkpoint(bad)


def test_foreign_checkpoint_names_found_keys(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}}, p)
    with pytest.raises(CheckpointError, match=r"not a person-model checkpoint.*found keys \['conv1.weight', 'fc.bias'\]"):
        load_checkpoint(p)


def test_mismatching_keys_are_listed(tmp_path, parity):
    sd = dict(parity["checkpoint"]["model_state_dict"])
    del sd["feature_combiner.bias"]
    sd["extra.weight"] = torch.zeros(1)
    p = tmp_path / "broken.pth"
    torch.save({"model_state_dict": sd}, p)
    with pytest.raises(CheckpointError, match=r"broken.pth: does not match model b0: 1 missing \(first: feature_combiner.bias\); "
                                               r"1 unexpected \(first: extra.weight\)"):
        load_checkpoint(p)


def test_wrong_variant_requested(upstream_ckpt):
    with pytest.raises(CheckpointError, match="holds a b0 model but b1 was requested"):
        load_checkpoint(upstream_ckpt, name="b1")


# ------------------------------------------------------------------ people-seg UNet files, unpickling
def test_peopleseg_format_sample_reads_without_upstream_code():
    obj = read_file(shared_file("fixtures", "upstream_peopleseg_unet_format_sample.pth"))
    assert "src" not in sys.modules
    sd = obj["model_state_dict"]
    assert len(sd) == 5 and all(k.startswith("unet.") for k in sd)
    cfg = obj["config"]
    model_cfg = cfg["model"] if isinstance(cfg, dict) else cfg.model
    assert "ModelConfig" in repr(model_cfg)  # an inert stub of upstream's dataclass, with its fields
    assert hasattr(model_cfg, "__dict__") and len(vars(model_cfg)) > 3


def _write_foreign_peopleseg_file(path, unet_sd):
    mod = types.ModuleType("fakeupstream_cfg")

    class ModelConfig:  # stands in for upstream's dataclass; its module is gone when loading
        def __init__(self):
            self.encoder = "timm-efficientnet-b0"

    ModelConfig.__module__ = "fakeupstream_cfg"
    ModelConfig.__qualname__ = "ModelConfig"
    mod.ModelConfig = ModelConfig
    sys.modules["fakeupstream_cfg"] = mod
    try:
        torch.save({"epoch": 5, "model_state_dict": {"unet." + k: v for k, v in unet_sd.items()},
                    "best_iou": 0.87, "config": {"model": ModelConfig()}}, path)
    finally:
        del sys.modules["fakeupstream_cfg"]


def test_peopleseg_file_initialises_the_unet(tmp_path):
    torch.manual_seed(1)
    src = create_model("b0")
    path = tmp_path / "best_model_b0_0.8741.pth"
    _write_foreign_peopleseg_file(path, src.pretrained_unet.model.model.state_dict())
    dst = create_model("b0")
    load_peopleseg_weights(dst, path)
    a, b = src.pretrained_unet.model.model.state_dict(), dst.pretrained_unet.model.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole = load_checkpoint(path)  # also accepted on its own: UNet loaded, head random
    assert whole.checkpoint_kind == "peopleseg" and whole.spec.name == "b0"
    with pytest.raises(CheckpointError, match="people-seg UNet is b0 but the model uses b1"):
        load_peopleseg_weights(create_model("b1"), path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    p = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "config": evil}, p)
    with pytest.raises(CheckpointError, match=r"evil.pth: refusing to load global (os|posix)\.system"):
        load_checkpoint(p)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_eval(tmp_path):
    p = tmp_path / "evil2.pth"
    payload = b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x001+1 and 0q\x00\x85q\x01Rq\x02."
    p.write_bytes(payload)
    with pytest.raises(CheckpointError, match="refusing to load global builtins.eval"):
        load_checkpoint(p)


# ------------------------------------------------------------------ boxes and sampling geometry
def _pattern(h=240, w=320):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 / w), (y * 255 / h), ((x // 20 + y // 20) % 2) * 200.0], -1)
    img[100:160, 150:210] = (250, 10, 10)  # a red square the box frames
    return img.astype(np.uint8)


def _crop_reference(img, box, out_hw):
    """Corner-inclusive bilinear samples of the ORIGINAL frame inside the box."""
    import cv2

    h, w = out_hw
    xs = np.linspace(box[0], box[2], w, dtype=np.float32)
    ys = np.linspace(box[1], box[3], h, dtype=np.float32)
    mx, my = np.meshgrid(xs, ys)
    return cv2.remap(img.astype(np.float32) / 255, mx, my, cv2.INTER_LINEAR).transpose(2, 0, 1)


@pytest.mark.parametrize("input_hw,mode", [((256, 320), "letterbox"), ((480, 640), "letterbox"), ((320, 320), "stretch")])
def test_pixel_box_crops_the_same_pattern_at_any_input_size(input_hw, mode):
    from streamseg.models.roi_align import GridRoIAlign

    img = _pattern()
    box = np.array([[140.0, 90.0, 220.0, 170.0]])
    rs = plan_resize(img.shape[:2], input_hw, mode)
    x = torch.from_numpy(prepare_image(img, rs))[None]
    rois = torch.from_numpy(boxes_to_rois(box, rs))
    patch = GridRoIAlign((64, 48))(x, rois)[0].numpy()
    ref = _crop_reference(img, box[0], (64, 48))
    assert np.abs(patch - ref).mean() < 0.03
    # the red square fills the centre of the crop
    assert patch[0, 20:44, 14:34].mean() > 0.9 and patch[1, 20:44, 14:34].mean() < 0.1
    shifted = torch.from_numpy(boxes_to_rois(box + 40, rs))
    assert np.abs(GridRoIAlign((64, 48))(x, shifted)[0].numpy() - ref).mean() > 0.1


def test_letterbox_plan_and_image():
    rs = plan_resize((576, 768), (640, 640), "letterbox")
    assert rs.content_hw == (480, 640) and (rs.pad_x, rs.pad_y) == (0, 80)
    img = np.full((576, 768, 3), 255, np.uint8)
    t = prepare_image(img, rs)
    assert t.shape == (3, 640, 640) and t[:, :80].max() == 0 and t[:, 80:560].min() == 1.0
    rois = boxes_to_rois(np.array([[0, 0, 768, 576]]), rs)
    np.testing.assert_allclose(rois[0], [0, 0, 80 / 640, 1, 560 / 640], atol=1e-6)


def test_stretch_to_640_reproduces_upstream_inputs(parity):
    frame_bgr = parity["inputs"]["source_frame_bgr_uint8"].numpy()
    rgb = frame_bgr[..., ::-1].copy()
    rs = plan_resize(rgb.shape[:2], (640, 640), "stretch")
    x = prepare_image(rgb, rs)
    assert np.array_equal(x, parity["inputs"]["images"][0].numpy())
    boxes = np.array(parity["meta"]["boxes_px_in_source_frame_xyxy"], np.float64)[:3]
    np.testing.assert_allclose(boxes_to_rois(boxes, rs)[:, 1:], parity["inputs"]["rois"][:3, 1:].numpy(), atol=1e-6)


# ------------------------------------------------------------------ weights resolution
def test_weights_resolution(tmp_path, monkeypatch, upstream_ckpt):
    from streamseg.models.weights import resolve_weights, sha256_of

    assert resolve_weights("untrained") is None
    assert resolve_weights(str(upstream_ckpt)) == upstream_ckpt
    with pytest.raises(CheckpointError, match="'nosuch' is neither an existing file nor a registry name"):
        resolve_weights("nosuch")
    reg = tmp_path / "reg.yaml"
    digest = sha256_of(upstream_ckpt)
    reg.write_text(f"local-b0:\n  url: {upstream_ckpt.as_uri()}\n  sha256: {digest}\n"
                   f"bad-sum:\n  url: {upstream_ckpt.as_uri()}\n  sha256: '{'0' * 64}'\n  filename: other.pth\n"
                   "offline:\n  url: http://127.0.0.1:9/w.pth\n")
    monkeypatch.setenv("STREAMSEG_WEIGHTS_REGISTRY", str(reg))
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path / "cache"))
    got = resolve_weights("local-b0")
    assert got == tmp_path / "cache" / "weights" / "best_model.pth" and sha256_of(got) == digest
    with pytest.raises(CheckpointError, match="sha256 does not match registry entry 'bad-sum'"):
        resolve_weights("bad-sum")
    with pytest.raises(CheckpointError, match=r"cannot download 'offline' from http://127.0.0.1:9/w.pth .*put it at .*w.pth"):
        resolve_weights("offline", timeout_s=3)
