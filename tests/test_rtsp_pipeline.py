"""RTSP cameras through the whole pipeline, against a real relay and publisher on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time

import av
import pytest

from streamseg.config import config_from_dict
from streamseg.errors import SourceError
from streamseg.pipeline import Pipeline

SMALL_MODEL = {"name": "b0", "weights": "untrained", "input_size": [128, 160], "roi_size": [32, 24], "mask_size": [64, 48]}


def _cfg(uri: str, sinks: list, **source):
    raw = {"source": {"uri": uri, "open_timeout_s": 5, "read_timeout_s": 3,
                      "reconnect": {"backoff_base_s": 0.25, "backoff_max_s": 1.0, "stall_timeout_s": 3}, **source},
           "detector": {"type": "hog"}, "model": SMALL_MODEL, "runtime": {"device": "cpu"},
           "sinks": sinks, "logging": {"progress": "off"}, "metrics": {"latency_window_s": 5}}
    return config_from_dict(raw, origin="test", check_files=False)


class _Reader(threading.Thread):
    """A PyAV client of the published stream: counts frames and records their size."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.frames, self.sizes, self.stop_flag = url, 0, set(), False

    def run(self) -> None:
        while not self.stop_flag:
            try:
                with av.open(self.url, options={"rtsp_transport": "tcp", "timeout": "3000000",
                                                "analyzeduration": "0", "probesize": "32768"}, timeout=(5, 3)) as c:
                    for f in c.decode(video=0):
                        self.frames += 1
                        self.sizes.add((f.width, f.height))
                        if self.stop_flag:
                            return
            except Exception:  # noqa: BLE001 - not published yet / republishing: retry
                time.sleep(0.3)


def _run_for(pipe: Pipeline, seconds: float, events=()) -> int:
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("code", pipe.run()), daemon=True)
    t.start()
    start = time.time()
    for at, fn in events:
        time.sleep(max(0.0, start + at - time.time()))
        fn()
    time.sleep(max(0.0, start + seconds - time.time()))
    pipe.stop()
    t.join(60)
    assert not t.is_alive(), "pipeline did not stop"
    return result["code"]


def test_rtsp_in_file_out(rtsp_camera, tmp_path):
    cfg = _cfg(rtsp_camera, [{"type": "video", "path": "a.mp4"}], max_frames=6)
    code = Pipeline(cfg, tmp_path).run()
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert code == 0 and m["frames_out"] == 6 == m["frames_in"]
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_rtsp_in_rtsp_out_survives_a_camera_outage(relay_factory, publisher_factory, tmp_path):
    relay = relay_factory()
    pub = publisher_factory(relay.publish_url("recon"))
    reader = _Reader(relay.read_url("out"))
    cfg = _cfg(relay.read_url("recon"), [{"type": "rtsp", "url": relay.publish_url("out")},
                                         {"type": "events", "path": "e.jsonl"}])
    pipe = Pipeline(cfg, tmp_path)
    marks: dict = {}

    def kill():
        marks["frames_at_kill"] = pipe.metrics.frames_out
        pub.stop(kill=True)

    def restart():
        marks["restart"] = time.time()
        pub.start()

    reader.start()
    code = _run_for(pipe, 16, [(5, kill), (8, restart)])
    reader.stop_flag = True
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert code == 0
    outages = m["source"]["outages"]
    assert len(outages) == 1, outages
    assert 2.0 <= outages[0]["duration_s"] <= 8.0
    assert m["frames_out"] > marks["frames_at_kill"] + 3  # frames came back after the camera did
    assert m["frames_out"] == m["frames_in"]
    # the published stream is decodable at the source's size
    assert reader.frames > 0 and reader.sizes == {(768, 576)}
    assert m["rtsp_out"]["frames_published"] > 0
    assert m["capture_to_publish_latency"]["overall"]["count"] > 0
    # timestamps stay monotonic across the outage
    times = [json.loads(line)["pts"] for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_password_never_appears_in_logs_or_metrics(rtsp_server, rtsp_camera, tmp_path, caplog):
    url = rtsp_server.read_url("live", userinfo="admin:s3cr3tpw@")
    cfg = _cfg(url, [{"type": "events", "path": "e.jsonl"}], max_frames=2)
    with caplog.at_level(logging.DEBUG):
        assert Pipeline(cfg, tmp_path).run() == 0
    text = caplog.text + (tmp_path / "metrics.json").read_text()
    assert "s3cr3tpw" not in text
    assert "127.0.0.1" in (tmp_path / "metrics.json").read_text()


def test_dead_url_at_start_is_a_clear_error_within_the_timeout(tmp_path):
    from tests.conftest import free_port

    url = f"rtsp://user:hunter2@127.0.0.1:{free_port()}/nothing"
    cfg = _cfg(url, [], reconnect={"enabled": False})
    t0 = time.time()
    with pytest.raises(SourceError) as e:
        Pipeline(cfg, tmp_path).run()
    assert time.time() - t0 < 5 + 10
    assert "hunter2" not in str(e.value) and "127.0.0.1" in str(e.value)


def test_shipped_rtsp_b7_pipeline_runs_rtsp_in_to_rtsp_out(relay_factory, publisher_factory, tmp_path, monkeypatch):
    """pipelines/rtsp_b7.yaml as shipped, pointed at a local relay (detector swapped for offline HOG)."""
    from streamseg.config import load_pipeline
    from tests._shared import ROOT

    relay = relay_factory()
    publisher_factory(relay.publish_url("live"))
    monkeypatch.setenv("CAMERA_USER", "cam")
    monkeypatch.setenv("CAMERA_PASSWORD", "pw123")
    monkeypatch.setenv("CAMERA_HOST", "127.0.0.1")
    cfg = load_pipeline(ROOT / "pipelines" / "rtsp_b7.yaml", overrides=[
        f"source.uri={relay.read_url('live', userinfo='cam:pw123@')}", f"sinks.0.url={relay.publish_url('out')}",
        "detector.type=hog", "model.input_size=[128,160]", "model.roi_size=[32,24]", "model.mask_size=[64,48]",
        "source.max_frames=3"], check_files=False)
    assert cfg.model.name == "b7" and cfg.sinks[0].type == "rtsp"
    reader = _Reader(relay.read_url("out"))
    reader.start()
    code = Pipeline(cfg, tmp_path).run()
    time.sleep(1.0)
    reader.stop_flag = True
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert code == 0 and m["frames_out"] == 3
    assert m["rtsp_out"]["frames_published"] == 3
    assert "pw123" not in (tmp_path / "metrics.json").read_text()
