"""Load and save person-model weights in every format users have.

Recognised by content (never by file name):
* upstream training checkpoints (``epoch``, ``model_state_dict``, ...; train_advanced.py), or a bare
  upstream state dict: variant detected from tensor shapes, loaded strictly (dead encoder keys too);
* upstream people-seg UNet files (``unet.`` + smp keys; pickled foreign config -> restricted unpickler);
* streamseg's own format: ``{"format": "streamseg.person_model", "format_version", "spec", "state_dict", "meta"}``,
  loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from . import safe_pickle
from .hierarchical import HierarchicalUNetV2
from .registry import ModelSpec, get_spec

log = logging.getLogger(__name__)

FORMAT_NAME = "streamseg.person_model"
FORMAT_VERSION = 1
UNET_PREFIX = "pretrained_unet.model.model."
_ENCODER_BY_STEM_AND_BLOCKS = {(32, 16): "b0", (32, 23): "b1", (64, 55): "b7"}


# ----------------------------------------------------------------------------- reading files
def read_file(path: str | Path) -> Any:
    """torch.load with weights_only; fall back to the restricted unpickler for foreign classes."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint file not found")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, expected a .pth/.pt checkpoint file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - classify below
        if not zipfile.is_zipfile(p) and not _looks_like_legacy_pickle(p):
            raise CheckpointError(f"{p}: not a PyTorch checkpoint (truncated or foreign file: {_short(first)})") from None
        if "Unsupported global" not in str(first) and "weights_only" not in str(first):
            raise CheckpointError(f"{p}: cannot read checkpoint ({_short(first)})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False, pickle_module=safe_pickle)
    except safe_pickle.UnsafePickleError as e:
        raise CheckpointError(f"{p}: {e}; the file may execute code when loaded and was not loaded") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{p}: cannot read checkpoint ({_short(e)})") from None
    if safe_pickle.Unpickler.stubbed:
        log.debug("%s: foreign classes replaced by inert stubs: %s", p, sorted(set(safe_pickle.Unpickler.stubbed)))
        safe_pickle.Unpickler.stubbed = []
    return obj


def _looks_like_legacy_pickle(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


# ----------------------------------------------------------------------------- classification
def extract_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, kind) where kind is 'streamseg', 'upstream', 'peopleseg' or 'unknown'."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        return dict(obj["state_dict"]), "streamseg"
    sd: Any = obj
    if isinstance(obj, Mapping):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                sd = obj[key]
                break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) for k in sd):
        return {}, "unknown"
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    if any(k.startswith("pretrained_unet.") for k in sd):
        return sd, "upstream"
    if any(k.startswith(("unet.encoder.", "model.encoder.", "encoder.conv_stem")) for k in sd):
        return sd, "peopleseg"
    return sd, "unknown"


def detect_spec(state_dict: Mapping[str, torch.Tensor], roi_size=None, mask_size=None) -> ModelSpec:
    """Variant from tensor shapes: encoder stem width and block count, head base channels and depth."""
    enc = _detect_encoder(state_dict, UNET_PREFIX + "encoder.")
    w = state_dict.get("segmentation_head.base_head.bg_vs_fg_unet.encoders.0.0.weight")
    if w is None:
        raise CheckpointError("no hierarchical head found (missing segmentation_head.base_head.bg_vs_fg_unet.encoders.0.0.weight)")
    base = int(w.shape[0])
    depth = len({m.group(1) for k in state_dict
                 if (m := re.match(r"segmentation_head\.base_head\.bg_vs_fg_unet\.encoders\.(\d+)\.", k))})
    name = {(64, 3): enc, (72, 3): f"{enc}-enhanced", (96, 4): f"{enc}-enhanced"}.get((base, depth))
    if name is None or (base, depth, enc) in {(96, 4, "b0"), (96, 4, "b1"), (72, 3, "b7")}:
        raise CheckpointError(f"unknown head layout: encoder {enc}, base channels {base}, depth {depth}")
    return get_spec(name, roi_size=roi_size, mask_size=mask_size)


def _detect_encoder(sd: Mapping[str, torch.Tensor], prefix: str) -> str:
    stem = sd.get(prefix + "conv_stem.weight")
    if stem is None:
        raise CheckpointError(f"no EfficientNet encoder found (missing {prefix}conv_stem.weight)")
    blocks = {m.group(1) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+\.\d+)\.", k))}
    key = (int(stem.shape[0]), len(blocks))
    if key not in _ENCODER_BY_STEM_AND_BLOCKS:
        raise CheckpointError(f"unknown EfficientNet encoder: stem width {key[0]}, {key[1]} blocks (expected B0, B1 or B7)")
    return _ENCODER_BY_STEM_AND_BLOCKS[key]


def _sizes_from_upstream_config(obj: Any) -> tuple[Any, Any]:
    cfg = obj.get("config") if isinstance(obj, Mapping) else None
    model_cfg = cfg.get("model") if isinstance(cfg, Mapping) else None
    if isinstance(model_cfg, Mapping):
        return model_cfg.get("roi_size"), model_cfg.get("mask_size")
    return None, None


# ----------------------------------------------------------------------------- loading
def load_state_dict_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with one clear error listing the first mismatching keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} shape mismatches (first: {'; '.join(shape[:2])})")
        spec = getattr(model, "spec", None)
        raise CheckpointError(f"{source}: does not match model {getattr(spec, 'name', '?')}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def load_checkpoint(path: str | Path, *, name: str | None = None, roi_size=None, mask_size=None,
                    map_location: str | torch.device = "cpu") -> HierarchicalUNetV2:
    """Build the right variant for a weights file and load it; returns the model in eval mode."""
    obj = read_file(path)
    sd, kind = extract_state_dict(obj)
    if kind == "unknown":
        first = list(sd)[:3] if sd else (list(obj)[:5] if isinstance(obj, Mapping) else [type(obj).__name__])
        raise CheckpointError(
            f"{path}: not a person-model checkpoint; expected an upstream checkpoint (model_state_dict with "
            f"pretrained_unet.* keys), a people-seg UNet file (unet.* keys) or a streamseg file; found keys {first}")
    if kind == "streamseg":
        s = obj["spec"]
        spec = get_spec(s["name"], roi_size=roi_size or s.get("roi_size"), mask_size=mask_size or s.get("mask_size"))
        model = HierarchicalUNetV2(spec)
        load_state_dict_strict(model, sd, str(path))
    elif kind == "upstream":
        r0, m0 = _sizes_from_upstream_config(obj)
        spec = detect_spec(sd, roi_size or r0, mask_size or m0)
        if name and get_spec(name).name != spec.name:
            raise CheckpointError(f"{path}: holds a {spec.name} model but {name} was requested")
        model = HierarchicalUNetV2(spec)
        load_state_dict_strict(model, sd, str(path))
    else:  # people-seg UNet only: head stays random
        enc = _detect_encoder(_strip_unet_prefix(sd), "encoder.")
        model = HierarchicalUNetV2(get_spec(name or enc, roi_size=roi_size, mask_size=mask_size))
        load_peopleseg_weights(model, path, _state=sd)
        log.warning("%s: people-seg UNet weights only; the hierarchical head is randomly initialised", path)
    model.checkpoint_kind = kind
    return model.to(map_location).eval()


def _strip_unet_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    first = next(iter(sd))
    for pre in ("unet.", "model."):
        if first.startswith(pre):
            return {k[len(pre):] if k.startswith(pre) else k: v for k, v in sd.items()}
    return dict(sd)


def load_peopleseg_weights(model: HierarchicalUNetV2, path: str | Path, _state: Mapping | None = None) -> None:
    """Initialise the people-seg UNet of ``model`` from an upstream people-seg file (strict on the UNet)."""
    sd = _state
    if sd is None:
        sd, kind = extract_state_dict(read_file(path))
        if kind == "upstream":  # a whole-model checkpoint: take its UNet part
            sd = {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
        elif kind != "peopleseg":
            raise CheckpointError(f"{path}: not a people-seg UNet file (expected unet.encoder.* keys)")
    sd = _strip_unet_prefix(sd) if not any(k.startswith("encoder.") for k in list(sd)[:1]) else dict(sd)
    enc = _detect_encoder(sd, "encoder.")
    want = model.spec.encoder_name.rsplit("-", 1)[-1]
    if enc != want:
        raise CheckpointError(f"{path}: people-seg UNet is {enc} but the model uses {want}")
    load_state_dict_strict(model.pretrained_unet.model.model, sd, str(path))


def save_checkpoint(model: HierarchicalUNetV2, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write streamseg's own format (plain tensors and python types: loads with weights_only=True)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {"streamseg_version": __version__, "torch_version": str(torch.__version__), **(extra or {})},
    }
    torch.save(payload, p)
    return p


def to_upstream_checkpoint(model: HierarchicalUNetV2, epoch: int = -1, best_miou: float = 0.0,
                           optimizer_state: dict | None = None, scheduler_state: dict | None = None) -> dict[str, Any]:
    """A dict in upstream train_advanced.py's layout (for users going back to upstream tools)."""
    s = model.spec
    return {
        "epoch": int(epoch),
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state_dict": optimizer_state,
        "scheduler_state_dict": scheduler_state,
        "best_miou": float(best_miou),
        "config": {"name": s.upstream_config_name(),
                   "model": {"encoder_name": s.encoder_name, "roi_size": tuple(s.roi_size),
                             "mask_size": tuple(s.mask_size), "hierarchical_base_channels": s.base_channels,
                             "hierarchical_depth": s.depth, "num_classes": 3}},
    }
