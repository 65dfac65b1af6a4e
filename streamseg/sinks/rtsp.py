"""RTSP publisher sink: annotated frames out as low-latency H.264 to an RTSP server (mediamtx-like).

Publishing must never stall the pipeline. ``write()`` only queues (newest wins, bounded) and a
writer thread encodes and muxes. When the server goes away (refused, broken pipe, or a mux that
blocks longer than ``mux_timeout_s``) frames are dropped and counted while it is down, and the
writer republishes with exponential back-off in a fresh session that starts with a keyframe.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import av
import av.error
import numpy as np

from streamseg.errors import SinkError
from streamseg.records import Frame
from streamseg.sources.reconnect import OutageLog, ReconnectPolicy
from streamseg.urls import redact

__all__ = ["RtspSink", "RtspSinkStats"]

log = logging.getLogger("streamseg.sinks.rtsp")

# drop reasons
DROP_QUEUE_FULL = "queue_full"  # the encoder fell behind; the oldest queued frame made room
DROP_SERVER_DOWN = "server_down"  # no session to the server (between reconnect attempts)
DROP_MUX_STALLED = "mux_stalled"  # the server stopped reading for longer than mux_timeout_s

_PTS_TB = Fraction(1, 1000)  # encoder time base: milliseconds of source time


@dataclass
class RtspSinkStats:
    """Counters of the publisher; ``dropped`` maps a reason to a count."""

    frames_in: int = 0
    frames_published: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    outages: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0

    @property
    def frames_dropped(self) -> int:
        return int(sum(self.dropped.values()))


class _Session:
    """One RTSP publishing session: container + encoder; the connection opens at the first mux."""

    def __init__(self, sink: "RtspSink"):
        self.sink = sink
        opts = {"rtsp_transport": sink.transport, "timeout": str(int(sink.mux_timeout_s * 1e6))}
        self.out = av.open(sink.url, mode="w", format="rtsp", options=opts)
        st = self.out.add_stream("libx264", rate=sink.rate)
        st.width, st.height, st.pix_fmt = sink.width, sink.height, "yuv420p"
        st.codec_context.time_base = _PTS_TB
        eopts = {
            "preset": sink.preset,
            "tune": "zerolatency",
            "bf": "0",
            "g": str(sink.gop),
            "keyint_min": str(sink.gop),
        }
        if sink.bitrate:
            st.codec_context.bit_rate = int(sink.bitrate)
            eopts.update({"maxrate": str(int(sink.bitrate)), "bufsize": str(int(sink.bitrate))})
        st.options = eopts
        self.stream = st
        self.t0: float | None = None
        self.last_pts: int | None = None
        self.frames = 0

    def send(self, frame: Frame, image: np.ndarray) -> None:
        t = frame.time if frame.time is not None else frame.capture_time
        if self.t0 is None:
            self.t0 = t
        pts = round((t - self.t0) / _PTS_TB)
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf = vf.reformat(width=self.sink.width, height=self.sink.height, format="yuv420p")
        vf.pts, vf.time_base = pts, _PTS_TB
        packets = self.stream.encode(vf)
        for p in packets:
            self.out.mux(p)  # first call connects (ANNOUNCE/RECORD): errors surface here
        self.last_pts = pts
        self.frames += 1

    def close(self, flush: bool) -> None:
        try:
            if flush and self.frames:
                for p in self.stream.encode(None):
                    self.out.mux(p)
        finally:
            self.out.close()


class RtspSink:
    """Publish annotated RGB frames to ``url`` (e.g. ``rtsp://host:8554/out``) as H.264.

    ``on_published(frame, t)`` is called in the writer thread with the wall-clock time the
    frame's packets left ``mux()``; :attr:`publish_times` keeps the recent
    ``(frame.index, frame.capture_time, t)`` for capture-to-publish latency.
    """

    def __init__(
        self,
        url: str,
        *,
        width: int,
        height: int,
        fps: Fraction | float,
        transport: str = "tcp",
        preset: str = "ultrafast",
        gop: int | None = None,
        bitrate: int | None = None,
        reconnect: ReconnectPolicy | None = None,
        mux_timeout_s: float = 3.0,
        queue_size: int = 4,
        on_published: Callable[[Frame, float], None] | None = None,
    ):
        if not str(url).lower().startswith(("rtsp://", "rtsps://")):
            raise SinkError(
                f"rtsp sink url must start with rtsp:// or rtsps://, got {redact(str(url))!r}"
            )
        if transport not in ("tcp", "udp"):
            raise SinkError(f"rtsp sink transport must be tcp or udp, got {transport!r}")
        if width <= 0 or height <= 0:
            raise SinkError(f"rtsp sink size must be positive, got {width}x{height}")
        rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001000)
        if rate <= 0:
            raise SinkError(f"rtsp sink fps must be > 0, got {fps}")
        if mux_timeout_s <= 0 or queue_size < 1:
            raise SinkError("rtsp sink mux_timeout_s must be > 0 and queue_size >= 1")
        self.url = url
        self.url_safe = redact(url)
        self.width = int(width) - int(width) % 2
        self.height = int(height) - int(height) % 2
        self.rate = rate
        self.transport = transport
        self.preset = preset
        self.gop = int(gop) if gop else max(1, round(float(rate)))  # 1 s of frames
        self.bitrate = bitrate
        self.reconnect = reconnect or ReconnectPolicy()
        self.mux_timeout_s = float(mux_timeout_s)
        self.on_published = on_published
        self.publish_times: collections.deque[tuple[int, float, float]] = collections.deque(
            maxlen=100_000
        )
        self._q: collections.deque[tuple[Frame, np.ndarray]] = collections.deque()
        self._maxq = int(queue_size)
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._stats = RtspSinkStats()
        self._outages = OutageLog(f"rtsp sink {self.url_safe}", log)
        self._closing = False
        self._closed = False
        self._mux_since: float | None = None  # monotonic time the writer entered send()
        self._fatal: str | None = None  # a configuration error that ended the writer
        self._thread = threading.Thread(target=self._run, name="rtsp-sink", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> RtspSinkStats:
        with self._lock:
            s = RtspSinkStats(
                self._stats.frames_in, self._stats.frames_published, dict(self._stats.dropped)
            )
        s.outages = self._outages.snapshot()
        s.reconnects = self._outages.reconnects
        return s

    @property
    def connected(self) -> bool:
        return not self._outages.active

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Queue one annotated frame (RGB uint8 HxWx3); never blocks on the network."""
        if self._closing:
            raise SinkError(f"rtsp sink {self.url_safe} is closed")
        if self._fatal is not None:
            raise SinkError(self._fatal)
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise SinkError(f"rtsp sink expects RGB uint8 HxWx3, got {img.dtype} {img.shape}")
        with self._lock:
            self._stats.frames_in += 1
        since = self._mux_since
        if since is not None and time.monotonic() - since > self.mux_timeout_s:
            # watchdog: the server stopped reading; keep the pipeline moving
            self._outages.begin(f"mux stalled for more than {self.mux_timeout_s:g} s")
            self._drop(DROP_MUX_STALLED)
            return
        with self._cond:
            if len(self._q) >= self._maxq:
                self._q.popleft()
                self._drop(DROP_QUEUE_FULL)
            self._q.append((frame, np.array(img, copy=True)))
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Publish what is queued (bounded by ``mux_timeout_s``), end the session (idempotent)."""
        if self._closed:
            return
        self._closing = True
        with self._cond:
            self._cond.notify_all()
        self._thread.join(self.mux_timeout_s * 2 + 1.0 if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning(
                "rtsp sink %s: writer still blocked in the network after close", self.url_safe
            )
        self._closed = True

    def __enter__(self) -> "RtspSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._stats.dropped[reason] = self._stats.dropped.get(reason, 0) + n

    def _next(self) -> tuple[Frame, np.ndarray] | None:
        with self._cond:
            while not self._q and not self._closing:
                self._cond.wait(0.1)
            return self._q.popleft() if self._q else None

    def _run(self) -> None:
        session: _Session | None = None
        attempt = 0  # failed connection attempts in the current outage
        next_try = 0.0
        drain_deadline: float | None = None
        try:
            while True:
                if self._closing and drain_deadline is None:
                    drain_deadline = time.monotonic() + self.mux_timeout_s
                item = self._next()
                if item is None:
                    break
                frame, image = item
                if drain_deadline is not None and (
                    time.monotonic() > drain_deadline or session is None
                ):
                    self._drop(DROP_SERVER_DOWN if session is None else DROP_QUEUE_FULL)
                    continue
                if session is None:
                    if time.monotonic() < next_try or not self.reconnect.enabled and attempt > 0:
                        self._drop(DROP_SERVER_DOWN)
                        continue
                    try:
                        session = _Session(self)
                    except (av.error.FFmpegError, OSError, ValueError) as exc:
                        raise SinkError(f"rtsp sink {self.url_safe}: {redact(str(exc))}") from None
                stalled = False
                try:
                    self._mux_since = time.monotonic()
                    session.send(frame, image)
                    took = time.monotonic() - self._mux_since
                    stalled = took > self.mux_timeout_s
                except (av.error.FFmpegError, OSError) as exc:  # refused, broken pipe, 404, timeout
                    reason = redact(
                        f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
                    )
                    self._lost(session, reason)
                    session = None
                    self._drop(DROP_SERVER_DOWN)
                    attempt += 1
                    if (
                        self.reconnect.max_attempts is not None
                        and attempt >= self.reconnect.max_attempts
                    ):
                        self._outages.end(attempt, recovered=False)
                        log.error("rtsp sink %s: not publishing any more", self.url_safe)
                        next_try = float("inf")
                    else:
                        next_try = time.monotonic() + self.reconnect.delay(attempt - 1)
                    continue
                finally:
                    self._mux_since = None
                if stalled:
                    # the server stopped reading for a while: start a fresh session
                    self._outages.begin(f"mux stalled for more than {self.mux_timeout_s:g} s")
                    self._lost(session, None)
                    session = None
                    attempt, next_try = 1, time.monotonic() + self.reconnect.delay(0)
                    continue
                t = time.time()
                with self._lock:
                    self._stats.frames_published += 1
                self.publish_times.append((frame.index, frame.capture_time, t))
                if self._outages.active:
                    self._outages.end(max(attempt, 1))
                attempt = 0
                if self.on_published is not None:
                    try:
                        self.on_published(frame, t)
                    except Exception:  # noqa: BLE001 - a metrics hook must not stop publishing
                        log.exception("rtsp sink on_published callback failed")
        except SinkError as exc:
            self._fatal = str(exc)
            log.error("%s", exc)
        except Exception:  # noqa: BLE001 - never die silently
            log.exception("rtsp sink %s: writer crashed", self.url_safe)
        finally:
            if session is not None:
                try:
                    session.close(flush=True)
                except Exception:  # noqa: BLE001 - the server may be gone at close
                    log.debug("rtsp sink: error closing session", exc_info=True)
            with self._cond:
                n = len(self._q)
                self._q.clear()
            if n:
                self._drop(DROP_SERVER_DOWN, n)

    def _lost(self, session: _Session, reason: str | None) -> None:
        if reason is not None:
            self._outages.begin(reason)
        try:
            session.close(flush=False)
        except Exception:  # noqa: BLE001 - closing a dead session may fail
            pass
