"""Registry of model variants (timm-style): one spec per name, one ``create_model`` factory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import UserError

UPSTREAM_PREFIX = "rgb_hierarchical_unet_v2_fullimage_pretrained_peopleseg_"


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides the architecture (and therefore the checkpoint layout)."""

    name: str
    encoder_name: str
    base_channels: int = 64
    depth: int = 3
    roi_size: tuple[int, int] = (64, 48)
    mask_size: tuple[int, int] = (128, 96)

    def upstream_config_name(self) -> str:
        r, m = self.roi_size, self.mask_size
        enc = self.encoder_name.rsplit("-", 1)[-1].upper()
        suffix = "_enhanced" if self.name.endswith("-enhanced") else ""
        return f"{UPSTREAM_PREFIX}r{r[0]}x{r[1]}m{m[0]}x{m[1]}_disttrans_contdet_baware_from_{enc}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roi_size"], d["mask_size"] = list(self.roi_size), list(self.mask_size)
        return d


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


for _b in ("b0", "b1", "b7"):
    register(ModelSpec(_b, f"timm-efficientnet-{_b}"))
register(ModelSpec("b0-enhanced", "timm-efficientnet-b0", base_channels=72))
register(ModelSpec("b1-enhanced", "timm-efficientnet-b1", base_channels=72))
register(ModelSpec("b7-enhanced", "timm-efficientnet-b7", base_channels=96, depth=4))


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    """The registered spec with size overrides applied (roi_size, mask_size as (H, W))."""
    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        raise UserError(f"unknown model '{name}'; allowed: {', '.join(_REGISTRY)}")
    spec = _REGISTRY[key]
    for k in ("roi_size", "mask_size"):
        if overrides.get(k) is not None:
            v = tuple(int(x) for x in overrides[k])
            if len(v) != 2 or min(v) < 4:
                raise UserError(f"model {k} must be (H, W) with both >= 4, got {overrides[k]!r}")
            overrides[k] = v
    unknown = set(overrides) - {"roi_size", "mask_size", "base_channels", "depth"}
    if unknown:
        raise UserError(f"unknown model option(s) {sorted(unknown)}; allowed: roi_size, mask_size")
    spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    if spec.mask_size[0] < spec.roi_size[0] or spec.mask_size[1] < spec.roi_size[1]:
        raise UserError(f"mask_size {spec.mask_size} must not be smaller than roi_size {spec.roi_size}")
    return spec
