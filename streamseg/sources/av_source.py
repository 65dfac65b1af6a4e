"""PyAV (FFmpeg) backend: video files, HTTP/HLS, RTSP, webcams (v4l2/avfoundation/dshow), lavfi.

Every input kind runs the same decode code; only the FFmpeg input format and options differ,
which is why a lavfi virtual camera exercises the webcam path in tests.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import av.error

from streamseg.errors import SourceError
from streamseg.sources.base import RawFrame, VideoSource
from streamseg.sources.reconnect import ReconnectPolicy
from streamseg.urls import redact

__all__ = ["AvSource", "webcam_device"]

log = logging.getLogger("streamseg.sources")

# PyAV ignores FFmpeg's own log by default (av.logging level None); we keep it that way so the
# library never prints to the terminal. Users who debug can call av.logging.set_level(...).

_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
# after this many decode errors in a row a live stream counts as broken and is reopened
_MAX_CONSECUTIVE_DECODE_ERRORS = 50


def _default_webcam_format() -> str:
    if sys.platform == "darwin":
        return "avfoundation"
    if sys.platform.startswith("win"):
        return "dshow"
    return "v4l2"


def webcam_device(uri: str, fmt: str) -> str:
    """Map a camera given as an index ('0') or a device string to what FFmpeg's ``fmt`` expects."""
    s = str(uri).strip()
    if s.startswith("webcam:"):
        s = s[len("webcam:") :]
    if s.isdigit():
        if fmt in ("v4l2", "video4linux2"):
            return f"/dev/video{int(s)}"
        if fmt == "avfoundation":
            return f"{int(s)}:none"
        if fmt == "dshow":
            raise SourceError(
                f"camera index {s} cannot be used with dshow; name the device, e.g. "
                f"source.uri='video=Integrated Camera' "
                f"(list them with ffmpeg -list_devices true -f dshow -i dummy)"
            )
    return s


class AvSource(VideoSource):
    """A source read through ``av.open``; see :func:`streamseg.sources.open_source`."""

    def __init__(
        self,
        uri: str,
        kind: str,
        *,
        format: str | None = None,
        options: dict[str, str] | None = None,
        live: bool = False,
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
    ):
        super().__init__(
            uri,
            kind,
            live=live,
            queue_size=queue_size,
            reconnect=reconnect,
            max_frames=max_frames,
            loop=loop,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        if transport not in _TRANSPORTS:
            raise SourceError(
                f"source.transport must be one of {', '.join(_TRANSPORTS)}; got {transport!r}"
            )
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise SourceError("source.open_timeout_s and source.read_timeout_s must be > 0")
        self.format = format
        self.threads = threads
        self._target = uri
        opts: dict[str, str] = {}
        if kind == "webcam":
            self.format = format or _default_webcam_format()
            self._target = webcam_device(uri, self.format)
            if self.format != "lavfi":  # lavfi would apply these to the codec, not the graph
                if size is not None:
                    opts["video_size"] = f"{int(size[0])}x{int(size[1])}"
                if fps is not None:
                    opts["framerate"] = f"{float(fps):g}"
        elif kind == "rtsp":
            opts.update(
                {
                    "rtsp_transport": transport,
                    # socket I/O timeout in MICROseconds (bundled FFmpeg 8: "timeout")
                    "timeout": str(int(read_timeout_s * 1e6)),
                    # open fast: wait for the next keyframe instead of probing ~25 frames
                    "analyzeduration": "0",
                    "probesize": "32768",
                }
            )
        elif kind == "http":
            opts["rw_timeout"] = str(int(read_timeout_s * 1e6))
        elif kind == "lavfi":
            self.format = "lavfi"
        opts.update({str(k): str(v) for k, v in (options or {}).items()})
        self._options = opts
        self._read_timeout = read_timeout_s
        if self.live and self.reconnect.enabled:
            self._read_timeout = min(read_timeout_s, self.reconnect.stall_timeout_s)

    # ------------------------------------------------------------------ hooks
    def _is_permanent(self, exc: BaseException) -> bool:
        if isinstance(exc, SourceError):
            return True
        if self.kind in ("rtsp", "http"):
            return False  # the camera or server may come back
        if self.kind == "webcam":
            # a device that does not exist or is not a camera will not start working by retrying
            return getattr(exc, "errno", None) in (
                errno.ENOENT,
                errno.ENOTTY,
                errno.EACCES,
                errno.EPERM,
                errno.ENODEV,
            )
        return True

    def _describe_error(self, exc: BaseException) -> str:
        msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        name = type(exc).__name__
        return redact(f"{name}: {msg}")

    def _connect(self) -> Any:
        if self.kind == "file" and "://" not in self._target and not Path(self._target).exists():
            raise SourceError(f"video file {self._target} not found (source.uri)")
        if self.kind == "webcam" and self.format in ("v4l2", "video4linux2"):
            if not Path(self._target).exists():
                raise SourceError(
                    f"camera {self._target} not found (no such device; plug it in, pass the right "
                    f"index/path in source.uri, or check `ls /dev/video*`)"
                )
        t0 = time.monotonic()
        try:
            container = av.open(
                self._target,
                mode="r",
                format=self.format,
                options=dict(self._options),
                timeout=(self.open_timeout_s, self._read_timeout),
            )
        except av.error.FileNotFoundError as exc:
            if self.kind == "webcam":
                raise SourceError(f"camera {self._target} not found ({exc.strerror})") from None
            if self.kind == "file":
                raise SourceError(f"video file {self._target} not found (source.uri)") from None
            raise
        except av.error.InvalidDataError as exc:
            took = time.monotonic() - t0
            # the socket timeout (read_timeout_s) or PyAV's open timeout fired
            if self.kind in ("rtsp", "http") and took >= 0.9 * min(
                self.open_timeout_s, self.read_timeout_s
            ):
                raise TimeoutError(f"no answer within {took:.1f} s") from exc
            if self.kind == "file":
                raise SourceError(
                    f"video file {redact(self._target)} cannot be read: {exc.strerror}"
                ) from None
            raise
        except av.error.ValueError as exc:
            if self.kind == "lavfi" or self.format == "lavfi":
                raise SourceError(f"invalid lavfi graph {self._target!r}: {exc.strerror}") from None
            raise
        try:
            if not container.streams.video:
                raise SourceError(f"{self.kind} source {redact(self._target)} has no video stream")
            stream = container.streams.video[0]
            if self.threads and not self.live:
                stream.thread_type = "AUTO"  # frame threading: throughput for files
            # live: default threading, frame threading adds ~2 frames of latency
            self._describe(container, stream)
        except BaseException:
            container.close()
            raise
        log.debug("source %s: opened (%s)", self._uri_safe, self._info)
        return container, stream

    def _describe(self, container: Any, stream: Any) -> None:
        cc = stream.codec_context
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = Fraction(fps) if fps else None
        frames = int(stream.frames or 0) or None  # header count; None when the container has none
        if frames is not None and self.max_frames is not None:
            frames = min(frames, self.max_frames)
        self._set_stream_info(
            width=int(cc.width) or None,
            height=int(cc.height) or None,
            fps=fps,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
            codec=cc.name,
            has_audio=bool(container.streams.audio),
            frame_count=frames if not (self.live or self.loop) else None,
        )

    def _frames(self, handle: Any) -> Iterator[RawFrame | None]:
        container, stream = handle
        first = True
        bad_in_row = 0
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except (av.error.InvalidDataError, av.error.ValueError, av.error.OSError) as exc:
                self._count_decode_error()
                bad_in_row += 1
                log.debug("source %s: decode error: %s", self._uri_safe, self._describe_error(exc))
                if self.live and bad_in_row >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise
                yield None
                continue
            if not decoded:
                yield None
                continue
            bad_in_row = 0
            for frame in decoded:
                image = frame.to_ndarray(format="rgb24")
                if first:
                    first = False
                    h, w = image.shape[:2]
                    if (w, h) != (self._info.width, self._info.height):
                        self._info.width, self._info.height = w, h
                pts = frame.pts
                if pts is None:
                    pts = getattr(frame, "dts", None)
                yield image, pts, frame.time_base or stream.time_base

    def _disconnect(self, handle: Any) -> None:
        container, _ = handle
        container.close()
