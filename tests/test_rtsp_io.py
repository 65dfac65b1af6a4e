"""RTSP in and out against a real relay and a real looping publisher (see conftest.py)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from streamseg.errors import SinkError, SourceError
from streamseg.records import Frame
from streamseg.sinks.rtsp import RtspSink
from streamseg.sources import ReconnectPolicy, open_source

pytestmark = pytest.mark.rtsp

FAST = ReconnectPolicy(backoff_base_s=0.2, backoff_max_s=1.0, stall_timeout_s=2.0)


def _read_frames(url: str, want: int, timeout: float) -> list[tuple[float, int, int]]:
    """A plain PyAV client: (wall time, width, height) of decoded frames, retrying opens."""
    got: list[tuple[float, int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < want:
        try:
            with av.open(
                url,
                options={
                    "rtsp_transport": "tcp",
                    "timeout": "2000000",
                    "analyzeduration": "0",
                    "probesize": "32768",
                },
                timeout=(3, 2),
            ) as c:
                for f in c.decode(video=0):
                    got.append((time.time(), f.width, f.height))
                    if len(got) >= want or time.monotonic() > deadline:
                        break
        except (av.error.FFmpegError, OSError):
            time.sleep(0.2)
    return got


def test_read_frames_from_rtsp_camera(rtsp_camera: str) -> None:
    src = open_source(rtsp_camera, queue_size=2, open_timeout_s=5, read_timeout_s=3)
    assert src.info.kind == "rtsp" and src.live
    with src:
        frames = [src.read(timeout=5) for _ in range(10)]
        info = src.info
    assert all(f is not None for f in frames)
    assert frames[0].image.shape == (576, 768, 3)
    assert (info.width, info.height, info.fps, info.codec) == (768, 576, 10, "h264")
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))  # first RTSP frame has no pts: extrapolated
    assert 0.5 < times[-1] - times[0] < 1.5  # 9 intervals of ~0.1 s (the relay jitters ~3 %)


def test_dead_url_at_start_fails_within_timeout_without_password() -> None:
    with socket.socket() as blackhole:  # accepts TCP, never answers RTSP
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(4)
        url = f"rtsp://admin:secret@127.0.0.1:{blackhole.getsockname()[1]}/cam"
        src = open_source(
            url, open_timeout_s=1.5, read_timeout_s=1.0, reconnect=ReconnectPolicy(enabled=False)
        )
        t = time.monotonic()
        with pytest.raises(SourceError) as ei:
            src.start()
        took = time.monotonic() - t
    msg = str(ei.value)
    assert 0.9 < took < 1.5 + 3.0  # the socket timeout (1 s) or the open timeout (1.5 s) fires
    assert "secret" not in msg and "rtsp://***:***@127.0.0.1" in msg and "\n" not in msg
    assert "no answer within" in msg


def test_dead_url_with_reconnect_retries_quietly_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    url = f"rtsp://user:secret@127.0.0.1:{port}/cam"
    src = open_source(
        url, open_timeout_s=2, reconnect=ReconnectPolicy(backoff_base_s=0.05, backoff_max_s=0.2)
    )
    src.start()  # does not raise: live + reconnect
    assert src.read(timeout=1.0) is None and not src.ended
    st = src.stats
    assert (
        len(st.outages) == 1
        and st.outages[0]["end"] is None
        and "open failed" in st.outages[0]["reason"]
    )
    t = time.monotonic()
    src.stop()
    assert src.read() is None and src.ended
    src.close()
    assert time.monotonic() - t < 2.5
    lost = [r for r in caplog.records if "stream lost" in r.getMessage()]
    assert len(lost) == 1  # one line per outage, not one per retry
    retries = [r for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert len(retries) >= 3  # it really retried (at DEBUG level)
    assert "secret" not in caplog.text and "secret" not in str(src.stats)


def test_reconnect_after_publisher_restart(rtsp_server, publisher_factory) -> None:
    from conftest import wait_readable

    pub = publisher_factory(rtsp_server.publish_url("recon"))
    assert wait_readable(rtsp_server.read_url("recon"))
    src = open_source(
        rtsp_server.read_url("recon", "cam:secret@"),
        queue_size=2,
        open_timeout_s=3,
        read_timeout_s=2,
        reconnect=FAST,
    )
    src.start()
    frames: list[tuple[float, Frame]] = []
    t0 = time.monotonic()
    killed_at = restarted_at = None
    try:
        while time.monotonic() - t0 < 15:
            f = src.read(timeout=0.3)
            now = time.monotonic()
            if f is not None:
                frames.append((now, f))
            if killed_at is None and now - t0 > 1.5:
                pub.stop(kill=True)
                killed_at = now
            if killed_at is not None and restarted_at is None and now - killed_at > 3.0:
                pub.start()
                restarted_at = now
            if restarted_at is not None and sum(1 for t, _ in frames if t > restarted_at) >= 10:
                break
    finally:
        src.close()
    assert killed_at is not None and restarted_at is not None
    before = [f for t, f in frames if t < killed_at]
    after = [f for t, f in frames if t > restarted_at]
    assert len(before) >= 5 and len(after) >= 10  # it kept going and frames resumed
    st = src.stats
    assert len(st.outages) == 1 and st.reconnects == 1
    dur = st.outages[0]["duration_s"]
    assert 2.5 < dur < 8.0
    # resumed soon after the publisher came back (GOP 1 s + back-off)
    first_after = min(t for t, _ in frames if t > restarted_at)
    assert first_after - restarted_at < 3.0
    times = [f.time for _, f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))  # monotonic across the reconnect
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert gap == pytest.approx(dur, abs=1.5)  # the timeline shows the outage, not a splice
    assert [f.index for _, f in frames] == sorted({f.index for _, f in frames})


def test_rtsp_in_to_rtsp_out(rtsp_camera: str, rtsp_server) -> None:
    published: list[float] = []
    with open_source(rtsp_camera, queue_size=2, open_timeout_s=5) as src:
        first = src.read(timeout=5)
        assert first is not None
        sink = RtspSink(
            rtsp_server.publish_url("out"),
            width=src.info.width,
            height=src.info.height,
            fps=src.info.fps,
            reconnect=FAST,
            on_published=lambda fr, t: published.append(t),
        )
        reader_frames: list[tuple[float, int, int]] = []
        reader = threading.Thread(
            target=lambda: reader_frames.extend(
                _read_frames(rtsp_server.read_url("out"), want=15, timeout=10)
            ),
            daemon=True,
        )
        reader.start()
        t0 = time.monotonic()
        while reader.is_alive() and time.monotonic() - t0 < 12:
            f = src.read(timeout=2)
            assert f is not None
            img = f.image.copy()
            img[:40, :40] = (255, 0, 0)
            sink.write(f, img)
        reader.join(2)
        sink.close()
    assert len(reader_frames) >= 15
    assert {(w, h) for _, w, h in reader_frames} == {(768, 576)}
    st = sink.stats
    assert st.frames_published >= 15 and len(published) == st.frames_published
    assert st.outages == [] and sink.gop == 10
    idx, cap, pub_t = sink.publish_times[-1]
    assert pub_t >= cap  # capture-to-publish latency is measurable and non-negative


def test_rtsp_sink_survives_relay_restart(relay_factory) -> None:
    relay = relay_factory()
    sink = RtspSink(
        relay.publish_url("relaytest"),
        width=320,
        height=240,
        fps=10,
        reconnect=FAST,
        mux_timeout_s=2.0,
    )
    img = np.zeros((240, 320, 3), np.uint8)
    tb = Fraction(1, 10)
    i = 0

    def feed(seconds: float) -> None:
        nonlocal i
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            img[:] = (i * 7) % 255
            sink.write(
                Frame(index=i, image=img, pts=i, time_base=tb, capture_time=time.time()), img
            )
            i += 1
            time.sleep(0.1)

    try:
        feed(1.5)
        assert sink.stats.frames_published >= 10 and sink.connected
        relay.stop(kill=True)
        feed(2.5)  # server gone: frames are accepted and dropped, nothing raises
        down = sink.stats
        assert down.dropped.get("server_down", 0) >= 5 and not sink.connected
        relay.start()  # same port
        t = time.monotonic()
        while sink.stats.reconnects < 1 and time.monotonic() - t < 6:
            feed(0.2)
        st = sink.stats
        assert st.reconnects == 1 and len(st.outages) == 1
        assert 2.0 < st.outages[0]["duration_s"] < 9.0
        published_before = st.frames_published
        got: list[tuple[float, int, int]] = []
        reader = threading.Thread(
            target=lambda: got.extend(_read_frames(relay.read_url("relaytest"), want=8, timeout=8)),
            daemon=True,
        )
        reader.start()
        t = time.monotonic()
        while reader.is_alive() and time.monotonic() - t < 9:
            feed(0.2)
        reader.join(1)
    finally:
        sink.close()
    assert len(got) >= 8 and {(w, h) for _, w, h in got} == {(320, 240)}
    assert sink.stats.frames_published > published_before


def test_rtsp_sink_rejects_bad_settings_in_one_line() -> None:
    with pytest.raises(SinkError, match="rtsp://") as ei:
        RtspSink("http://u:secret@h/x", width=64, height=48, fps=10)
    assert "secret" not in str(ei.value)
    with pytest.raises(SinkError, match="transport"):
        RtspSink("rtsp://h/x", width=64, height=48, fps=10, transport="quic")
