"""Video sources: files, image folders, webcams, RTSP/HTTP streams and lavfi graphs.

``open_source`` picks the backend from the URI; every source decodes in its own thread and
hands out :class:`streamseg.records.Frame` records (RGB uint8) through ``read()``.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamseg.errors import SourceError
from streamseg.sources.av_source import AvSource
from streamseg.sources.base import SourceInfo, SourceStats, VideoSource
from streamseg.sources.images import ImageFolderSource
from streamseg.sources.reconnect import ReconnectPolicy
from streamseg.urls import redact

__all__ = [
    "open_source",
    "detect_kind",
    "VideoSource",
    "SourceInfo",
    "SourceStats",
    "ReconnectPolicy",
    "KINDS",
]

KINDS = ("auto", "file", "images", "webcam", "rtsp", "http", "lavfi")
_WEBCAM_FORMATS = {"v4l2", "video4linux2", "avfoundation", "dshow", "vfwcap"}
_RTSP_SCHEMES = {"rtsp", "rtsps", "rtspt"}
_NET_SCHEMES = {"http", "https", "rtmp", "rtmps", "srt", "udp", "tcp", "hls"}


def detect_kind(uri: str, format: str | None = None) -> str:
    """Guess the source kind from the URI (and the FFmpeg input format, when one is named)."""
    fmt = (format or "").lower()
    if fmt == "lavfi":
        return "lavfi"
    if fmt in _WEBCAM_FORMATS:
        return "webcam"
    s = str(uri).strip()
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", s)
    if m:
        scheme = m.group(1).lower()
        if scheme in _RTSP_SCHEMES:
            return "rtsp"
        if scheme in _NET_SCHEMES:
            return "http"
        if scheme == "file":
            return "file"
        return "http"
    if s.isdigit() or re.match(r"^/dev/video\d+$", s) or s.startswith("webcam:"):
        return "webcam"
    if Path(s).is_dir():
        return "images"
    return "file"


def open_source(
    uri: str,
    *,
    kind: str = "auto",
    format: str | None = None,
    options: dict[str, str] | None = None,
    live: bool | None = None,
    queue_size: int = 8,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    reconnect: ReconnectPolicy | None = None,
    max_frames: int | None = None,
    loop: bool = False,
    threads: bool = True,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
) -> VideoSource:
    """Create (not start) the source for ``uri``; call ``start()`` or just ``read()``.

    ``live=None`` decides from the kind: rtsp/http/webcam and lavfi graphs with ``realtime`` are
    live (newest frame wins, reconnect on loss); files and image folders are not (back-pressure,
    no frame dropped). ``reconnect=None`` means the default policy for live sources and none for
    files. ``fps`` is the image-folder rate or the webcam's requested rate; ``size`` (w, h) the
    webcam's requested size.
    """
    if kind not in KINDS:
        raise SourceError(f"source.kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if not str(uri).strip():
        raise SourceError(
            "source.uri is empty; give a file, folder, camera index/device or stream URL"
        )
    k = detect_kind(uri, format) if kind == "auto" else kind
    if live is None:
        if k in ("rtsp", "http", "webcam"):
            live = True
        elif k == "lavfi":
            live = "realtime" in str(uri)
        else:
            live = False
    if k == "images":
        if live:
            raise SourceError(f"an image folder cannot be a live source: {redact(str(uri))}")
        return ImageFolderSource(
            str(uri), fps=fps, queue_size=queue_size, max_frames=max_frames, loop=loop
        )
    return AvSource(
        str(uri),
        k,
        format=format,
        options=options,
        live=live,
        queue_size=queue_size,
        transport=transport,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
        reconnect=reconnect,
        max_frames=max_frames,
        loop=loop,
        threads=threads,
        size=size,
        fps=fps,
    )
