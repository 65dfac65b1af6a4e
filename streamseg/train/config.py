"""Training-config schema (YAML) for ``streamseg train`` / ``streamseg eval``.

Every problem becomes one line ``<file>: <key.path>: <problem>; allowed: <...>`` inside a
:class:`streamseg.errors.ConfigError`.  Relative paths are resolved against the current working
directory (like pipeline files).  Defaults reproduce upstream's recipe (UPSTREAM.md sections 8-10)
except where noted on the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamseg.config import read_yaml
from streamseg.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_NAMES = ("b0", "b1", "b7", "b0-enhanced", "b1-enhanced", "b7-enhanced")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _pair(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    return v


class ModelSection(_Section):
    """Which variant to train and how to initialise it."""

    name: Literal["b0", "b1", "b7", "b0-enhanced", "b1-enhanced", "b7-enhanced"] = "b0"
    roi_size: tuple[int, int] = Field((64, 48), description="ROI size (H, W) fed to the head")
    mask_size: tuple[int, int] = Field((128, 96), description="output mask size (H, W), 2 x roi_size upstream")
    peopleseg_weights: str | None = Field(
        None, description="upstream people-seg UNet file (best_model_b0_0.8741.pth ...) to initialise the UNet"
    )
    init_checkpoint: str | None = Field(
        None, description="upstream or streamseg checkpoint whose weights start the run (not a resume)"
    )
    freeze_peopleseg: bool = Field(True, description="keep the people-seg UNet frozen (no grad, BatchNorm in eval)")

    _p = field_validator("roi_size", "mask_size", mode="before")(classmethod(lambda cls, v: _pair(v)))

    @field_validator("name", mode="before")
    @classmethod
    def _norm_name(cls, v: Any) -> Any:
        return v.lower().replace("_", "-") if isinstance(v, str) else v

    @field_validator("roi_size", "mask_size")
    @classmethod
    def _min4(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 4:
            raise ValueError(f"both sizes must be >= 4, got {list(v)}")
        return v

    @field_validator("mask_size")
    @classmethod
    def _mask_ge_roi(cls, v: tuple[int, int], info: Any) -> tuple[int, int]:
        roi = info.data.get("roi_size")
        if roi is not None and (v[0] < roi[0] or v[1] < roi[1]):
            raise ValueError(f"mask_size {list(v)} must not be smaller than roi_size {list(roi)}")
        return v


class DataSection(_Section):
    """COCO-format data (raw COCO files work: person / non-crowd filtering is done here)."""

    train_annotations: str | None = Field(None, description="COCO annotation JSON for training")
    train_images: str | None = Field(None, description="folder with the training images")
    val_annotations: str | None = Field(None, description="COCO annotation JSON for validation/eval")
    val_images: str | None = Field(None, description="folder with the validation images")
    image_size: tuple[int, int] = Field((640, 640), description="training image size (H, W), multiples of 32")
    min_size: float = Field(16, gt=0, description="persons with bbox width or height below this are background")
    max_targets: int = Field(10, ge=1, description="at most this many target samples per image")
    augment: bool = Field(True, description="upstream's ROI-safe heavy augmentation (flip + photometric)")
    flip: bool = Field(True, description="horizontal flip inside the augmentation")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    repeat: int = Field(1, ge=1, description="passes over the training samples per epoch (for tiny datasets)")

    _p = field_validator("image_size", mode="before")(classmethod(lambda cls, v: _pair(v)))

    @field_validator("image_size")
    @classmethod
    def _mult32(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 32 or v[1] < 32 or v[0] % 32 or v[1] % 32:
            raise ValueError(f"image size must be multiples of 32 and >= 32, got {list(v)}")
        return v


class LossSection(_Section):
    """Hierarchical loss options (defaults = upstream's values for this family)."""

    contour_mode: Literal["upstream", "logits_fixed"] = Field(
        "upstream",
        description="'upstream' feeds sigmoid outputs to BCE-with-logits (a double sigmoid, upstream's defect); "
        "'logits_fixed' uses plain BCE on the probabilities",
    )
    dynamic_weights: bool = True
    bg_weight: float = Field(1.5, ge=0)
    fg_weight: float = Field(1.5, ge=0)
    target_weight: float = Field(1.2, ge=0)
    consistency_weight: float = Field(0.3, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    boundary_aware_weight: float = Field(0.1, ge=0)
    contour_weight: float = Field(0.1, ge=0, description="base weight, auto-scaled by mask size (0.05 at 128x96)")
    distance_weight: float = Field(0.1, ge=0)


class TrainSection(_Section):
    """Optimisation (defaults = upstream: AdamW 1e-4 / wd 0.01, cosine to 1e-6, 100 epochs, batch 2)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    warmup_epochs: int = Field(
        0, ge=0,
        description="linear warm-up epochs before the cosine; the design specifies 5 but upstream never "
        "applied them, so 0 reproduces upstream",
    )
    grad_clip: float = Field(1.0, ge=0, description="global gradient-norm clip (0 = off)")
    amp: bool = Field(True, description="mixed precision (fp16 autocast + GradScaler); only active on CUDA")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    seed: int = 0
    drop_last: bool = False
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps in total (writes a resumable last.pt)"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs (and after the last)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")

    @field_validator("device")
    @classmethod
    def _dev(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}")

    @field_validator("warmup_epochs")
    @classmethod
    def _warm(cls, v: int, info: Any) -> int:
        epochs = info.data.get("epochs")
        if v > 0 and epochs is not None and v >= epochs:
            raise ValueError(f"warmup_epochs ({v}) must be smaller than epochs ({epochs})")
        return v


class OutputSection(_Section):
    """Where checkpoints and logs go."""

    dir: str = Field("runs/train", description="run folder: checkpoints/, logs (CSV, TensorBoard), eval JSON")
    keep_checkpoints: int = Field(3, ge=0, description="per-epoch checkpoints to keep (0 = all)")
    export_upstream: bool = Field(True, description="also write upstream-format best_model.pth / last_model.pth")
    tensorboard: bool = True
    log_every: int = Field(10, ge=1, description="steps between TensorBoard scalar writes")
    progress: bool = Field(True, description="tqdm progress bars")


class TrainConfig(_Section):
    """The whole training config file."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    loss: LossSection = Field(default_factory=LossSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)


# --------------------------------------------------------------------------- error formatting


def _owner_fields(loc: Sequence[Any]) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown key' errors)."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        f = model.model_fields.get(str(part))
        ann = getattr(f, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


_ALLOWED_OVERRIDE = {
    "train.device": "auto, cpu, cuda, cuda:N",
    "data.image_size": "[H, W] multiples of 32 (>= 32), or one integer",
    "model.roi_size": "[H, W] integers >= 4, or one integer",
    "model.mask_size": "[H, W] integers >= 4, not smaller than roi_size",
}


def _allowed(loc: Sequence[Any]) -> str:
    key = ".".join(str(p) for p in loc)
    if key in _ALLOWED_OVERRIDE:
        return _ALLOWED_OVERRIDE[key]
    model: type[BaseModel] = TrainConfig
    info = None
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return "see configs/train_b0.yaml"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    if info is None:
        return "see configs/train_b0.yaml"
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a mapping with keys " + ", ".join(ann.model_fields)
    args = getattr(ann, "__args__", None)
    if getattr(ann, "__origin__", None) is Literal and args:
        return ", ".join(str(a) for a in args)
    bounds = []
    for m in info.metadata:
        for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            val = getattr(m, attr, None)
            if val is not None:
                bounds.append(f"{word} {val}")
    base = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(ann, None)
    if base is None:
        text = str(ann).replace("typing.", "")
        if "tuple[int, int]" in text:
            base = "[H, W] (two integers) or one integer"
        elif "None" in text:
            base = text.replace(" | None", "") + " or null"
        else:
            base = text
    return base + (" " + " and ".join(bounds) if bounds else "")


def validation_lines(exc: ValidationError, origin: str) -> list[str]:
    """One ``<file>: <key.path>: <problem>; allowed: ...`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        path = ".".join(str(p) for p in loc) or "(top level)"
        etype = err.get("type", "")
        if etype == "extra_forbidden":
            allowed = ", ".join(_owner_fields(loc)) or "none"
            lines.append(f"{origin}: {path}: unknown key; allowed: {allowed}")
            continue
        msg = str(err.get("msg", "invalid value"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        # tuple item errors carry the index as the last loc part: report on the field
        named = [p for p in loc if not isinstance(p, int)]
        allowed = _allowed(named) if named else "a mapping with model, data, loss, train, output"
        got = err.get("input")
        got_txt = "" if isinstance(got, dict) or etype == "value_error" else f" (got {got!r})"
        lines.append(f"{origin}: {path}: {msg}{got_txt}; allowed: {allowed}")
    return lines


# --------------------------------------------------------------------------- loading


def train_config_from_dict(raw: Any, origin: str = "config", overrides: Sequence[str] = ()) -> TrainConfig:
    """Validate a raw dict (after applying ``key.path=value`` overrides)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: (top level): the file must be a mapping; allowed: model, data, loss, train, output")
    if overrides:
        from streamseg.config import apply_overrides

        raw = apply_overrides(raw, overrides, origin="--set")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_lines(exc, origin)) from None


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read, override and validate a training config file."""
    p = Path(path)
    return train_config_from_dict(read_yaml(p, str(p), "training config"), str(p), overrides)


def require_paths(cfg: TrainConfig, origin: str, keys: Sequence[str]) -> None:
    """Check that the named ``data.*`` paths are set and exist (one line per problem)."""
    problems = []
    for key in keys:
        val = getattr(cfg.data, key)
        kind = "folder" if key.endswith("images") else "file"
        if not val:
            problems.append(f"{origin}: data.{key}: not set; allowed: a path to an existing {kind}")
        elif kind == "folder" and not Path(val).is_dir():
            problems.append(f"{origin}: data.{key}: folder not found ({val}); allowed: a path to an existing folder")
        elif kind == "file" and not Path(val).is_file():
            problems.append(f"{origin}: data.{key}: file not found ({val}); allowed: a path to an existing file")
    for key in ("peopleseg_weights", "init_checkpoint"):
        val = getattr(cfg.model, key)
        if val and not Path(val).is_file():
            problems.append(f"{origin}: model.{key}: file not found ({val}); allowed: a path to an existing file or null")
    if problems:
        raise ConfigError(problems)
