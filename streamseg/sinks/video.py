"""Annotated video file sink: H.264/yuv420p MP4 with the source's timestamps, optional audio.

The output must play in a browser (H.264 High/yuv420p, moov atom first) and keep the original
timing, so every frame is stamped with its source pts rescaled to the stream time base; a missing
or non-increasing pts is repaired (and counted) instead of letting the muxer fail mid-run.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import av.error
import numpy as np

from streamseg.errors import SinkError
from streamseg.records import Frame

__all__ = ["VideoFileSink", "MP4_AUDIO_CODECS"]

log = logging.getLogger("streamseg.sinks.video")

# audio codecs copied into MP4 as they are; anything else is transcoded to AAC
MP4_AUDIO_CODECS = frozenset({"aac", "mp3"})


def _as_rate(fps: Fraction | float | int) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001000) if not isinstance(fps, Fraction) else fps
    if rate <= 0:
        raise SinkError(f"video sink fps must be > 0, got {fps}")
    return rate


class _AudioPassthrough:
    """Copies (or transcodes to AAC) the audio of ``source`` up to the video's current time."""

    def __init__(self, source: str, out: Any):
        self.source = source
        try:
            self.inp = av.open(source)
        except (av.error.FFmpegError, OSError) as exc:
            raise SinkError(f"audio source {source} cannot be opened: {exc}") from None
        if not self.inp.streams.audio:
            self.inp.close()
            raise LookupError("no audio stream")
        self.ist = self.inp.streams.audio[0]
        self.copy = self.ist.codec_context.name in MP4_AUDIO_CODECS
        if self.copy:
            self.ost = out.add_stream_from_template(self.ist)
        else:
            rate = self.ist.codec_context.sample_rate or 48000
            self.ost = out.add_stream("aac", rate=rate)
            layout = self.ist.codec_context.layout
            if layout is not None and layout.nb_channels:
                self.ost.layout = layout.name if layout.nb_channels <= 2 else "stereo"
        self.out = out
        self.tb = self.ist.time_base
        self._packets: Iterator[Any] = self.inp.demux(self.ist)
        self._pending: Any = None  # a packet read ahead that is later than the video so far
        self._done = False
        self.packets = 0

    def pump(self, until_s: float | None) -> None:
        """Mux audio with start time <= ``until_s`` (None: everything left)."""
        while not self._done:
            pkt = self._pending
            self._pending = None
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
                except av.error.FFmpegError as exc:
                    log.warning("audio passthrough stopped: %s", exc)
                    self._done = True
                    break
            if pkt.dts is None and pkt.pts is None:
                if not self.copy:
                    self._encode(pkt)  # flush packet: drains the decoder
                continue
            t = float((pkt.pts if pkt.pts is not None else pkt.dts) * self.tb)
            if until_s is not None and t > until_s:
                self._pending = pkt
                break
            if self.copy:
                pkt.stream = self.ost
                self.out.mux(pkt)
                self.packets += 1
            else:
                self._encode(pkt)

    def _encode(self, pkt: Any) -> None:
        try:
            frames = pkt.decode()
        except av.error.FFmpegError:
            return
        for fr in frames:
            fr.pts = None  # let the encoder's resampler/FIFO number the samples
            for p in self.ost.encode(fr):
                self.out.mux(p)
                self.packets += 1

    def finish(self, until_s: float | None) -> None:
        self.pump(until_s)
        if not self.copy:
            for p in self.ost.encode(None):
                self.out.mux(p)
                self.packets += 1
        self.inp.close()


class VideoFileSink:
    """Encode annotated RGB frames into a browser-playable MP4 (H.264, yuv420p, faststart)."""

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction | float,
        time_base: Fraction | None = None,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        pix_fmt: str = "yuv420p",
        audio_source: str | None = None,
    ):
        self.path = Path(path)
        if width <= 0 or height <= 0:
            raise SinkError(f"video sink size must be positive, got {width}x{height}")
        self.rate = _as_rate(fps)
        # 4:2:0 needs even sizes; the encoder gets the frame scaled down by at most one pixel
        self.width = int(width) - int(width) % 2
        self.height = int(height) - int(height) % 2
        self.codec, self.crf, self.preset, self.pix_fmt = codec, int(crf), preset, pix_fmt
        self.time_base = Fraction(time_base) if time_base else None
        self.audio_source = audio_source
        self.frames_written = 0
        self.pts_repaired = 0
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - PyAV raises several types for unknown codecs
            raise SinkError(
                f"video sink codec {codec!r} is not available in this FFmpeg build (libx264 is)"
            ) from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(
                str(self.path),
                mode="w",
                format="mp4" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov", "") else None,
                options={"movflags": "+faststart"},
            )
        except (OSError, av.error.FFmpegError) as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from None
        self._stream: Any = None
        self._audio: _AudioPassthrough | None = None
        self._last_pts: int | None = None
        self._last_t = 0.0
        self._closed = False
        self._warned_size = False

    def _setup(self, frame: Frame) -> None:
        tb = self.time_base or frame.time_base or (1 / self.rate)
        self._tb = Fraction(tb)
        st = self._out.add_stream(self.codec, rate=self.rate)
        st.width, st.height, st.pix_fmt = self.width, self.height, self.pix_fmt
        st.codec_context.time_base = self._tb
        st.time_base = self._tb
        opts = {"preset": self.preset}
        if self.codec in ("libx264", "libx265"):
            opts["crf"] = str(self.crf)
        st.options = opts
        self._stream = st
        if self.audio_source:
            try:
                self._audio = _AudioPassthrough(self.audio_source, self._out)
            except LookupError:
                log.info("video sink: %s has no audio; writing video only", self.audio_source)

    def _pts_for(self, frame: Frame) -> int:
        if frame.pts is not None:
            src_tb = frame.time_base or self._tb
            pts = round(frame.pts * Fraction(src_tb) / self._tb)
        elif self._last_pts is None:
            pts = 0
        else:
            pts = self._last_pts + max(1, round(1 / (self.rate * self._tb)))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
            self.pts_repaired += 1
        return pts

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Encode ``image`` (RGB uint8 HxWx3) at ``frame``'s timestamp."""
        if self._closed:
            raise SinkError(f"video sink {self.path} is closed")
        if self._stream is None:
            self._setup(frame)
        img = np.ascontiguousarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise SinkError(f"video sink expects RGB uint8 HxWx3, got {img.dtype} {img.shape}")
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        if (vf.width, vf.height) != (self.width, self.height):
            if not self._warned_size and (vf.width - vf.width % 2, vf.height - vf.height % 2) != (
                self.width,
                self.height,
            ):
                log.warning(
                    "video sink: frame %dx%d scaled to %dx%d",
                    vf.width,
                    vf.height,
                    self.width,
                    self.height,
                )
                self._warned_size = True
        vf = vf.reformat(width=self.width, height=self.height, format=self.pix_fmt)
        pts = self._pts_for(frame)
        vf.pts = pts
        vf.time_base = self._tb
        try:
            for p in self._stream.encode(vf):
                self._out.mux(p)
        except av.error.FFmpegError as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from None
        self._last_pts = pts
        self._last_t = float(pts * self._tb)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.pump(self._last_t)

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent). Audio stops with the last frame."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                for p in self._stream.encode(None):
                    self._out.mux(p)
                if self._audio is not None:
                    end = self._last_t + float(1 / self.rate)
                    self._audio.finish(end)
        finally:
            self._out.close()
        if self.frames_written == 0:
            log.warning("video sink: no frames written to %s", self.path)

    def __enter__(self) -> "VideoFileSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
