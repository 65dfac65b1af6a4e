"""The decode-thread machinery every source shares: queue policies, timestamps, reconnects, stats.

A source decodes in its own thread so that I/O and decoding overlap with the model. Two queue
policies exist because the two kinds of input need opposite things:

* files and image folders: a bounded queue with back-pressure; the decoder waits, no frame is
  ever dropped (the output must hold every input frame);
* live streams: the newest frame wins; when the consumer falls behind, the oldest queued frame is
  dropped and counted, so latency stays bounded instead of growing without limit.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from streamseg.errors import SourceError
from streamseg.records import Frame
from streamseg.sources.reconnect import OutageLog, ReconnectPolicy
from streamseg.urls import redact

__all__ = ["SourceInfo", "SourceStats", "VideoSource", "RawFrame", "DROP_NEWEST_POLICY"]

log = logging.getLogger("streamseg.sources")

DROP_NEWEST_POLICY = "newest_frame_policy"

# (rgb image or None for a heartbeat, pts, time_base) as a backend yields it
RawFrame = tuple[np.ndarray, "int | None", "Fraction | None"]


@dataclass
class SourceInfo:
    """What is known about an opened source; width/height are None until the first connection."""

    uri: str
    kind: str
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    time_base: Fraction | None = None
    codec: str | None = None
    is_live: bool = False
    has_audio: bool = False
    frame_count: int | None = None


@dataclass
class SourceStats:
    """Counters for the metrics summary. ``dropped`` maps a reason to a count."""

    frames_decoded: int = 0
    frames_delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    outages: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    decode_errors: int = 0
    queue_high_water: int = 0
    pts_repaired: int = 0

    @property
    def frames_dropped(self) -> int:
        return int(sum(self.dropped.values()))


class _FrameBuffer:
    """Bounded frame queue with either back-pressure (``drop_oldest=False``) or newest-wins.

    ``stop_event`` is only read, never waited on under a lock held by the caller, so a signal
    handler that sets it cannot deadlock with a consumer blocked in :meth:`get`.
    """

    _SLICE = 0.05  # seconds between checks of the stop flag while waiting

    def __init__(self, maxsize: int, drop_oldest: bool, stop_event: threading.Event):
        self.maxsize = max(1, int(maxsize))
        self.drop_oldest = drop_oldest
        self._stop = stop_event
        self._q: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False  # producer finished
        self.high_water = 0

    def put(self, item: Frame) -> Frame | None:
        """Queue ``item``; returns the frame dropped to make room (newest-wins) or None.

        With back-pressure, blocks until there is room or the source is stopped.
        """
        with self._cond:
            dropped = None
            if self.drop_oldest:
                if len(self._q) >= self.maxsize:
                    dropped = self._q.popleft()
            else:
                while len(self._q) >= self.maxsize and not self._stop.is_set():
                    self._cond.wait(self._SLICE)
                if self._stop.is_set():
                    return None
            self._q.append(item)
            self.high_water = max(self.high_water, len(self._q))
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None) -> tuple[Frame | None, bool]:
        """Next frame, or (None, ended). ``ended`` is True at end of stream or after stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None, True
                if self._q:
                    item = self._q.popleft()
                    self._cond.notify_all()
                    return item, False
                if self._closed:
                    return None, True
                wait = self._SLICE
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None, False
                    wait = min(wait, left)
                self._cond.wait(wait)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._q)


class _Timeline:
    """Turns backend timestamps into output pts that a consumer can trust.

    Files keep the container's pts (only a missing pts is filled in). Live streams are mapped
    onto the time base of the first connection with a per-connection offset, so the output keeps
    increasing across reconnects (the gap reflects the wall-clock outage) and across the odd
    backwards step of an RTSP relay; a missing pts (first RTSP frame) is extrapolated.
    """

    _JUMP_S = 2.0  # a live pts jump beyond this (either way) re-anchors on the wall clock

    def __init__(self, live: bool):
        self.live = live
        self.out_tb: Fraction | None = None
        self.frame_dur = 1  # in out_tb units
        self.last: int | None = None
        self.last_wall: float | None = None
        self.offset: int | None = 0 if not live else None
        self.segment_from_wall = False
        self.repaired = 0

    def configure(self, time_base: Fraction | None, fps: Fraction | None) -> None:
        """Fix the output time base on the first connection (later ones are rescaled onto it)."""
        if self.out_tb is None:
            self.out_tb = Fraction(time_base) if time_base else Fraction(1, 90000)
        if fps and fps > 0:
            self.frame_dur = max(1, round(1 / (Fraction(fps) * self.out_tb)))

    def new_segment(self, wall_gap: bool) -> None:
        """A reconnect (``wall_gap=True``) or a file loop restart: re-anchor on the next frame."""
        if self.last is None and not self.live:
            return
        self.offset = None
        self.segment_from_wall = wall_gap

    def map(self, pts: int | None, tb: Fraction | None, wall: float) -> int:
        assert self.out_tb is not None
        conv = None
        if pts is not None:
            src_tb = Fraction(tb) if tb else self.out_tb
            conv = pts if src_tb == self.out_tb else round(pts * src_tb / self.out_tb)
        if conv is None:
            # no timestamp (first RTSP frame): extrapolate; at a segment start include the gap
            out = (
                self._anchor(wall)
                if self.offset is None or self.last is None
                else self.last + self.frame_dur
            )
        else:
            if self.offset is None:
                self.offset = self._anchor(wall) - conv
            out = conv + self.offset
            if self.live and self.last is not None:
                jump = float((out - self.last) * self.out_tb)
                if jump < -self._JUMP_S or jump > self._JUMP_S + (wall - (self.last_wall or wall)):
                    self.segment_from_wall = True
                    self.offset = self._anchor(wall) - conv
                    out = conv + self.offset
        if self.last is not None and out <= self.last:
            self.repaired += 1
            if self.live and conv is not None:
                # a backwards step (relay re-anchoring, burst after a stall): continue one frame
                # later instead of packing frames a tick apart
                self.offset = self.last + self.frame_dur - conv
                out = self.last + self.frame_dur
            else:
                out = self.last + 1
        self.last, self.last_wall = out, wall
        return out

    def _anchor(self, wall: float) -> int:
        if self.last is None:
            return 0
        step = self.frame_dur
        if self.segment_from_wall and self.last_wall is not None:
            step = max(step, round((wall - self.last_wall) / self.out_tb))
        return self.last + step


class VideoSource:
    """A frame source decoded in its own thread. Subclasses implement the four backend hooks.

    Use ``start()``, then ``read()`` / iterate until None, then ``close()`` (or a ``with`` block).
    ``stop()`` may be called from a signal handler or another thread.
    """

    def __init__(
        self,
        uri: str,
        kind: str,
        *,
        live: bool,
        queue_size: int = 8,
        reconnect: ReconnectPolicy | None = None,
        max_frames: int | None = None,
        loop: bool = False,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
    ):
        if queue_size < 1:
            raise SourceError(f"source.queue_size must be >= 1, got {queue_size}")
        if max_frames is not None and max_frames < 0:
            raise SourceError(f"source.max_frames must be >= 0 or unset, got {max_frames}")
        self._uri_safe = redact(uri)
        self.kind = kind
        self.live = bool(live)
        if reconnect is None:
            reconnect = ReconnectPolicy() if self.live else ReconnectPolicy.disabled()
        self.reconnect = reconnect
        self.max_frames = max_frames
        self.loop = loop
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self._info = SourceInfo(uri=self._uri_safe, kind=kind, is_live=self.live)
        self._stop = threading.Event()
        self._buf = _FrameBuffer(queue_size, drop_oldest=self.live, stop_event=self._stop)
        self._timeline = _Timeline(self.live)
        self._outages = OutageLog(f"source {self._uri_safe}", log)
        self._lock = threading.Lock()
        self._stats = SourceStats()
        self._thread: threading.Thread | None = None
        self._started = False
        self._ended = False
        self._closed = False
        self.error: str | None = None  # why the stream ended early (redacted), if it did

    # ------------------------------------------------------------------ backend hooks
    def _connect(self) -> Any:
        """Open the input and return a handle; raise SourceError for a permanent problem."""
        raise NotImplementedError

    def _frames(self, handle: Any) -> Iterator[RawFrame | None]:
        """Yield (rgb, pts, time_base) per frame, or None as a heartbeat; return at EOF."""
        raise NotImplementedError

    def _disconnect(self, handle: Any) -> None:
        """Release the handle (always called, also after errors)."""

    def _is_permanent(self, exc: BaseException) -> bool:
        """Whether an open error should not be retried even when reconnecting is enabled."""
        return isinstance(exc, SourceError)

    def _describe_error(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ public API
    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def stats(self) -> SourceStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            s = SourceStats(
                frames_decoded=self._stats.frames_decoded,
                frames_delivered=self._stats.frames_delivered,
                dropped=dict(self._stats.dropped),
                reconnects=self._outages.reconnects,
                decode_errors=self._stats.decode_errors,
                queue_high_water=self._buf.high_water,
                pts_repaired=self._timeline.repaired,
            )
        s.outages = self._outages.snapshot()
        return s

    @property
    def ended(self) -> bool:
        """True once read() has reported the end of the stream (or the source was stopped)."""
        return self._ended or self._stop.is_set()

    @property
    def in_outage(self) -> bool:
        return self._outages.active

    def start(self) -> "VideoSource":
        """Open the input and start the decode thread.

        Raises SourceError (one redacted line) when the input cannot be opened, unless this is
        a live source whose reconnect policy allows retrying: then the thread keeps retrying.
        """
        if self._started:
            return self
        if self._closed:
            raise SourceError(f"source {self._uri_safe} is closed")
        self._started = True
        handle = None
        try:
            handle = self._connect()
        except BaseException as exc:  # noqa: BLE001 - classified below
            if isinstance(exc, KeyboardInterrupt):
                raise
            reason = redact(self._describe_error(exc))
            retry = self.live and self.reconnect.enabled and not self._is_permanent(exc)
            if not retry:
                self._started = False
                if isinstance(exc, SourceError):
                    raise SourceError(redact(str(exc))) from None
                raise SourceError(
                    f"cannot open {self.kind} source {self._uri_safe}: {reason}"
                ) from None
            self._outages.begin(f"open failed: {reason}")
        self._thread = threading.Thread(
            target=self._run, args=(handle,), name=f"source-{self.kind}", daemon=True
        )
        self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame; None at end of stream, after stop(), or when ``timeout`` expires.

        Tell a timeout from the end with :attr:`ended`.
        """
        if not self._started:
            self.start()
        item, ended = self._buf.get(timeout)
        if item is not None:
            with self._lock:
                self._stats.frames_delivered += 1
        elif ended:
            self._ended = True
        return item

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def stop(self) -> None:
        """Ask the decode thread to finish and unblock read(); safe from a signal handler."""
        self._stop.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop, join the decode thread and release the input (idempotent).

        The join waits at most ``timeout`` (default: the open timeout + 1 s, the longest a
        blocking FFmpeg call can take); the thread always closes its container itself.
        """
        self.stop()
        self._closed = True
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(self.open_timeout_s + 1.0 if timeout is None else timeout)
            if t.is_alive():
                log.debug(
                    "source %s: decode thread still inside a blocking call; it will close "
                    "the input when that returns",
                    self._uri_safe,
                )

    def __enter__(self) -> "VideoSource":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten source must not keep decoding
        try:
            self._stop.set()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ decode thread
    def _run(self, handle: Any) -> None:
        try:
            while not self._stop.is_set():
                if handle is None:
                    handle = self._reconnect_loop()
                    if handle is None:
                        break
                try:
                    reason = self._pump(handle)
                except Exception as exc:  # noqa: BLE001 - a broken stream is data, not a crash
                    reason = "error: " + redact(self._describe_error(exc))
                finally:
                    self._safe_disconnect(handle)
                    handle = None
                if reason in ("stopped", "max_frames"):
                    break
                if not self.live:
                    if reason == "eof" and self.loop:
                        self._timeline.new_segment(wall_gap=False)
                        handle = self._open_again()
                        if handle is None:
                            break
                        continue
                    if reason != "eof":
                        self._fail(reason)
                    break
                if not self.reconnect.enabled:
                    if reason != "eof":
                        self._fail(reason)
                    break
                self._outages.begin("end of stream" if reason == "eof" else reason)
                self._timeline.new_segment(wall_gap=True)
        except Exception as exc:  # noqa: BLE001 - never die silently
            self._fail("error: " + redact(self._describe_error(exc)))
            log.debug("source thread crashed", exc_info=True)
        finally:
            if handle is not None:
                self._safe_disconnect(handle)
            self._buf.close()

    def _fail(self, reason: str) -> None:
        self.error = redact(reason)
        log.error("source %s: stream ended early: %s", self._uri_safe, self.error)

    def _safe_disconnect(self, handle: Any) -> None:
        try:
            self._disconnect(handle)
        except Exception:  # noqa: BLE001 - closing a broken stream may fail; nothing to do
            log.debug("source %s: error while closing", self._uri_safe, exc_info=True)

    def _open_again(self) -> Any:
        try:
            return self._connect()
        except Exception as exc:  # noqa: BLE001
            self._fail("reopen failed: " + redact(self._describe_error(exc)))
            return None

    def _reconnect_loop(self) -> Any:
        """Retry opening with exponential back-off until it works, the policy gives up or stop."""
        pol = self.reconnect
        attempt = 0
        while not self._stop.is_set():
            if pol.max_attempts is not None and attempt >= pol.max_attempts:
                self._outages.end(attempt, recovered=False)
                self.error = f"gave up reconnecting after {attempt} attempts"
                return None
            if attempt > 0 and self._stop.wait(pol.delay(attempt - 1)):
                return None
            attempt += 1
            try:
                handle = self._connect()
            except Exception as exc:  # noqa: BLE001 - any open failure is retried
                log.debug(
                    "source %s: reconnect attempt %d failed: %s",
                    self._uri_safe,
                    attempt,
                    redact(self._describe_error(exc)),
                )
                continue
            if self._stop.is_set():
                self._safe_disconnect(handle)
                return None
            self._outages.end(attempt)
            return handle
        return None

    def _pump(self, handle: Any) -> str:
        """Move frames from the backend into the queue; return why it stopped."""
        if self.max_frames is not None and self._stats.frames_decoded >= self.max_frames:
            return "max_frames"
        stall = self.reconnect.stall_timeout_s if (self.live and self.reconnect.enabled) else None
        last_frame = time.monotonic()
        for raw in self._frames(handle):
            if self._stop.is_set():
                return "stopped"
            now = time.monotonic()
            if raw is None:
                if stall is not None and now - last_frame > stall:
                    return f"stalled: no frame for {stall:g} s"
                continue
            last_frame = now
            image, pts, tb = raw
            wall = time.time()
            with self._lock:
                index = self._stats.frames_decoded
                self._stats.frames_decoded += 1
                out_pts = self._timeline.map(pts, tb, wall)
            frame = Frame(
                index=index,
                image=image,
                pts=out_pts,
                time_base=self._timeline.out_tb,
                capture_time=wall,
            )
            dropped = self._buf.put(frame)
            if dropped is not None:
                self._count_drop(DROP_NEWEST_POLICY)
            if self.max_frames is not None and index + 1 >= self.max_frames:
                return "max_frames"
        if self._stop.is_set():
            return "stopped"
        return "eof"

    def _count_drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._stats.dropped[reason] = self._stats.dropped.get(reason, 0) + n

    def _count_decode_error(self) -> None:
        with self._lock:
            self._stats.decode_errors += 1

    def _set_stream_info(self, **kw: Any) -> None:
        """Update :attr:`info` and fix the output time base on the first connection."""
        for k, v in kw.items():
            setattr(self._info, k, v)
        with self._lock:
            self._timeline.configure(self._info.time_base, self._info.fps)
        if self._timeline.out_tb is not None:
            self._info.time_base = self._timeline.out_tb
