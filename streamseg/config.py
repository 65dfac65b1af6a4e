"""Pipeline YAML schema, validation, ``--set`` overrides and ``${VAR}`` interpolation.

Every problem in a pipeline file becomes exactly one line of the form
``<file>: <key.path>: <what is wrong>; allowed: <what is allowed>`` inside a
:class:`streamseg.errors.ConfigError`, so the CLI can print them and exit with code 2
before any video, model or sink is opened.

Relative paths inside a pipeline (``source.uri``, ``model.weights``, sink paths, ...) are
resolved against the *current working directory* of the process, not against the folder
of the YAML file; they are kept exactly as written and only checked for existence here.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from streamseg.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "PipelineConfig",
    "SourceConfig",
    "ReconnectConfig",
    "DetectorConfig",
    "HogConfig",
    "ModelConfig",
    "RuntimeConfig",
    "SmoothingConfig",
    "VideoSinkConfig",
    "MasksSinkConfig",
    "EventsSinkConfig",
    "DisplaySinkConfig",
    "RtspSinkConfig",
    "SinkConfig",
    "LoggingConfig",
    "MetricsConfig",
    "load_pipeline",
    "apply_overrides",
    "interpolate_env",
    "validate_paths",
    "redacted_dict",
    "summary_lines",
    "schema_reference",
]

# A validator error message that starts with "@<rel.path>@" is reported at <loc>.<rel.path>
# instead of at the model's own location (pydantic puts model-validator errors on the model).
_MARK = "@"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
X264_PRESETS = "ultrafast|superfast|veryfast|faster|fast|medium|slow|slower|veryslow|placebo"


def _at(rel: str, message: str) -> ValueError:
    """A validator error that the formatter reports at ``<model loc>.<rel>``."""
    return ValueError(f"{_MARK}{rel}{_MARK}{message}")


def _unwrap_optional(ann: Any) -> Any:
    """``X | None`` -> ``X`` (leave other annotations alone)."""
    if typing.get_origin(ann) in (Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, bools never pass as numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # YAML turns yes/no/on/off into booleans and pydantic would take True as 1; refuse that.
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                if isinstance(data.get(name), bool) and _unwrap_optional(info.annotation) in (int, float):
                    raise _at(name, f"expected a number, got {data[name]!r}; allowed: {_allowed_for(info)}")
        return data


def _to_str(v: Any) -> Any:
    """YAML reads ``0`` or ``8554`` as numbers; string-typed keys want the text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return v


def _to_str_v(cls: type, v: Any) -> Any:
    """Field-validator form of :func:`_to_str`."""
    return _to_str(v)


# --------------------------------------------------------------------------- source


class ReconnectConfig(_Section):
    """How a live source (or the RTSP output) comes back after an error, EOF or stall."""

    enabled: bool = Field(True, description="Reopen the stream after an error, an EOF of a live source or a stall.")
    backoff_base_s: float = Field(0.5, gt=0, description="First wait before reopening, in seconds; doubles after each failed attempt.")
    backoff_max_s: float = Field(10.0, gt=0, description="Longest wait between attempts, in seconds (>= backoff_base_s).")
    max_attempts: int | None = Field(None, ge=1, description="Give up after this many failed attempts in a row; null = retry forever.")
    stall_timeout_s: float = Field(5.0, gt=0, description="No frame for this many seconds counts as a disconnect.")

    @model_validator(mode="after")
    def _max_ge_base(self) -> "ReconnectConfig":
        if self.backoff_max_s < self.backoff_base_s:
            raise _at(
                "backoff_max_s",
                f"{self.backoff_max_s} is smaller than backoff_base_s {self.backoff_base_s}; "
                f"allowed: a number >= backoff_base_s",
            )
        return self


SourceKind = Literal["file", "images", "webcam", "rtsp", "http", "lavfi"]


class SourceConfig(_Section):
    """Where frames come from; decoded by PyAV in its own thread."""

    uri: str = Field(
        ...,
        description=(
            "Video file path, image folder, rtsp(s):// URL, http(s)/HLS URL, "
            "/dev/videoN, a webcam index like \"0\", or a lavfi filter graph. Relative paths are "
            "resolved against the current working directory. ${VAR} / ${VAR:-default} are replaced "
            "from the environment."
        ),
        json_schema_extra={"allowed": "a path, URL, device or lavfi graph (string)"},
    )
    type: Literal["auto", "file", "images", "webcam", "rtsp", "http", "lavfi"] = Field(
        "auto", description="Kind of source; auto guesses it from uri and format (http also covers hls/rtmp/srt/udp URLs)."
    )
    format: str | None = Field(
        None, description="FFmpeg input format to force (v4l2, avfoundation, dshow, lavfi, ...); null = let FFmpeg probe."
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="Extra FFmpeg/PyAV input options, name -> value (e.g. input_format: mjpeg)."
    )
    live: bool | None = Field(
        None,
        description=(
            "Live policy (newest frame wins, drops counted) instead of file policy (back-pressure, nothing dropped); "
            "null = live for webcam/rtsp/http and for lavfi graphs with the realtime filter."
        ),
    )
    queue_size: int = Field(8, ge=1, le=1024, description="Decoded frames buffered between the decoder thread and the pipeline.")
    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames; null = until the source ends.")
    loop: bool = Field(False, description="Restart a file source from the beginning when it ends (timestamps stay monotonic).")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening the source after this many seconds.")
    read_timeout_s: float = Field(5.0, gt=0, description="Give up a blocked network read after this many seconds.")
    size: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*x[1-9][0-9]*$",
        description="Camera capture size \"WxH\" (e.g. 1280x720); null = the device default.",
        json_schema_extra={"allowed": "\"WxH\" such as 1280x720, or null"},
    )
    fps: float | None = Field(None, gt=0, description="Camera capture frame rate; null = the device default.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Reconnect policy for live sources.")

    _uri_str = field_validator("uri", "format", mode="before")(_to_str_v)

    @field_validator("options", mode="before")
    @classmethod
    def _options_as_text(cls, v: Any) -> Any:
        # FFmpeg options are strings; accept YAML numbers and booleans as their FFmpeg spelling.
        if isinstance(v, dict):
            out = {}
            for k, val in v.items():
                if isinstance(val, bool):
                    val = "1" if val else "0"
                out[str(k)] = _to_str(val)
            return out
        return v

    @field_validator("uri")
    @classmethod
    def _uri_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; allowed: a path, URL, device or lavfi graph")
        return v

    @property
    def kind(self) -> SourceKind:
        """The resolved source kind (``type`` unless it is ``auto``)."""
        if self.type != "auto":
            return self.type  # type: ignore[return-value]
        return guess_source_kind(self.uri, self.format)

    @property
    def is_live(self) -> bool:
        """Whether the live (newest-frame) policy applies."""
        if self.live is not None:
            return self.live
        kind = self.kind
        if kind in ("webcam", "rtsp", "http"):
            return True
        if kind == "lavfi":
            return "realtime" in self.uri
        return False

    @property
    def size_wh(self) -> tuple[int, int] | None:
        """``size`` as (width, height), or None."""
        if self.size is None:
            return None
        w, h = self.size.split("x")
        return int(w), int(h)


def guess_source_kind(uri: str, fmt: str | None = None) -> SourceKind:
    """Guess file/images/webcam/rtsp/http/lavfi from a URI (used when ``source.type`` is auto).

    Delegates to :func:`streamseg.sources.detect_kind` so validation and the source agree.
    """
    try:
        from streamseg.sources import detect_kind  # noqa: PLC0415
    except ImportError:
        detect_kind = None
    if detect_kind is not None:
        return detect_kind(uri, fmt)  # type: ignore[return-value]
    low = uri.strip().lower()
    if fmt == "lavfi":
        return "lavfi"
    if fmt in ("v4l2", "video4linux2", "avfoundation", "dshow", "vfwcap"):
        return "webcam"
    if low.startswith(("rtsp://", "rtsps://", "rtspt://")):
        return "rtsp"
    if low.startswith("file://"):
        return "file"
    if re.match(r"^[a-z][a-z0-9+.-]*://", low):
        return "http"
    if low.isdigit() or re.fullmatch(r"/dev/video\d+", low) or low.startswith("webcam:"):
        return "webcam"
    if Path(uri).expanduser().is_dir():
        return "images"
    return "file"


def _image_suffixes() -> tuple[str, ...]:
    try:
        from streamseg.sources.images import IMAGE_SUFFIXES as suffixes  # noqa: PLC0415
    except ImportError:
        return IMAGE_SUFFIXES
    return tuple(suffixes)


# --------------------------------------------------------------------------- detector


class HogConfig(_Section):
    """OpenCV HOG people detector settings (offline, no weights to download)."""

    win_stride: int = Field(8, ge=1, description="Sliding-window step in pixels; smaller finds more people but is slower.")
    padding: int = Field(8, ge=0, description="Padding added around the image for the window, pixels.")
    scale: float = Field(1.05, gt=1, description="Image pyramid scale step (> 1).")
    upscale: float = Field(1.0, gt=0, description="Resize the frame by this factor before HOG (1.5 finds people shorter than 128 px).")
    hit_threshold: float = Field(0.0, description="SVM score threshold; higher gives fewer, surer boxes.")
    nms_iou: float = Field(0.3, ge=0, le=1, description="IoU above which overlapping HOG boxes are merged (non-maximum suppression).")


class DetectorConfig(_Section):
    """Person boxes (and track IDs) for every frame."""

    type: Literal["yolo", "hog", "boxes_file"] = Field(
        "yolo", description="yolo = ultralytics YOLO; hog = OpenCV HOG (offline); boxes_file = boxes you computed elsewhere."
    )
    weights: str = Field(
        "yolo11n.pt",
        description="YOLO weights: an ultralytics name (downloaded once, needs internet) or a local .pt/.onnx path.",
    )
    conf: float = Field(0.25, ge=0, le=1, description="Minimum detection confidence.")
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold.")
    imgsz: int = Field(640, ge=32, multiple_of=32, description="YOLO inference size in pixels (multiple of 32).")
    max_det: int = Field(50, ge=1, description="Most people kept per frame.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda|cuda:\d+|\d+)$",
        description="Device for the detector: auto (follow runtime.device), cpu, cuda, cuda:N, N or mps.",
        json_schema_extra={"allowed": "auto|cpu|cuda|cuda:N|N|mps"},
    )
    half: bool = Field(False, description="FP16 detector inference (CUDA only).")
    classes: list[int | str] = Field(
        default_factory=lambda: ["person"],
        description="Classes that count as people, by id (0) or name (person), so custom person models work.",
        json_schema_extra={"allowed": "a list of class ids (integers >= 0) or names, e.g. [person] or [0]"},
    )
    tracker: Literal["bytetrack", "botsort", "none"] = Field(
        "bytetrack", description="Ultralytics tracker giving stable IDs per person; none = a new ID every frame."
    )
    boxes_file: str | None = Field(
        None, description="JSON-lines file of boxes per frame (required when type is boxes_file)."
    )
    every_n: int = Field(1, ge=1, description="Run the detector every n frames and reuse the last tracks in between.")
    hog: HogConfig = Field(default_factory=HogConfig, description="Settings of the HOG detector (type hog).")

    _weights_str = field_validator("weights", "device", mode="before")(_to_str_v)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            v = [v]
        allowed = "allowed: a list of class ids (integers >= 0) or names, e.g. [person] or [0]"
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a non-empty list, got {_show(v)}; {allowed}")
        for item in v:
            if isinstance(item, bool) or not isinstance(item, (int, str)) or (isinstance(item, int) and item < 0) \
                    or (isinstance(item, str) and not item.strip()):
                raise ValueError(f"invalid class {_show(item)}; {allowed}")
        return v

    @model_validator(mode="after")
    def _needs_boxes_file(self) -> "DetectorConfig":
        if self.type == "boxes_file" and not self.boxes_file:
            raise _at("boxes_file", "missing, but detector.type is boxes_file; allowed: a path to a JSON-lines boxes file")
        return self


# --------------------------------------------------------------------------- model

ModelName = Literal["b0", "b1", "b7", "b0-enhanced", "b1-enhanced", "b7-enhanced"]


def _pair(cls: type, v: Any) -> Any:
    """Accept a single int as a square size."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    return v


class ModelConfig(_Section):
    """The person segmentation model (RGB Hierarchical UNet V2)."""

    name: ModelName = Field("b0", description="Model variant (EfficientNet encoder size; -enhanced = wider hierarchical head).")
    weights: str = Field(
        ...,
        description=(
            "Checkpoint: a local file path, a name from the weights registry (downloaded once to the cache), "
            "or \"untrained\" (random init, output watermarked; for tests only)."
        ),
        json_schema_extra={"allowed": "a checkpoint path, a registry name, or \"untrained\""},
    )
    input_size: tuple[int, int] = Field(
        (640, 640), description="Full-image input (H, W) for the UNet; both multiples of 32.",
        json_schema_extra={"allowed": "[H, W], each a multiple of 32 such as [640, 640] or [384, 640]"},
    )
    resize: Literal["letterbox", "stretch"] = Field(
        "letterbox", description="Fit frames to input_size keeping aspect (letterbox) or not (stretch)."
    )
    backend: Literal["torch", "onnxruntime"] = Field("torch", description="Inference engine.")
    onnx: str | None = Field(None, description="Exported .onnx file (required for backend onnxruntime; see `streamseg export`).")
    roi_size: tuple[int, int] = Field(
        (64, 48), description="ROI-align size (H, W) of each person crop; must match the checkpoint.",
        json_schema_extra={"allowed": "[H, W] of positive integers, e.g. [64, 48]"},
    )
    mask_size: tuple[int, int] = Field(
        (128, 96), description="Per-person mask size (H, W); always 2 x roi_size.",
        json_schema_extra={"allowed": "[H, W] equal to 2 x roi_size, e.g. [128, 96]"},
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Mask probability above which a pixel belongs to the person.")
    dilation: int = Field(0, ge=0, description="Grow each mask by this many pixels after thresholding.")
    max_rois: int = Field(32, ge=1, description="Most people segmented per model call; more are split over calls.")

    _weights_str = field_validator("weights", "onnx", mode="before")(_to_str_v)
    _pairs = field_validator("input_size", "roi_size", "mask_size", mode="before")(_pair)

    @field_validator("name", mode="before")
    @classmethod
    def _lower_name(cls, v: Any) -> Any:
        return v.strip().lower().replace("_", "-") if isinstance(v, str) else v

    @field_validator("weights")
    @classmethod
    def _weights_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; allowed: a checkpoint path, a registry name, or \"untrained\"")
        return v

    @field_validator("input_size")
    @classmethod
    def _mult32(cls, v: tuple[int, int]) -> tuple[int, int]:
        bad = [x for x in v if x < 32 or x % 32]
        if bad:
            raise ValueError(
                f"{list(v)} has {bad[0]}, not a positive multiple of 32; "
                "allowed: [H, W], each a multiple of 32 such as [640, 640] or [384, 640]"
            )
        return v

    @field_validator("roi_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"{list(v)} has a size below 1; allowed: [H, W] of positive integers, e.g. [64, 48]")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "ModelConfig":
        want = (2 * self.roi_size[0], 2 * self.roi_size[1])
        if tuple(self.mask_size) != want:
            raise _at(
                "mask_size",
                f"{list(self.mask_size)} is not 2 x roi_size {list(self.roi_size)}; allowed: {list(want)}",
            )
        if self.backend == "onnxruntime" and not self.onnx:
            raise _at("onnx", "missing, but model.backend is onnxruntime; allowed: a path to an exported .onnx file")
        return self


# --------------------------------------------------------------------------- runtime / smoothing


class RuntimeConfig(_Section):
    """Where and how the segmentation model runs."""

    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
        description="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
        json_schema_extra={"allowed": "auto|cpu|cuda|cuda:N"},
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Autocast precision of the model (fp16 is for CUDA).")
    batch_frames: int = Field(1, ge=1, le=64, description="Frames whose ROIs are gathered into one model call.")
    channels_last: bool = Field(False, description="Use channels-last memory format (faster convolutions on recent GPUs).")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = torch default.")
    cuda_streams: bool = Field(True, description="Copy the next batch to the GPU on a side stream while the current one computes.")
    pinned_memory: bool = Field(True, description="Use pinned host buffers for host-to-device copies (CUDA).")
    frozen_backbone: bool = Field(True, description="Run the encoder without autograd bookkeeping (inference only).")
    winograd: Literal["auto", "off", "f2", "f4"] = Field(
        "auto",
        description=(
            "CPU fp32 only: run the 3x3 convolutions of 64+ channels as Winograd F(4x4,3x3) (f4) or F(2x2,3x3) (f2); "
            "auto = f4 when a C compiler is available. Masks stay within 1e-4 of direct convolution."
        ),
    )

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"cuda:{v}"
        return v.strip().lower() if isinstance(v, str) else v


class SmoothingConfig(_Section):
    """Per-track temporal smoothing of mask probabilities (EMA in box-normalised coordinates)."""

    enabled: bool = Field(True, description="Blend each person's mask with the previous frames of the same track.")
    alpha: float = Field(0.6, gt=0, le=1, description="Weight of the new frame in the EMA (1 = no smoothing).")
    max_age: int = Field(5, ge=0, description="Frames a lost track's state is kept before it is reset.")


# --------------------------------------------------------------------------- sinks


class VideoSinkConfig(_Section):
    """Annotated H.264 MP4 (browser-playable yuv420p, source timestamps, audio passed through)."""

    type: Literal["video"] = Field(description="Sink kind.")
    path: str = Field("annotated.mp4", description="Output video file (under --out DIR when given).")
    codec: str = Field("libx264", description="FFmpeg video encoder (libx264, h264_nvenc, ...; see `streamseg info`).")
    crf: int = Field(23, ge=0, le=51, description="Quality (lower = better, bigger); 0..51.")
    preset: str = Field("veryfast", description=f"Encoder speed preset (x264: {X264_PRESETS}).")
    audio: bool = Field(True, description="Copy the source's audio track into the output when there is one.")
    draw_boxes: bool = Field(True, description="Draw person boxes.")
    draw_ids: bool = Field(True, description="Draw track IDs.")
    draw_fps: bool = Field(False, description="Draw the processing FPS in the corner.")
    alpha: float = Field(0.5, ge=0, le=1, description="Opacity of the coloured mask overlay.")


class MasksSinkConfig(_Section):
    """Per-frame instance masks: PNG instance-ID maps and/or COCO RLE JSON lines with track IDs."""

    type: Literal["masks"] = Field(description="Sink kind.")
    png_dir: str | None = Field(None, description="Folder for one 16-bit PNG per frame (pixel = track ID, 0 = background).")
    rle_jsonl: str | None = Field(None, description="JSON-lines file, one line per frame with COCO RLE masks and track IDs.")
    threshold: float = Field(0.5, ge=0, le=1, description="Mask probability threshold for the written masks.")

    @model_validator(mode="after")
    def _one_output(self) -> "MasksSinkConfig":
        if not self.png_dir and not self.rle_jsonl:
            raise _at("png_dir", "neither png_dir nor rle_jsonl is set; allowed: set png_dir, rle_jsonl or both")
        return self


class EventsSinkConfig(_Section):
    """JSON line per frame: boxes, scores, track IDs, mask areas, timestamps."""

    type: Literal["events"] = Field(description="Sink kind.")
    path: str = Field("events.jsonl", description="Output JSON-lines file.")


class DisplaySinkConfig(_Section):
    """On-screen window (needs a display; a clear error otherwise)."""

    type: Literal["display"] = Field(description="Sink kind.")
    window: str = Field("streamseg", description="Window title.")


class RtspSinkConfig(_Section):
    """Publish the annotated stream as low-latency H.264 to an RTSP server (e.g. mediamtx)."""

    type: Literal["rtsp"] = Field(description="Sink kind.")
    url: str = Field(
        ..., pattern=r"^rtsps?://\S+$",
        description="Publish URL, e.g. rtsp://127.0.0.1:8554/streamseg (${VAR} interpolation works here too).",
        json_schema_extra={"allowed": "an rtsp:// or rtsps:// URL"},
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport for publishing.")
    preset: str = Field("ultrafast", description=f"x264 preset ({X264_PRESETS}); zerolatency tune and no B-frames are always used.")
    gop: int | None = Field(None, ge=1, description="Keyframe interval in frames; null = one per second of source frame rate.")
    bitrate: int | None = Field(
        None, ge=1, description="Target bitrate in bit/s (\"2M\" and \"800k\" accepted); null = CRF-like default.",
        json_schema_extra={"allowed": "a positive number of bit/s such as 2000000, \"2M\" or \"800k\", or null"},
    )
    mux_timeout_s: float = Field(3.0, gt=0, description="A write blocked longer than this counts as a lost server.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Republish policy when the server goes away.")

    _url_str = field_validator("url", mode="before")(_to_str_v)

    @field_validator("bitrate", mode="before")
    @classmethod
    def _bitrate(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", v)
            if not m:
                raise ValueError(
                    f"invalid bitrate {v!r}; allowed: a positive number of bit/s such as 2000000, \"2M\" or \"800k\""
                )
            mult = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
            return int(float(m.group(1)) * mult)
        return v


SinkConfig = Annotated[
    Union[VideoSinkConfig, MasksSinkConfig, EventsSinkConfig, DisplaySinkConfig, RtspSinkConfig],
    Field(discriminator="type"),
]
SINK_TYPES: dict[str, type[_Section]] = {
    "video": VideoSinkConfig,
    "masks": MasksSinkConfig,
    "events": EventsSinkConfig,
    "display": DisplaySinkConfig,
    "rtsp": RtspSinkConfig,
}

# --------------------------------------------------------------------------- logging / metrics


class LoggingConfig(_Section):
    """Log level, progress display and optional log file."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level (-v on the command line forces DEBUG).")
    progress: Literal["auto", "bar", "status", "off"] = Field(
        "auto", description="auto = progress bar for files, periodic status line for live sources; off = neither."
    )
    status_interval_s: float = Field(10.0, gt=0, description="Seconds between status lines of live sources.")
    file: str | None = Field(None, description="Also write the log to this file.")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("progress", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if v is False else v


class MetricsConfig(_Section):
    """The metrics summary written when the run ends."""

    path: str = Field("metrics.json", description="Metrics JSON file (under --out DIR when given).")
    latency_window_s: float = Field(60.0, gt=0, description="Window, in seconds, of the per-window latency percentiles.")


# --------------------------------------------------------------------------- root


class PipelineConfig(_Section):
    """A whole pipeline: source -> detector -> model -> smoothing -> sinks."""

    source: SourceConfig = Field(..., description="Where frames come from.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Person detector and tracker.")
    model: ModelConfig = Field(..., description="Segmentation model.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Device and precision of the model.")
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig, description="Per-track temporal smoothing.")
    sinks: list[SinkConfig] = Field(default_factory=list, description="Outputs, any number at once (may be empty).")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging and progress.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics summary.")

    @model_validator(mode="after")
    def _distinct_outputs(self) -> "PipelineConfig":
        seen: dict[str, str] = {}
        for i, s in enumerate(self.sinks):
            outs: list[tuple[str, str]] = []
            if isinstance(s, (VideoSinkConfig, EventsSinkConfig)):
                outs.append(("path", s.path))
            elif isinstance(s, MasksSinkConfig):
                outs += [(k, v) for k, v in (("png_dir", s.png_dir), ("rle_jsonl", s.rle_jsonl)) if v]
            for key, value in outs:
                norm = os.path.normpath(value)
                where = f"sinks.{i}.{key}"
                if norm in seen:
                    raise _at(where, f"{value!r} is also written by {seen[norm]}; allowed: a different output path")
                seen[norm] = where
        return self

    @property
    def sink_types(self) -> list[str]:
        """Kinds of the configured sinks, in order."""
        return [s.type for s in self.sinks]


# --------------------------------------------------------------------------- error formatting

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _show(v: Any, limit: int = 60) -> str:
    """Short printable form of a user value for an error message."""
    if isinstance(v, dict):
        text = "a mapping"
    elif isinstance(v, list):
        text = repr(v) if len(repr(v)) <= limit else "a list"
    elif v is None:
        text = "null"
    else:
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounds_text(info: FieldInfo, word: str) -> str | None:
    lo = hi = None
    lo_inc = hi_inc = True
    mult = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            lo, lo_inc = m.ge, True
        elif isinstance(m, annotated_types.Gt):
            lo, lo_inc = m.gt, False
        elif isinstance(m, annotated_types.Le):
            hi, hi_inc = m.le, True
        elif isinstance(m, annotated_types.Lt):
            hi, hi_inc = m.lt, False
        elif isinstance(m, annotated_types.MultipleOf):
            mult = m.multiple_of
    if lo is None and hi is None and mult is None:
        return None
    parts = []
    if lo is not None and hi is not None:
        parts.append(f"{word} {'>=' if lo_inc else '>'} {lo} and {'<=' if hi_inc else '<'} {hi}")
    elif lo is not None:
        parts.append(f"{word} {'>=' if lo_inc else '>'} {lo}")
    elif hi is not None:
        parts.append(f"{word} {'<=' if hi_inc else '<'} {hi}")
    else:
        parts.append(word)
    if mult is not None:
        parts.append(f"a multiple of {mult}")
    return ", ".join(parts)


def _allowed_for(info: FieldInfo | None, owner: type[BaseModel] | None = None) -> str:
    """Human text of what a field accepts, derived from its annotation and bounds."""
    if info is None:
        if owner is not None:
            return "keys " + ", ".join(owner.model_fields)
        return "see the pipeline reference"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "allowed" in extra:
        return str(extra["allowed"])
    ann = info.annotation
    optional = ann is not _unwrap_optional(ann)
    ann = _unwrap_optional(ann)
    text: str
    if typing.get_origin(ann) is Literal:
        text = "|".join(str(a) for a in typing.get_args(ann))
    elif ann in (int, float):
        word = "an integer" if ann is int else "a number"
        text = _bounds_text(info, word) or word
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        text = "a mapping with keys " + ", ".join(ann.model_fields)
    elif typing.get_origin(ann) is dict:
        text = "a mapping of option name to value"
    elif typing.get_origin(ann) is list:
        text = "a list"
    else:
        text = _TYPE_WORDS.get(ann, "see the pipeline reference")
    return text + (", or null" if optional else "")


def _sink_union_allowed() -> str:
    return "|".join(SINK_TYPES)


def _is_sink_union(ann: Any) -> bool:
    if typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) in (Union, types.UnionType):
        return set(typing.get_args(ann)) == set(SINK_TYPES.values())
    return False


class _Where:
    """Result of mapping a pydantic ``loc`` onto the schema."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.owner: type[BaseModel] | None = PipelineConfig  # model that holds the last key
        self.info: FieldInfo | None = None  # field info of the last key
        self.in_sink_slot = False  # loc ended on a sinks list item

    @property
    def path(self) -> str:
        return ".".join(self.parts) if self.parts else "(top level)"


def _locate(loc: Sequence[Any]) -> _Where:
    """Translate a pydantic error location into the YAML key path and the schema field."""
    w = _Where()
    ann: Any = PipelineConfig
    for item in loc:
        cur = _unwrap_optional(ann)
        if typing.get_origin(cur) is Annotated:
            cur = typing.get_args(cur)[0]
        w.in_sink_slot = False
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            w.owner = cur
            w.parts.append(str(item))
            w.info = cur.model_fields.get(str(item))
            ann = w.info.annotation if w.info is not None else None
        elif typing.get_origin(cur) in (list, tuple):
            w.parts.append(str(item))
            args = typing.get_args(cur)
            ann = args[0] if args else None
            if isinstance(item, int) and args and typing.get_origin(cur) is tuple and len(args) > item:
                ann = args[item]
            if _is_sink_union(ann):
                w.in_sink_slot = True
        elif typing.get_origin(cur) is dict:
            w.parts.append(str(item))
            ann = typing.get_args(cur)[1]
        elif _is_sink_union(cur):
            ann = SINK_TYPES.get(str(item))  # the discriminator tag pydantic inserts
            w.in_sink_slot = True
        else:
            # union member tags such as 'int' / 'str' / 'function-after[...]': not a YAML key
            ann = None
    return w


def _suggest(key: str, owner: type[BaseModel] | None) -> str:
    if owner is None:
        return ""
    close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _format_error(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error -> (key path, 'what is wrong; allowed: ...')."""
    etype = err["type"]
    msg = str(err.get("msg", ""))
    value = err.get("input")
    ctx = err.get("ctx") or {}
    w = _locate(err["loc"])

    if etype == "value_error":
        text = msg.removeprefix("Value error, ")
        if text.startswith(_MARK) and text.count(_MARK) >= 2:
            rel, text = text[1:].split(_MARK, 1)
            path = ".".join([*w.parts, rel])
            return path, text
        if "; allowed:" not in text:
            text += f"; allowed: {_allowed_for(w.info, w.owner)}"
        return w.path, text
    if etype == "extra_forbidden":
        key = w.parts[-1] if w.parts else "?"
        keys = ", ".join(w.owner.model_fields) if w.owner else "?"
        return w.path, f"unknown key{_suggest(key, w.owner)}; allowed: {keys}"
    if etype == "missing":
        return w.path, f"missing required key; allowed: {_allowed_for(w.info, w.owner)}"
    if etype == "union_tag_invalid":
        return f"{w.path}.type", f"unknown sink type {ctx.get('tag')!r}; allowed: {_sink_union_allowed()}"
    if etype == "union_tag_not_found":
        return f"{w.path}.type", f"missing sink type; allowed: {_sink_union_allowed()}"
    if etype in ("model_attributes_type", "model_type", "dict_type") or etype.endswith("_type") \
            or etype.endswith("_parsing") or etype == "int_from_float":
        if w.in_sink_slot:
            return w.path, f"expected a mapping with a type key, got {_show(value)}; allowed: a mapping with type {_sink_union_allowed()}"
        if etype in ("model_attributes_type", "model_type", "dict_type"):
            what = "a mapping"
        elif etype in ("list_type", "tuple_type"):
            what = "a list"
        else:
            what = msg.removeprefix("Input should be ").split(",")[0]
        return w.path, f"expected {what}, got {_show(value)}; allowed: {_allowed_for(w.info, w.owner)}"
    if etype == "literal_error":
        return w.path, f"invalid value {_show(value)}; allowed: {_allowed_for(w.info, w.owner)}"
    if etype in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"):
        return w.path, f"{_show(value)} is out of range; allowed: {_allowed_for(w.info, w.owner)}"
    if etype in ("too_long", "too_short"):
        n = ctx.get("actual_length")
        return w.path, f"has {n} items; allowed: {_allowed_for(w.info, w.owner)}"
    if etype == "string_pattern_mismatch":
        return w.path, f"invalid value {_show(value)}; allowed: {_allowed_for(w.info, w.owner)}"
    return w.path, f"{msg}; allowed: {_allowed_for(w.info, w.owner)}"


def _validation_lines(exc: ValidationError, origin: str, set_paths: Sequence[str] = ()) -> list[str]:
    """Pydantic errors -> one line per key path (unions can yield several errors for one key)."""
    by_path: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        path, text = _format_error(err)
        if path in by_path:
            continue
        if any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in set_paths):
            text = text.replace("; allowed:", " (from --set); allowed:", 1)
        by_path[path] = text
    return [f"{origin}: {p}: {t}" for p, t in by_path.items()]


# --------------------------------------------------------------------------- secrets

_SECRET_NAME = re.compile(r"PASS|PWD|SECRET|TOKEN|KEY|CRED|AUTH", re.IGNORECASE)


def _redact(text: str) -> str:
    """Use streamseg.urls.redact when present; otherwise hide URL user-info ourselves."""
    try:
        from streamseg.urls import redact  # noqa: PLC0415 (written by another helper)
    except ImportError:
        return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)
    return redact(text)


class _Scrubber:
    """Hides values that came from secret-looking environment variables, plus URL credentials."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, name: str, value: str) -> None:
        if _SECRET_NAME.search(name) and len(value) >= 2:
            self.values.add(value)

    def __call__(self, text: str) -> str:
        for v in sorted(self.values, key=len, reverse=True):
            text = text.replace(v, "***")
        return _redact(text)


# --------------------------------------------------------------------------- YAML loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        try:
            seen.add(key)
        except TypeError:
            pass
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, origin: str, what: str = "pipeline file") -> Any:
    """Parse a YAML config file; any problem (missing, unreadable, bad or duplicate key) is one
    ConfigError line naming the file and the line. Shared by pipeline and training configs."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: (file): {what} not found; allowed: a path to an existing YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{origin}: (file): cannot read the file ({e.__class__.__name__}); allowed: a readable UTF-8 YAML file") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown line)"
        problem = (e.problem or e.context or "syntax error").strip()
        if problem.startswith("duplicate key"):
            return_line = f"{origin}: {where}: {problem}; allowed: each key once per section"
        else:
            return_line = f"{origin}: {where}: YAML syntax error: {problem}; allowed: valid YAML (check indentation, colons and quotes)"
        raise ConfigError(return_line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: (file): YAML error: {e}; allowed: valid YAML") from None


# --------------------------------------------------------------------------- overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: missing '='; allowed: key.path=value, e.g. detector.conf=0.4")
    key, _, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(f"--set {text!r}: bad key path {key!r}; allowed: dotted YAML keys such as model.weights or sinks.0.path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: keep it as plain text (e.g. a lavfi graph with ':' and ',')
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], origin: str = "--set") -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a raw pipeline dict (a modified deep copy).

    Values are parsed as YAML scalars/lists (``[384,640]``, ``0.4``, ``true``, ``null``);
    numeric path parts index lists (``sinks.0.path``; index == length appends a new entry).
    Unknown keys are created here and then reported by validation under the same key path.
    """
    out = copy.deepcopy(raw)
    problems: list[str] = []
    for text in overrides:
        try:
            parts, value = _parse_override(text)
        except ValueError as e:
            problems.append(f"{origin}: {e}")
            continue
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[: depth + 1])
            nxt_is_index = not last and parts[depth + 1].isdigit()
            if isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = [] if nxt_is_index else {}
                    node = node[part]
            elif isinstance(node, list):
                if not part.isdigit() or int(part) > len(node):
                    problems.append(
                        f"{origin}: {here}: bad list index {part!r} (the list has {len(node)} entries) (from --set); "
                        f"allowed: 0..{len(node)} (the last one appends)"
                    )
                    break
                idx = int(part)
                if idx == len(node):
                    node.append([] if nxt_is_index else {})
                if last:
                    node[idx] = value
                else:
                    if node[idx] is None:
                        node[idx] = [] if nxt_is_index else {}
                    node = node[idx]
            else:
                parent = ".".join(parts[:depth])
                problems.append(
                    f"{origin}: {here}: {parent} is {_show(node)}, not a section (from --set); "
                    f"allowed: set {parent} itself or keys of a mapping"
                )
                break
    if problems:
        raise ConfigError(problems)
    return out


# --------------------------------------------------------------------------- env interpolation

_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(
    raw: Any,
    origin: str = "pipeline",
    env: typing.Mapping[str, str] | None = None,
    _scrub: _Scrubber | None = None,
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value (``$${`` gives a literal ``${``).

    A variable that is unset (and has no default) is a ConfigError naming the key path.
    """
    environ = os.environ if env is None else env
    problems: list[str] = []

    def sub(s: str, path: str) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            val = environ.get(name)
            if val is None or (val == "" and default is not None):
                if default is None:
                    problems.append(
                        f"{origin}: {path}: environment variable {name} is not set; "
                        f"allowed: export {name}=... or write ${{{name}:-default}}"
                    )
                    return m.group(0)
                val = default
            elif _scrub is not None:
                _scrub.add(name, val)
            return val

        return _ENV.sub(repl, s)

    def walk(node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, [*path, str(k)]) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, [*path, str(i)]) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return sub(node, ".".join(path) or "(top level)")
        return node

    out = walk(raw, [])
    if problems:
        raise ConfigError(problems)
    return out


# --------------------------------------------------------------------------- files


def _registry_names() -> set[str] | None:
    """Names in the weights registry (plus $STREAMSEG_WEIGHTS_REGISTRY), or None without that module."""
    try:
        from streamseg.models import weights as _w  # noqa: PLC0415 (imports torch: only when needed)
    except ImportError:
        return None
    except Exception:  # a broken registry must not break validation; fall back to the heuristic
        log.debug("weights registry failed to import", exc_info=True)
        return None
    loader = getattr(_w, "load_user_registry", None)
    if loader is not None:
        try:
            return {str(k) for k in loader()}
        except Exception:  # a bad user registry file is reported when the weights are resolved
            log.debug("user weights registry failed to load", exc_info=True)
    return {str(k) for k in getattr(_w, "REGISTRY", {})}


def _looks_like_path(s: str) -> bool:
    return "/" in s or "\\" in s or s.startswith(("~", ".")) or bool(Path(s).suffix)


def _path_problems(cfg: PipelineConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def exists(p: str) -> bool:
        return Path(p).expanduser().exists()

    src = cfg.source
    kind = src.kind
    if kind == "file":
        target = src.uri[len("file://"):] if src.uri.lower().startswith("file://") else src.uri
        p = Path(target).expanduser()
        if not p.is_file():
            what = "is a folder" if p.is_dir() else "file not found"
            out.append(("source.uri", f"{what} ({src.uri}, relative to {os.getcwd()}); "
                        "allowed: an existing video file, image folder, URL, device or lavfi graph"))
    elif kind == "images":
        p = Path(src.uri).expanduser()
        suffixes = _image_suffixes()
        if not p.is_dir():
            out.append(("source.uri", f"image folder not found ({src.uri}); allowed: an existing folder of images"))
        elif not any(f.suffix.lower() in suffixes for f in p.iterdir()):
            out.append(("source.uri", f"folder {src.uri} has no images; allowed: a folder with "
                        + "/".join(suffixes) + " files"))

    m = cfg.model
    if m.backend == "torch" and m.weights != "untrained" and not exists(m.weights):
        names = _registry_names()
        if names is None:
            ok = not _looks_like_path(m.weights)
            allowed_names = "a registry name"
        else:
            ok = m.weights in names
            allowed_names = "registry names " + ", ".join(sorted(names)) if names else "a registry name"
        if not ok:
            out.append(("model.weights", f"{m.weights!r} is not an existing file, a registry name or \"untrained\"; "
                        f"allowed: a checkpoint path, {allowed_names}, or untrained"))
    if m.onnx and not exists(m.onnx):
        out.append(("model.onnx", f"file not found ({m.onnx}); allowed: an .onnx file made by `streamseg export`"))

    d = cfg.detector
    if d.type == "boxes_file" and d.boxes_file and not Path(d.boxes_file).expanduser().is_file():
        out.append(("detector.boxes_file", f"file not found ({d.boxes_file}); allowed: an existing JSON-lines boxes file"))
    if d.type == "yolo" and ("/" in d.weights or "\\" in d.weights or d.weights.startswith(("~", "."))) \
            and not exists(d.weights):
        out.append(("detector.weights", f"file not found ({d.weights}); allowed: an existing .pt/.onnx file "
                    "or an ultralytics name such as yolo11n.pt"))
    return out


def validate_paths(cfg: PipelineConfig, origin: str = "pipeline") -> None:
    """Check that every input file the pipeline reads exists (relative to the CWD).

    Raises ConfigError with one line per missing input; outputs are not checked.
    """
    problems = _path_problems(cfg)
    if problems:
        raise ConfigError([_redact(f"{origin}: {k}: {t}") for k, t in problems])


# --------------------------------------------------------------------------- entry point


def _normalise_sections(raw: dict[str, Any]) -> dict[str, Any]:
    # A section whose keys are all commented out reads as null: treat it as "use the defaults".
    out = dict(raw)
    for name in ("detector", "runtime", "smoothing", "logging", "metrics"):
        if name in out and out[name] is None:
            del out[name]
    if "sinks" in out and out["sinks"] is None:
        out["sinks"] = []
    return out


def config_from_dict(
    raw: Any,
    origin: str = "pipeline",
    overrides: Sequence[str] = (),
    check_files: bool = True,
    env: typing.Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Validate an already-parsed pipeline mapping (same rules and messages as :func:`load_pipeline`)."""
    scrub = _Scrubber()
    try:
        if raw is None:
            raise ConfigError(f"{origin}: (top level): the file is empty; allowed: a mapping with keys "
                              + ", ".join(PipelineConfig.model_fields))
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: (top level): expected a mapping of sections, got {_show(raw)}; "
                              "allowed: a mapping with keys " + ", ".join(PipelineConfig.model_fields))
        raw = apply_overrides(raw, list(overrides), origin=origin)
        raw = interpolate_env(raw, origin=origin, env=env, _scrub=scrub)
        raw = _normalise_sections(raw)
        set_paths = [o.partition("=")[0].strip() for o in overrides]
        try:
            cfg = PipelineConfig.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(_validation_lines(e, origin, set_paths)) from None
        if check_files:
            problems = _path_problems(cfg)
            if problems:
                raise ConfigError([f"{origin}: {k}: {t}" for k, t in problems])
        return cfg
    except ConfigError as e:
        raise ConfigError([scrub(line) for line in e.lines]) from None


def load_pipeline(
    path: str | Path,
    overrides: Sequence[str] = (),
    check_files: bool = True,
) -> PipelineConfig:
    """Read, override, interpolate and validate a pipeline YAML file.

    Order: YAML -> ``--set`` overrides -> ``${VAR}`` interpolation -> schema -> input files.
    Raises ConfigError (one line per problem, secrets redacted).
    """
    origin = str(path)
    raw = read_yaml(Path(path), origin)
    return config_from_dict(raw, origin=origin, overrides=overrides, check_files=check_files)


# --------------------------------------------------------------------------- reporting


def redacted_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """JSON-ready dump of the config with URL credentials hidden (for metrics/logs)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return _redact(node)
        return node

    return walk(cfg.model_dump(mode="json"))


def summary_lines(cfg: PipelineConfig) -> list[str]:
    """A few human lines describing the pipeline (used by ``streamseg validate``)."""
    s, d, m, r = cfg.source, cfg.detector, cfg.model, cfg.runtime
    live = "live" if s.is_live else "file"
    lines = [
        f"source:    {s.kind} {s.uri} ({live})",
        f"detector:  {d.type}" + (f" {d.weights}" if d.type == "yolo" else "")
        + f", conf {d.conf}, tracker {d.tracker}, classes {d.classes}",
        f"model:     {m.name}, weights {m.weights}, input {m.input_size[0]}x{m.input_size[1]}, backend {m.backend}",
        f"runtime:   {r.device} {r.precision}, batch_frames {r.batch_frames}",
        "smoothing: " + (f"on (alpha {cfg.smoothing.alpha})" if cfg.smoothing.enabled else "off"),
    ]
    if not cfg.sinks:
        lines.append("sinks:     none (metrics only)")
    for i, sk in enumerate(cfg.sinks):
        if isinstance(sk, VideoSinkConfig):
            what = f"{sk.path} ({sk.codec} crf {sk.crf})"
        elif isinstance(sk, MasksSinkConfig):
            what = ", ".join(x for x in (sk.png_dir, sk.rle_jsonl) if x)
        elif isinstance(sk, EventsSinkConfig):
            what = sk.path
        elif isinstance(sk, DisplaySinkConfig):
            what = f"window {sk.window!r}"
        else:
            what = f"{sk.url} ({sk.transport})"
        lines.append(f"sinks.{i}:   {sk.type} -> {what}")
    return [_redact(line) for line in lines]


def schema_reference() -> list[tuple[str, str, str, str]]:
    """Every pipeline key as (key.path, default, allowed, description), for docs."""
    rows: list[tuple[str, str, str, str]] = []

    def default_text(info: FieldInfo) -> str:
        if info.is_required():
            return "(required)"
        val = info.get_default(call_default_factory=True)
        if isinstance(val, BaseModel):
            return "(section)"
        if isinstance(val, tuple):
            val = list(val)
        if isinstance(val, bool):
            return "true" if val else "false"
        return "null" if val is None else str(val)

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            ann = _unwrap_optional(info.annotation)
            rows.append((key, default_text(info), _allowed_for(info, model), info.description or ""))
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
            elif name == "sinks" and model is PipelineConfig:
                for tag, sm in SINK_TYPES.items():
                    rows.append((f"sinks[].type={tag}", "", "", sm.__doc__ or ""))
                    for sname, sinfo in sm.model_fields.items():
                        if sname == "type":
                            continue
                        sann = _unwrap_optional(sinfo.annotation)
                        rows.append((f"sinks[{tag}].{sname}", default_text(sinfo), _allowed_for(sinfo, sm),
                                     sinfo.description or ""))
                        if isinstance(sann, type) and issubclass(sann, BaseModel):
                            walk(sann, f"sinks[{tag}].{sname}.")

    walk(PipelineConfig, "")
    return rows
