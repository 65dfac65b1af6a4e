"""Annotated MP4 sink, decoded back: frame count, timestamps, codec, faststart, audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from _shared import shared_file
from streamseg.errors import SinkError
from streamseg.records import Frame
from streamseg.sinks.video import VideoFileSink
from streamseg.sources import open_source


def _make_clip(
    path: Path, n: int = 20, fps: int = 10, audio: str = "aac", fmt: str | None = None
) -> None:
    """A small video + sine-audio clip made with PyAV (no external files)."""
    sr = 44100
    with av.open(str(path), "w", format=fmt) as oc:
        vs = oc.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        ast = oc.add_stream(audio, rate=sr)
        ast.layout = "mono"
        for i in range(n):
            img = np.full((120, 160, 3), (i * 12) % 256, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            oc.mux(vs.encode(f))
        oc.mux(vs.encode(None))
        total = sr * n // fps
        sample_fmt = ast.codec_context.format.name
        for s in range(0, total, 1152):
            k = min(1152, total - s)
            x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(s, s + k) / sr)).astype(np.float32)
            if sample_fmt.startswith("s16"):
                x = (x * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(x[None, :], format=sample_fmt, layout="mono")
            af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
            oc.mux(ast.encode(af))
        oc.mux(ast.encode(None))


def _decode_times(path: Path) -> tuple[list[Fraction], tuple]:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        times = [f.pts * f.time_base for f in c.decode(st)]
        return times, (
            st.codec_context.name,
            st.codec_context.pix_fmt,
            st.average_rate,
            st.codec_context.width,
            st.codec_context.height,
        )


def test_frames_and_timestamps_round_trip(tmp_path: Path) -> None:
    clip = shared_file("data", "pedestrians_10s.mp4")
    out = tmp_path / "out" / "annotated.mp4"
    src = open_source(str(clip), max_frames=25)
    src.start()
    sink = VideoFileSink(
        out,
        width=src.info.width,
        height=src.info.height,
        fps=src.info.fps,
        time_base=src.info.time_base,
    )
    in_times = []
    for f in src:
        img = f.image.copy()
        img[:20, :20] = (255, 0, 0)  # "annotation"
        sink.write(f, img)
        in_times.append(f.pts * f.time_base)
    src.close()
    sink.close()
    sink.close()  # idempotent
    assert sink.frames_written == 25
    times, (codec, pix_fmt, rate, w, h) = _decode_times(out)
    assert len(times) == 25
    assert times == in_times
    assert (codec, pix_fmt, rate, w, h) == ("h264", "yuv420p", 10, 768, 576)
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # faststart: plays while downloading
    with pytest.raises(SinkError):
        sink.write(Frame(index=99, image=img), img)


def test_avi_source_timestamps_and_odd_size(tmp_path: Path) -> None:
    clip = shared_file("data", "vtest.avi")
    out = tmp_path / "odd.mp4"
    with open_source(str(clip), max_frames=12) as src:
        frames = list(src)
    sink = VideoFileSink(out, width=767, height=575, fps=10)  # odd: 4:2:0 needs even sizes
    for f in frames:
        sink.write(f, f.image[:575, :767])
    sink.close()
    times, (_, _, rate, w, h) = _decode_times(out)
    assert times == [Fraction(i, 10) for i in range(12)]
    assert (w, h, rate) == (766, 574, 10)


def test_missing_and_repeated_pts_are_repaired(tmp_path: Path) -> None:
    out = tmp_path / "repair.mp4"
    sink = VideoFileSink(out, width=64, height=48, fps=Fraction(25))
    img = np.zeros((48, 64, 3), np.uint8)
    tb = Fraction(1, 25)
    for i, pts in enumerate([None, 1, 2, 2, 1, 7]):
        sink.write(
            Frame(index=i, image=img, pts=pts, time_base=tb if pts is not None else None), img
        )
    sink.close()
    times, _ = _decode_times(out)
    assert len(times) == 6
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[0] == 0 and times[-1] == Fraction(7, 25)
    assert sink.pts_repaired == 2


def _audio_packets(path: Path) -> tuple[str, list[bytes], float]:
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        pk = [bytes(p) for p in c.demux(st) if p.size]
        return st.codec_context.name, pk, float(st.duration * st.time_base) if st.duration else 0.0


def test_audio_passthrough_copies_aac(tmp_path: Path) -> None:
    clip = tmp_path / "with_audio.mp4"
    _make_clip(clip, n=20, audio="aac")
    out = tmp_path / "out.mp4"
    with open_source(str(clip)) as src:
        assert src.info.has_audio
        sink = VideoFileSink(
            out,
            width=160,
            height=120,
            fps=src.info.fps,
            time_base=src.info.time_base,
            audio_source=str(clip),
        )
        for f in src:
            sink.write(f, f.image)
        sink.close()
    name_in, pk_in, _ = _audio_packets(clip)
    name_out, pk_out, dur = _audio_packets(out)
    assert name_in == name_out == "aac"
    # copied, not re-encoded: the same bytes, cut at the video's end (2.0 s + one frame)
    assert len(pk_out) >= len(pk_in) - 2 and pk_out == pk_in[: len(pk_out)]
    assert 1.9 < dur < 2.2
    times, _ = _decode_times(out)
    assert len(times) == 20


def test_audio_transcoded_to_aac_when_mp4_cannot_hold_it(tmp_path: Path) -> None:
    clip = tmp_path / "mp2.mkv"
    _make_clip(clip, n=20, audio="mp2", fmt="matroska")
    out = tmp_path / "out.mp4"
    with open_source(str(clip)) as src:
        sink = VideoFileSink(out, width=160, height=120, fps=10, audio_source=str(clip))
        for f in src:
            sink.write(f, f.image)
        sink.close()
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac"
        samples = sum(fr.samples for fr in c.decode(audio=0))
    assert 1.8 * 44100 < samples < 2.3 * 44100


def test_audio_source_without_audio_writes_video_only(tmp_path: Path) -> None:
    clip = shared_file("data", "pedestrians_10s.mp4")
    out = tmp_path / "v.mp4"
    with open_source(str(clip), max_frames=3) as src:
        sink = VideoFileSink(out, width=768, height=576, fps=10, audio_source=str(clip))
        for f in src:
            sink.write(f, f.image)
        sink.close()
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video"]


def test_sink_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="codec 'nonexistent_codec'"):
        VideoFileSink(tmp_path / "a.mp4", width=64, height=48, fps=10, codec="nonexistent_codec")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot write video"):
        VideoFileSink(blocker / "sub" / "a.mp4", width=64, height=48, fps=10)
    sink = VideoFileSink(tmp_path / "b.mp4", width=64, height=48, fps=10)
    with pytest.raises(SinkError, match="RGB uint8"):
        sink.write(Frame(index=0, image=np.zeros((48, 64), np.uint8)), np.zeros((48, 64), np.uint8))
    sink.close()
