"""ONNX Runtime backend for exported person models: ours and upstream-style exports.

Flavours, detected from the graph's output names (and our metadata entry):
* ``streamseg``       our export: ``masks`` [N,3,Hm,Wm] logits + ``binary_masks`` [B,1,H,W];
* ``upstream``        upstream's HEAD exporter: ``instance_masks`` [N,1,Hm,Wm] (1.0 where the
                      argmax is the target class) + ``binary_masks``. There are no logits in such a
                      file, so ``masks`` is SYNTHESISED: target logit +8 inside the instance and -8
                      outside, background and other-person logits 0 (argmax and softmax then give the
                      instance back; probabilities are 0.9997/0.0002, not real scores).
                      ``target_prob`` [N,Hm,Wm] (= instance_masks without the channel) and
                      ``instance_masks`` itself are returned as well;
* ``upstream-legacy`` older upstream exports whose first output is ``masks`` [N,3,Hm,Wm] logits
                      (same meaning as ours) without our metadata.
Every flavour takes ``images`` float32 [B,3,H,W] RGB in [0,1] and ``rois`` float32 [N,5]
(batch_index, x1, y1, x2, y2) normalised to [0,1]; H and W are fixed by the file (``input_hw``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

log = logging.getLogger(__name__)

SYNTH_LOGIT = 8.0


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


class OrtPersonModel:
    """Run an exported person model with ONNX Runtime: ``model(images, rois) -> dict of arrays``."""

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, threads: int | None = None
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: ONNX model file not found")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), so, providers=providers or default_providers()
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{self.path}: not a loadable ONNX model ({first})") from None
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if set(ins) != {"images", "rois"}:
            raise CheckpointError(
                f"{self.path}: expected ONNX inputs 'images' and 'rois', found {sorted(ins)}"
            )
        raw = self.session.get_modelmeta().custom_metadata_map.get("streamseg")
        self.metadata: dict[str, Any] = json.loads(raw) if raw else {}
        if "instance_masks" in outs:
            self.flavour = "upstream"
        elif "masks" in outs:
            self.flavour = "streamseg" if self.metadata else "upstream-legacy"
        else:
            raise CheckpointError(
                f"{self.path}: expected an output 'masks' or 'instance_masks', found {sorted(outs)}"
            )
        self.has_logits = self.flavour != "upstream"
        self._mask_name = "instance_masks" if self.flavour == "upstream" else "masks"
        self._outputs = [self._mask_name] + (["binary_masks"] if "binary_masks" in outs else [])
        shape = ins["images"].shape
        self.input_hw: tuple[int, int] = self._static_hw(shape[2:], "image_size")
        self.mask_hw: tuple[int, int] = self._static_hw(
            outs[self._mask_name].shape[2:], "mask_size"
        )
        self.fixed_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        log.debug(
            "%s: %s export, input %s, mask %s", self.path, self.flavour, self.input_hw, self.mask_hw
        )

    def _static_hw(self, dims: list[Any], meta_key: str) -> tuple[int, int]:
        if len(dims) == 2 and all(isinstance(d, int) for d in dims):
            return int(dims[0]), int(dims[1])
        if meta_key in self.metadata:
            h, w = self.metadata[meta_key]
            return int(h), int(w)
        side = self.path.with_suffix(".json")
        if side.is_file():
            h, w = json.loads(side.read_text())[meta_key]
            return int(h), int(w)
        raise CheckpointError(f"{self.path}: cannot tell {meta_key} (dynamic dims and no metadata)")

    def __call__(self, images: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        """images float32 [B,3,H,W] in [0,1]; rois float32 [N,5] normalised. N may be 0."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        rois = np.ascontiguousarray(rois, dtype=np.float32).reshape(-1, 5)
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.input_hw:
            raise ValueError(
                f"images must be [B,3,{self.input_hw[0]},{self.input_hw[1]}], got {images.shape}"
            )
        n = rois.shape[0]
        feed_rois = (
            rois if n else np.array([[0, 0, 0, 1, 1]], dtype=np.float32)
        )  # graphs dislike N=0
        res = dict(
            zip(
                self._outputs,
                self.session.run(self._outputs, {"images": images, "rois": feed_rois}),
            )
        )
        mask = res[self._mask_name][:n]
        out: dict[str, np.ndarray] = {}
        if self.flavour == "upstream":
            inst = mask.astype(np.float32)
            out["target_prob"] = inst[:, 0]
            logits = np.zeros((n, 3, *mask.shape[2:]), dtype=np.float32)
            logits[:, 1:2] = np.where(inst > 0.5, SYNTH_LOGIT, -SYNTH_LOGIT)
            out["masks"] = logits
            out["instance_masks"] = inst
        else:
            out["masks"] = mask
        if "binary_masks" in res:
            out["binary_masks"] = res["binary_masks"]
        return out
