"""ONNX export of the person model (``streamseg export``).

Graph I/O (documented in the metadata JSON written next to the file and in the ONNX metadata):
* inputs  ``images`` float32 [B,3,H,W] RGB in [0,1] (B dynamic, H/W fixed at export),
          ``rois``   float32 [N,5] (batch_index, x1, y1, x2, y2) normalised to [0,1] (N dynamic);
* outputs ``masks``  float32 [N,3,Hm,Wm] 3-class logits (background, target, other person),
          ``binary_masks`` float32 [B,1,H,W] full-frame person probability (softmax of the UNet's
          2 channels, channel 0).
Auxiliary heads are not exported. ImageNet normalisation and the ROI pixel scale are constants in
the graph. BatchNorm is folded into the convolutions before export (ORT would fold it too; this
just makes the file's graph the one we run in PyTorch).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .fuse import optimize_for_inference
from .postprocess import binary_person_prob, dilate_target_logits

log = logging.getLogger(__name__)

INPUT_NAMES = ["images", "rois"]
OUTPUT_NAMES = ["masks", "binary_masks"]
METADATA_KEY = "streamseg"
EXPORT_FORMAT = "streamseg.person_onnx"
EXPORT_FORMAT_VERSION = 1


class ExportWrapper(nn.Module):
    """(images, rois) -> (masks, binary_masks) with optional target dilation; no aux heads."""

    def __init__(self, model: nn.Module, height: int, width: int, dilation: int = 0):
        super().__init__()
        self.model = model
        self.dilation = int(dilation)
        for ra in (model.roi_align_mask, model.roi_align_rgb):
            ra.gather_per_roi = True  # no traced "batch == 1" branch: dynamic batch stays correct
            ra.scale_hw = (float(height), float(width))

    def forward(
        self, images: torch.Tensor, rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images, rois, with_aux=False)
        masks = dilate_target_logits(out["masks"], self.dilation)
        return masks, binary_person_prob(out["full_image_logits"])


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise UserError(
            f"export --height/--width must be positive multiples of 32, got {height}x{width}"
        )


def export_metadata(
    model: nn.Module,
    height: int,
    width: int,
    opset: int,
    dilation: int,
    dynamic_batch: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a consumer needs to feed the graph and read its outputs (also stored in the ONNX)."""
    from .. import __version__

    spec = model.spec
    b = "batch" if dynamic_batch else 1
    hm, wm = spec.mask_size
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "variant": spec.name,
        "encoder": spec.encoder_name,
        "roi_size": list(spec.roi_size),
        "mask_size": list(spec.mask_size),
        "image_size": [int(height), int(width)],
        "dilation": int(dilation),
        "opset": int(opset),
        "precision": "fp32",
        "inputs": {
            "images": {"shape": [b, 3, height, width], "dtype": "float32", "range": "[0,1] RGB"},
            "rois": {
                "shape": ["num_rois", 5],
                "dtype": "float32",
                "layout": "batch_index, x1, y1, x2, y2 normalised to [0,1]",
            },
        },
        "outputs": {
            "masks": {
                "shape": ["num_rois", 3, hm, wm],
                "dtype": "float32",
                "meaning": "3-class logits: 0 background, 1 target person, 2 other person",
            },
            "binary_masks": {
                "shape": [b, 1, height, width],
                "dtype": "float32",
                "meaning": "full-frame person probability",
            },
        },
        "streamseg_version": __version__,
        "torch_version": torch.__version__,
        **(extra or {}),
    }


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    height: int = 640,
    width: int = 640,
    opset: int = 17,
    dynamic_batch: bool = True,
    dilation: int = 0,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as ONNX (TorchScript exporter) plus ``<path>.json`` metadata; returns the path.

    The model itself is not modified (a folded, eval-mode copy is exported).
    """
    import onnx

    _check_size(height, width)
    if dilation < 0:
        raise UserError(f"export --dilation must be >= 0, got {dilation}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    m = optimize_for_inference(copy.deepcopy(model).float().cpu(), fold_bn=True, with_aux=False)
    wrapper = ExportWrapper(m, height, width, dilation).eval()
    images = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    rois = torch.tensor(
        [
            [0, 0.10, 0.20, 0.45, 0.90],
            [1 if dynamic_batch else 0, 0.5, 0.1, 0.9, 0.8],
            [0, 0.0, 0.0, 1.0, 1.0],
        ],
        dtype=torch.float32,
    )
    axes: dict[str, dict[int, str]] = {"rois": {0: "num_rois"}, "masks": {0: "num_rois"}}
    if dynamic_batch:
        axes["images"] = {0: "batch"}
        axes["binary_masks"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints from shapes
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (images, rois),
                str(out),
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    meta = export_metadata(model, height, width, opset, dilation, dynamic_batch, extra_metadata)
    proto = onnx.load(str(out))
    _fix_output_shapes(proto, meta)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name = "streamseg"
    onnx.save(proto, str(out))
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        "exported %s (%s, %dx%d, opset %d, dilation %d)",
        out,
        meta["variant"],
        height,
        width,
        opset,
        dilation,
    )
    return out


def _fix_output_shapes(proto: Any, meta: dict[str, Any]) -> None:
    """Write the documented output shapes into the graph (the tracer's inferred names are garbled)."""
    for vi in proto.graph.output:
        shape = meta["outputs"][vi.name]["shape"]
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for d in shape:
            nd = dims.add()
            if isinstance(d, int):
                nd.dim_value = d
            else:
                nd.dim_param = str(d)


def load_model_for_export(checkpoint: str) -> nn.Module:
    """A checkpoint path (any format load_checkpoint knows) or a variant name (untrained weights)."""
    from . import create_model, list_models, load_checkpoint

    p = Path(checkpoint)
    if p.exists():
        return load_checkpoint(p)
    key = checkpoint.lower().replace("_", "-")
    if key in list_models():
        log.warning(
            "exporting variant '%s' with UNTRAINED random weights (no checkpoint given)", key
        )
        torch.manual_seed(0)
        return create_model(key).eval()
    raise UserError(
        f"export: '{checkpoint}' is neither an existing checkpoint file nor a model name "
        f"({', '.join(list_models())})"
    )


def export_main(args: argparse.Namespace) -> int:
    """``streamseg export CKPT_OR_NAME OUT.onnx [--height --width --opset --int8 --calib-video --calib-frames --dilation]``."""
    height = int(getattr(args, "height", None) or 640)
    width = int(getattr(args, "width", None) or 640)
    opset = int(getattr(args, "opset", None) or 17)
    dilation = int(getattr(args, "dilation", None) or 0)
    int8 = bool(getattr(args, "int8", False))
    calib_video = getattr(args, "calib_video", None)
    calib_frames = int(getattr(args, "calib_frames", None) or 32)
    _check_size(height, width)
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"export output must end in .onnx, got {out}")
    if int8 and not calib_video:
        raise UserError(
            "export --int8 needs --calib-video PATH (frames of real footage for calibration)"
        )
    if int8 and not Path(calib_video).is_file():
        raise UserError(f"export --calib-video: file not found: {calib_video}")
    model = load_model_for_export(str(args.checkpoint))
    extra = {"source": str(args.checkpoint), "untrained": not Path(str(args.checkpoint)).exists()}
    if not int8:
        export_onnx(
            model,
            out,
            height=height,
            width=width,
            opset=opset,
            dilation=dilation,
            extra_metadata=extra,
        )
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0
    from .quantize import quantize_person_model

    fp32 = out.with_name(out.stem + "_fp32.onnx")
    export_onnx(
        model,
        fp32,
        height=height,
        width=width,
        opset=opset,
        dilation=dilation,
        extra_metadata=extra,
    )
    report = quantize_person_model(fp32, out, calib_video, calib_frames=calib_frames)
    meta = json.loads(fp32.with_suffix(".json").read_text())
    meta.update({"precision": "int8", "fp32_model": fp32.name, "int8_quantisation": report})
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"wrote {out} (INT8) and {fp32} (FP32); held-out target-mask IoU INT8 vs FP32 "
        f"{report['mean_target_iou']:.3f}, speed x{report['speedup']:.2f}"
    )
    return 0
