"""Video sources on real inputs: files, image folders, lavfi 'cameras' and the webcam path."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from _shared import shared_file
from streamseg.errors import SourceError
from streamseg.sources import ReconnectPolicy, SourceInfo, detect_kind, open_source
from streamseg.urls import redact


def _lavfi_path(p) -> str:
    """Escape a path for a lavfi filter argument (':' ',' quote and backslash are special)."""
    s = str(p)
    for ch in "\\':,":
        s = s.replace(ch, "\\" + ch)
    return s


@pytest.mark.parametrize(
    "name,count,tb",
    [("vtest.avi", 795, Fraction(1, 10)), ("pedestrians_10s.mp4", 100, Fraction(1, 10240))],
)
def test_file_source_counts_pts_and_shape(name: str, count: int, tb: Fraction) -> None:
    path = shared_file("data", name)
    with open_source(str(path), queue_size=4) as src:
        info = src.info
        assert isinstance(info, SourceInfo)
        assert (info.kind, info.is_live, info.width, info.height) == ("file", False, 768, 576)
        assert info.fps == 10 and info.time_base == tb and info.frame_count == count
        frames = list(src)
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert all(f.time_base == tb for f in frames)
    # pts straight from the container: 10 fps -> 0.1 s apart
    assert frames[10].time == pytest.approx(1.0)
    assert frames[0].image.shape == (576, 768, 3) and frames[0].image.dtype == np.uint8
    assert all(f.capture_time > 0 for f in frames[:5])
    st = src.stats
    assert st.frames_decoded == count and st.frames_delivered == count
    assert st.dropped == {} and st.frames_dropped == 0


def test_file_source_never_drops_with_slow_consumer() -> None:
    path = shared_file("data", "pedestrians_10s.mp4")
    src = open_source(str(path), queue_size=2, max_frames=30)
    src.start()
    got = []
    try:
        while (f := src.read(timeout=10)) is not None:
            got.append(f.index)
            time.sleep(0.02)  # consumer slower than the decoder
    finally:
        src.close()
    assert got == list(range(30))
    st = src.stats
    assert st.dropped == {} and st.queue_high_water <= 2
    assert src.ended


def test_file_source_loop_keeps_pts_increasing() -> None:
    path = shared_file("data", "pedestrians_10s.mp4")
    with open_source(str(path), loop=True, max_frames=130) as src:
        frames = list(src)
    assert len(frames) == 130
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    # the second pass continues one frame after the end of the first
    assert times[100] == pytest.approx(10.0, abs=1e-6)


def test_missing_file_is_one_line_source_error(tmp_path) -> None:
    with pytest.raises(SourceError) as ei:
        open_source(str(tmp_path / "nope.mp4")).start()
    msg = str(ei.value)
    assert "nope.mp4" in msg and "not found" in msg and "\n" not in msg


def test_live_policy_drops_oldest_and_counts() -> None:
    src = open_source("testsrc2=size=160x120:rate=30,realtime", format="lavfi", queue_size=3)
    assert src.live and src.info.kind == "lavfi"
    src.start()
    got = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 1.5:
            f = src.read(timeout=2)
            assert f is not None
            got.append(f)
            time.sleep(0.15)  # ~7 fps consumer for a 30 fps camera
    finally:
        src.close()
    st = src.stats
    assert st.dropped.get("newest_frame_policy", 0) > 10
    assert st.queue_high_water <= 3
    assert st.frames_decoded >= st.frames_delivered + st.dropped["newest_frame_policy"]
    idx = [f.index for f in got]
    assert all(b > a for a, b in zip(idx, idx[1:])) and idx[-1] > len(idx)  # we skipped frames
    assert got[0].image.shape == (120, 160, 3)


def test_stop_unblocks_reader_quickly() -> None:
    src = open_source(
        "testsrc2=size=64x48:rate=1/5,realtime=limit=10", format="lavfi", queue_size=1
    )
    src.start()
    assert src.read(timeout=5) is not None  # frame 0 comes at once
    import threading

    threading.Timer(0.3, src.stop).start()
    t = time.monotonic()
    assert src.read() is None  # the next frame is 5 s away; stop() wins
    assert time.monotonic() - t < 3.0
    assert src.ended
    src.close(timeout=0.5)  # the decode thread finishes on its own once the filter returns


def test_webcam_missing_device_names_it() -> None:
    for uri in ("/dev/video9", "9"):
        src = open_source(uri)
        assert src.info.kind == "webcam" and src.live
        with pytest.raises(SourceError, match=r"camera /dev/video9 not found"):
            src.start()


def test_webcam_path_on_virtual_camera() -> None:
    clip = shared_file("data", "pedestrians_10s.mp4")
    graph = f"movie={_lavfi_path(clip)}:loop=0,setpts=N/FRAME_RATE/TB,realtime"
    src = open_source(graph, kind="webcam", format="lavfi", size=(640, 480), fps=30)
    assert src.info.kind == "webcam" and src.live
    with src:
        frames = [src.read(timeout=5) for _ in range(3)]
        assert src.info.width == 768 and src.info.height == 576
    assert all(f is not None and f.image.shape == (576, 768, 3) for f in frames)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[1].pts > frames[0].pts


def test_image_folder_source(tmp_path) -> None:
    import cv2

    written = []
    for i, ext in enumerate(["png", "jpg", "bmp", "png", "webp"]):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :, 0] = 40 * i + 20  # red channel tags the frame
        img[:, :, 1] = np.arange(64, dtype=np.uint8)[None, :] * 2
        img[:, :, 2] = 200
        assert cv2.imwrite(str(tmp_path / f"f{i:03d}.{ext}"), img[:, :, ::-1].copy())
        written.append(img)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), fps=5)
    assert src.info.kind == "images"
    with src:
        assert src.info.frame_count == 5 and src.info.fps == 5
        frames = list(src)
    assert len(frames) == 5
    assert [f.pts for f in frames] == [0, 1, 2, 3, 4]
    assert frames[2].time_base == Fraction(1, 5) and frames[3].time == pytest.approx(0.6)
    assert frames[0].image.shape == (48, 64, 3)
    # lossless ones are exact (and in RGB order), lossy ones close
    assert np.array_equal(frames[0].image, written[0]) and np.array_equal(
        frames[2].image, written[2]
    )
    assert abs(float(frames[1].image[:, :, 0].mean()) - 60) < 4
    assert abs(float(frames[4].image[:, :, 0].mean()) - 180) < 4


def test_empty_image_folder_errors(tmp_path) -> None:
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(tmp_path)).start()


def test_kind_detection() -> None:
    assert detect_kind("rtsp://cam/1") == "rtsp"
    assert detect_kind("https://x/y.m3u8") == "http"
    assert detect_kind("0") == "webcam" and detect_kind("/dev/video2") == "webcam"
    assert detect_kind("video=Cam", "dshow") == "webcam"
    assert detect_kind("testsrc2", "lavfi") == "lavfi"
    assert detect_kind("clip.mp4") == "file"


def test_bad_options_are_source_errors() -> None:
    with pytest.raises(SourceError, match="source.kind"):
        open_source("x.mp4", kind="camera")
    with pytest.raises(SourceError, match="transport"):
        open_source("rtsp://h/x", transport="quic")
    with pytest.raises(ValueError):
        ReconnectPolicy(max_attempts=0)


def test_redact_hides_credentials_everywhere() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.2:554/s1") == "rtsp://***:***@10.0.0.2:554/s1"
    text = "open rtsp://u:p4ss@cam/a failed; also http://bob:pw@h:80/x"
    out = redact(text)
    assert "p4ss" not in out and "pw@" not in out and "cam/a" in out and "h:80/x" in out
    assert redact("rtsp://cam.local/stream") == "rtsp://cam.local/stream"
    assert redact("/data/a@b.mp4") == "/data/a@b.mp4"
    assert "pa/ss" not in redact("rtsp://u:pa/ss@h/x")


def test_webcam_device_mapping() -> None:
    from streamseg.sources.av_source import webcam_device

    assert webcam_device("0", "v4l2") == "/dev/video0"
    assert webcam_device("1", "avfoundation") == "1:none"
    assert webcam_device("video=USB Cam", "dshow") == "video=USB Cam"
    with pytest.raises(SourceError, match="dshow"):
        webcam_device("0", "dshow")


def test_live_timeline_fills_missing_pts_and_survives_backward_steps() -> None:
    from streamseg.sources.base import _Timeline

    tl = _Timeline(live=True)
    tl.configure(Fraction(1, 90000), Fraction(10))
    tb = Fraction(1, 90000)
    out = [
        tl.map(None, tb, 100.0),
        tl.map(9000, tb, 100.1),
        tl.map(18000, tb, 100.2),
        tl.map(9000, tb, 100.3),  # relay stepped back 0.1 s
        tl.map(18000, tb, 100.4),
    ]
    assert out == [0, 9000, 18000, 27000, 36000]
    tl.new_segment(wall_gap=True)  # reconnect after a 5 s outage; the new stream restarts at 0
    assert tl.map(None, tb, 105.4) == 36000 + 5 * 90000
    assert tl.map(4500, tb, 105.5) == 36000 + 5 * 90000 + 9000


def test_http_source_reads_a_served_file(tmp_path) -> None:
    import functools
    import http.server
    import shutil
    import threading

    clip = shared_file("data", "pedestrians_10s.mp4")
    shutil.copy(clip, tmp_path / "clip.mp4")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))

    class Quiet(handler.func):  # type: ignore[misc,name-defined]
        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path))
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://user:pw@127.0.0.1:{srv.server_address[1]}/clip.mp4"
        src = open_source(url, live=False, max_frames=20)
        assert src.info.kind == "http" and src.info.uri.startswith("http://***:***@")
        with src:
            frames = list(src)
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(frames) == 20 and frames[0].image.shape == (576, 768, 3)
    assert src.stats.dropped == {}
