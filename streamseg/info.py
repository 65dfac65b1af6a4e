"""``streamseg info``: what this machine can do (versions, devices, encoders, inputs, display).

Encoders are reported as usable only if they actually open: FFmpeg builds list hardware
encoders (h264_nvenc, qsv, ...) that fail at ``avcodec_open2`` without the driver.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import sys
from fractions import Fraction
from typing import Any, Iterator

log = logging.getLogger(__name__)

ENCODERS_OF_INTEREST = (
    "libx264", "h264_nvenc", "h264_qsv", "h264_vaapi", "h264_videotoolbox", "h264_amf",
    "h264_v4l2m2m", "libx265", "hevc_nvenc", "av1_nvenc", "libsvtav1", "libvpx-vp9", "mpeg4", "mjpeg",
)
INPUT_FORMATS_OF_INTEREST = ("v4l2", "avfoundation", "dshow", "lavfi", "x11grab", "gdigrab")
PACKAGES = (
    ("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"), ("av", "av"),
    ("ultralytics", "ultralytics"), ("opencv", None), ("onnxruntime", "onnxruntime"),
    ("onnx", "onnx"), ("numpy", "numpy"), ("pydantic", "pydantic"), ("pycocotools", "pycocotools"),
)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """Versions of streamseg, Python and the libraries it relies on (None = not installed)."""
    import streamseg

    out: dict[str, Any] = {"streamseg": streamseg.__version__, "python": platform.python_version()}
    for key, dist in PACKAGES:
        if key == "opencv":
            try:
                import cv2

                out["opencv"] = cv2.__version__
                out["opencv_hog"] = hasattr(cv2, "HOGDescriptor")
            except ImportError:
                out["opencv"] = None
                out["opencv_hog"] = False
            continue
        out[key] = _dist_version(dist) if dist else None
    try:
        import av

        out["ffmpeg"] = getattr(av, "ffmpeg_version_info", None)
        out["ffmpeg_libraries"] = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    except ImportError:
        out["ffmpeg"] = None
        out["ffmpeg_libraries"] = {}
    return out


def devices() -> dict[str, Any]:
    """CPU cores, memory and CUDA devices (name, memory, capability)."""
    out: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        import psutil

        out["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        out["memory_gib"] = None
    cuda: list[dict[str, Any]] = []
    out["cuda_available"] = False
    out["torch_cuda"] = None
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["cuda_available"] = True
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                cuda.append({
                    "index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                })
        out["mps_available"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except ImportError:
        pass
    out["cuda"] = cuda
    try:
        import onnxruntime

        out["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        out["onnxruntime_providers"] = []
    return out


def _try_open_encoder(name: str) -> tuple[bool, str]:
    """Open ``name`` on a small frame size; hardware encoders without a driver fail here."""
    import av

    try:
        ctx = av.CodecContext.create(name, "w")
    except Exception as e:  # noqa: BLE001 - any failure means "not usable"
        return False, f"{type(e).__name__}: {e}"
    try:
        ctx.width, ctx.height = 256, 256
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        formats = [f.name for f in (ctx.codec.video_formats or [])]
        if name == "mjpeg":
            ctx.pix_fmt = "yuvj420p"
        elif "yuv420p" in formats or not formats:
            ctx.pix_fmt = "yuv420p"
        else:
            ctx.pix_fmt = formats[0]
        ctx.open()
        return True, "ok"
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"
    finally:
        try:
            ctx.close()
        except Exception:  # noqa: BLE001 - closing an unopened context is harmless
            pass


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C libraries (x265, SVT-AV1) that print banners straight to fd 2 when opened."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured stderr without a real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def encoders() -> dict[str, dict[str, Any]]:
    """For each encoder of interest: listed in this FFmpeg build, and whether it really opens."""
    try:
        import av
    except ImportError:
        return {}
    available = set(av.codecs_available)
    out: dict[str, dict[str, Any]] = {}
    for name in ENCODERS_OF_INTEREST:
        if name not in available:
            out[name] = {"listed": False, "opens": False, "detail": "not in this FFmpeg build"}
            continue
        with _quiet_stderr():
            ok, detail = _try_open_encoder(name)
        out[name] = {"listed": True, "opens": ok, "detail": detail}
    return out


def input_formats() -> dict[str, bool]:
    """Capture/virtual input formats (camera APIs, lavfi) present in the bundled FFmpeg."""
    try:
        import av
    except ImportError:
        return {}
    names: set[str] = set()
    for entry in av.formats_available:
        names.update(entry.split(","))
    return {fmt: fmt in names for fmt in INPUT_FORMATS_OF_INTEREST}


def display() -> dict[str, Any]:
    """Whether a `display` sink can open a window here."""
    out: dict[str, Any] = {"opencv_gui": None}
    try:
        import cv2

        for line in cv2.getBuildInformation().splitlines():
            if line.strip().startswith("GUI:"):
                out["opencv_gui"] = line.split(":", 1)[1].strip()
                break
    except ImportError:
        pass
    if sys.platform.startswith("linux"):
        out["env"] = {k: os.environ[k] for k in ("DISPLAY", "WAYLAND_DISPLAY") if os.environ.get(k)}
        has_screen = bool(out["env"])
    else:  # macOS / Windows desktops always have a window system
        out["env"] = {}
        has_screen = True
    gui = out["opencv_gui"]
    out["available"] = bool(has_screen and gui and gui.upper() not in ("NONE", "NO"))
    return out


def gather() -> dict[str, Any]:
    """Everything ``streamseg info`` reports, as a JSON-ready dict."""
    return {
        "versions": versions(),
        "devices": devices(),
        "encoders": encoders(),
        "input_formats": input_formats(),
        "display": display(),
    }


def format_text(info: dict[str, Any]) -> str:
    """Human-readable form of :func:`gather`."""
    v, d = info["versions"], info["devices"]
    lines = ["versions:"]
    for k, val in v.items():
        if k == "ffmpeg_libraries":
            continue
        lines.append(f"  {k:<28} {val if val is not None else 'not installed'}")
    libs = v.get("ffmpeg_libraries") or {}
    if libs:
        lines.append("  ffmpeg libraries             " + ", ".join(f"{k} {val}" for k, val in libs.items()))
    lines.append("devices:")
    lines.append(f"  cpu cores                    {d.get('cpu_count')} ({d.get('cpu_usable')} usable)")
    if d.get("memory_gib") is not None:
        lines.append(f"  memory                       {d['memory_gib']} GiB")
    if d.get("cuda"):
        for g in d["cuda"]:
            lines.append(f"  cuda:{g['index']:<23} {g['name']}, {g['memory_gib']} GiB, sm {g['capability']}")
    else:
        lines.append(f"  cuda                         none (torch built for CUDA {d.get('torch_cuda') or 'no'})")
    if d.get("onnxruntime_providers"):
        lines.append("  onnxruntime providers        " + ", ".join(d["onnxruntime_providers"]))
    lines.append("encoders (listed / opens):")
    for name, e in info["encoders"].items():
        state = "yes" if e["opens"] else ("listed, fails to open" if e["listed"] else "not built in")
        lines.append(f"  {name:<28} {state}")
    lines.append("input formats:")
    for name, ok in info["input_formats"].items():
        lines.append(f"  {name:<28} {'yes' if ok else 'no'}")
    disp = info["display"]
    lines.append("display:")
    lines.append(f"  window possible              {'yes' if disp['available'] else 'no'}"
                 f" (opencv GUI {disp.get('opencv_gui') or 'unknown'}, "
                 f"{', '.join(f'{k}={v}' for k, v in disp.get('env', {}).items()) or 'no DISPLAY'})")
    return "\n".join(lines)
