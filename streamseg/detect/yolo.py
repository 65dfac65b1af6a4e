"""Person detection (and tracking) with ultralytics YOLO, fully offline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamseg.errors import UserError
from streamseg.records import Detections, Frame

from .base import clip_boxes, ultralytics_offline

log = logging.getLogger(__name__)

TRACKERS = ("bytetrack", "botsort")


def resolve_weights(weights: str | Path, allow_download: bool = True) -> str:
    """Turn ``detector.weights`` into something ``YOLO()`` can load without surprises.

    A local file wins; a ``.yaml`` model config builds random weights; a known ultralytics asset
    name is looked up in ultralytics' weights folder and, if allowed, downloaded. Anything else,
    or a failed download (this is usually an offline machine), is a UserError that says how to
    point at a local file instead.
    """
    ultralytics_offline()
    from ultralytics.utils import SETTINGS

    text = str(weights).strip()
    if not text:
        raise UserError("detector.weights is empty; set detector.weights=/path/to/yolo11n.pt")
    path = Path(text).expanduser()
    if path.is_file():
        return str(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return (
            text  # a model config (random weights); YOLO() resolves package names like yolov8n.yaml
        )
    hint = f"download it on a connected machine and set detector.weights=/path/to/{path.name}"
    if path.is_dir():
        raise UserError(
            f"detector.weights: '{text}' is a directory, expected a weights file; {hint}"
        )
    cached = Path(SETTINGS["weights_dir"]) / path.name
    if path.name == text and cached.is_file():
        return str(cached)
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    if path.name != text:
        raise UserError(f"detector.weights: file '{text}' not found; {hint}")
    if path.name not in GITHUB_ASSETS_NAMES:
        raise UserError(
            f"detector.weights: file '{text}' not found and is not a downloadable ultralytics name; {hint}"
        )
    if not allow_download:
        raise UserError(
            f"detector.weights: '{text}' is not a local file and downloads are off; {hint}"
        )
    log.info("detector weights %s not found locally; trying ultralytics' download", text)
    folder_existed = cached.parent.exists()
    try:
        got: Path | None = Path(attempt_download_asset(cached, retry=1))
    except Exception as e:  # noqa: BLE001 - any failure means: tell the user to supply a file
        log.debug("download of %s failed: %s", text, e)
        got = None
    if got is None or not got.is_file():
        if not folder_existed and cached.parent.is_dir() and not any(cached.parent.iterdir()):
            cached.parent.rmdir()  # ultralytics made the folder before failing; leave no trace
        raise UserError(
            f"detector.weights: '{text}' is not a local file and downloading it failed (offline?); {hint}"
        )
    return str(got)


def resolve_classes(classes: Sequence[int | str] | int | str, names: dict[int, str]) -> list[int]:
    """Map class ids or names (case-insensitive) onto the model's class ids, so custom models work."""
    items = [classes] if isinstance(classes, (int, str)) else list(classes)
    if not items:
        raise UserError(
            "detector.classes is empty; give the person class by id or name, e.g. [person] or [0]"
        )
    by_name = {str(v).lower(): int(k) for k, v in names.items()}
    out: list[int] = []
    for c in items:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if int(c) not in names:
                raise UserError(
                    f"detector.classes: id {c} is not a class of this model (ids 0..{len(names) - 1})"
                )
            out.append(int(c))
            continue
        key = str(c).strip().lower()
        if key in by_name:
            out.append(by_name[key])
        elif key.isdigit() and int(key) in names:
            out.append(int(key))
        else:
            shown = ", ".join(str(v) for v in list(names.values())[:20])
            more = f" (+{len(names) - 20} more)" if len(names) > 20 else ""
            raise UserError(
                f"detector.classes: unknown class '{c}'; give ids (e.g. [0]) or names of this model: {shown}{more}"
            )
    return sorted(set(out))


def _has_quantize() -> bool:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return "quantize" in DEFAULT_CFG_DICT


class YoloDetector:
    """ultralytics YOLO restricted to the person class, optionally tracked by ultralytics' own trackers."""

    def __init__(
        self,
        weights: str | Path = "yolo11n.pt",
        conf: float = 0.25,
        iou: float = 0.7,
        imgsz: int = 640,
        max_det: int = 50,
        device: str = "cpu",
        half: bool = False,
        classes: Sequence[int | str] | int | str = ("person",),
        tracker: str | None = "bytetrack",
        allow_download: bool = True,
    ) -> None:
        if not 0.0 <= float(conf) <= 1.0:
            raise UserError(f"detector.conf must be in [0, 1], got {conf}")
        if not 0.0 < float(iou) <= 1.0:
            raise UserError(f"detector.iou must be in (0, 1], got {iou}")
        if int(imgsz) < 32:
            raise UserError(f"detector.imgsz must be >= 32, got {imgsz}")
        if int(max_det) < 1:
            raise UserError(f"detector.max_det must be >= 1, got {max_det}")
        self.tracker_cfg = self._tracker_cfg(tracker)
        self.tracks = self.tracker_cfg is not None
        ultralytics_offline()
        from ultralytics import YOLO

        path = resolve_weights(weights, allow_download=allow_download)
        try:
            self.model = YOLO(path)
        except FileNotFoundError as e:
            raise UserError(
                f"detector.weights: model config '{path}' not found (neither a file nor an ultralytics config name)"
            ) from e
        except Exception as e:
            raise UserError(
                f"detector.weights: cannot load '{path}' as a YOLO model: {e}".splitlines()[0]
            ) from e
        if path.lower().endswith((".yaml", ".yml")):
            log.warning(
                "detector.weights=%s builds YOLO with RANDOM weights: its boxes mean nothing", path
            )
        names = dict(self.model.names)
        self.classes = resolve_classes(classes, names)
        self.device = self._check_device(device)
        self.kw: dict[str, Any] = {
            "conf": float(conf),
            "iou": float(iou),
            "imgsz": int(imgsz),
            "max_det": int(max_det),
            "device": self.device,
            "classes": self.classes,
            "verbose": False,
        }
        if half:
            # ultralytics 8.4 replaced ``half`` with ``quantize=16`` (FP16 on CUDA, ignored on CPU)
            self.kw.update({"quantize": 16} if _has_quantize() else {"half": True})
        log.info(
            "YOLO detector %s on %s, classes %s, tracker %s",
            Path(path).name,
            self.device,
            [names[c] for c in self.classes],
            self.tracker_cfg,
        )

    @staticmethod
    def _tracker_cfg(tracker: str | None) -> str | None:
        if tracker is None or str(tracker).lower() in ("none", "", "off", "false"):
            return None
        t = str(tracker)
        if t.lower() in TRACKERS:
            return f"{t.lower()}.yaml"
        if t.lower().endswith((".yaml", ".yml")) and Path(t).is_file():
            return t  # a user's own ultralytics tracker config
        raise UserError(
            f"detector.tracker: unknown tracker '{tracker}'; allowed: bytetrack, botsort, none, or a tracker .yaml file"
        )

    @staticmethod
    def _check_device(device: str | int) -> str:
        import torch

        d = str(device).strip().lower()
        if d in ("cpu", "mps"):
            return d
        if d == "auto":
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        if d.startswith("cuda") or d.isdigit():
            if not torch.cuda.is_available():
                raise UserError(
                    f"detector.device: '{device}' requested but CUDA is not available here; use detector.device=cpu"
                )
            idx = int(d.split(":", 1)[1]) if ":" in d else (int(d) if d.isdigit() else 0)
            if idx >= torch.cuda.device_count():
                raise UserError(
                    f"detector.device: '{device}' does not exist ({torch.cuda.device_count()} CUDA device(s))"
                )
            return f"cuda:{idx}"
        raise UserError(
            f"detector.device: '{device}' is not a device; allowed: cpu, cuda, cuda:N, mps"
        )

    def detect(self, frame: Frame) -> Detections:
        """Run YOLO on one frame (RGB in, ultralytics wants BGR numpy) and keep persons only."""
        bgr = np.ascontiguousarray(frame.image[..., ::-1])
        if self.tracker_cfg is not None:
            res = self.model.track(bgr, persist=True, tracker=self.tracker_cfg, **self.kw)[0]
        else:
            res = self.model.predict(bgr, **self.kw)[0]
        boxes = res.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = boxes.conf.cpu().numpy().astype(np.float32)
        cls = boxes.cls.cpu().numpy().astype(np.int64)
        if boxes.is_track and boxes.id is not None:
            ids = boxes.id.cpu().numpy().astype(np.int64)
        else:
            ids = np.full(len(xyxy), -1, np.int64)
        keep = np.isin(cls, self.classes)
        dets = Detections(
            clip_boxes(xyxy[keep], frame.height, frame.width), scores[keep], ids[keep], cls[keep]
        )
        return dets

    def reset(self) -> None:
        """Drop ultralytics' tracker state so IDs restart (new source)."""
        pred = getattr(self.model, "predictor", None)
        for t in getattr(pred, "trackers", None) or []:
            t.reset()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
