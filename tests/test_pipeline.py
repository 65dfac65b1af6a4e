"""`streamseg run` end to end on real footage: counts, timestamps, outputs, webcam path, SIGINT, flicker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from streamseg.config import config_from_dict
from streamseg.pipeline import Pipeline
from tests._shared import ROOT, shared_file

SAMPLE = ROOT / "samples" / "pedestrians_3s.mp4"
SMALL_MODEL = {"name": "b0", "weights": "untrained", "input_size": [128, 160], "roi_size": [32, 24], "mask_size": [64, 48]}


def _cfg(source: dict, sinks: list, model: dict | None = None, **extra):
    raw = {"source": source, "detector": {"type": "hog"}, "model": model or dict(SMALL_MODEL),
           "runtime": {"device": "cpu", "threads": 2}, "sinks": sinks, "logging": {"progress": "off"}, **extra}
    return config_from_dict(raw, origin="test")


def _run(cfg, out: Path) -> tuple[int, dict]:
    code = Pipeline(cfg, out).run()
    return code, json.loads((out / "metrics.json").read_text())


def _decode(path: Path) -> list[tuple[int, float]]:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return [(f.pts, float(f.pts * st.time_base)) for f in c.decode(st)]


def test_file_run_keeps_every_frame_and_timestamp(tmp_path):
    sinks = [{"type": "video", "path": "annotated.mp4"},
             {"type": "masks", "png_dir": "masks", "rle_jsonl": "masks.jsonl"},
             {"type": "events", "path": "events.jsonl"}]
    code, m = _run(_cfg({"uri": str(SAMPLE), "max_frames": 8}, sinks), tmp_path)
    assert code == 0
    assert m["frames_in"] == m["frames_out"] == 8 and m["frames_dropped"] == 0
    assert m["untrained_weights"] is True and m["fps"] > 0
    assert {"read_wait", "detect", "segment", "smooth"} <= set(m["stage_latency"])
    # the MP4 holds every frame at the source's timestamps
    src_times = [t for _, t in _decode(SAMPLE)[:8]]
    out = _decode(tmp_path / "annotated.mp4")
    assert len(out) == 8
    np.testing.assert_allclose([t for _, t in out], src_times, atol=1e-3)
    with av.open(str(tmp_path / "annotated.mp4")) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264" and st.codec_context.pix_fmt == "yuv420p"
        assert (st.codec_context.width, st.codec_context.height) == (768, 576)
    # masks PNG, RLE lines and events agree with each other
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert len(pngs) == 8
    rle_lines = [json.loads(line) for line in (tmp_path / "masks.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rle_lines] == [e["frame"] for e in events] == list(range(8))
    assert sum(len(e["boxes"]) for e in events) == m["persons_segmented"] > 0
    for png, rl, ev in zip(pngs, rle_lines, events):
        label = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert label.shape == (576, 768) and label.dtype == np.uint16
        assert len(rl["instances"]) == len(ev["boxes"])
        for inst in rl["instances"]:
            if inst["rle"] is None:
                continue
            dec = mask_util.decode({"size": inst["rle"]["size"], "counts": inst["rle"]["counts"].encode()})
            assert int(dec.sum()) == inst["area"] == int((label == inst["label"]).sum())


def test_frame_callback_sees_every_result_in_order(tmp_path):
    pipe = Pipeline(_cfg({"uri": str(SAMPLE), "max_frames": 5}, [{"type": "events", "path": "events.jsonl"}]), tmp_path)
    seen = []
    pipe.add_frame_callback(lambda r: seen.append((r.frame.index, r.frame.image.shape, len(r.detections))))
    assert pipe.run() == 0
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [i for i, _, _ in seen] == [e["frame"] for e in events] == list(range(5))
    assert all(shape == (576, 768, 3) for _, shape, _ in seen)
    assert [n for _, _, n in seen] == [len(e["boxes"]) for e in events]


def test_webcam_path_on_a_virtual_camera(tmp_path):
    clip = str(SAMPLE).replace("\\", "\\\\").replace(":", "\\:")
    src = {"uri": f"movie={clip}:loop=0,setpts=N/FRAME_RATE/TB,realtime", "type": "lavfi", "format": "lavfi",
           "max_frames": 4}
    code, m = _run(_cfg(src, [{"type": "events", "path": "ev.jsonl"}]), tmp_path)
    assert code == 0
    assert m["frames_out"] == 4 == len((tmp_path / "ev.jsonl").read_text().splitlines())
    # live policy: newest frame wins; whatever the slow model could not take is counted, not queued
    assert m["frames_dropped"] == sum(m["dropped_by_reason"].values())


def test_smoothing_raises_mean_iou_between_consecutive_frames(tmp_path):
    """Real footage, real HOG tracks, the parity fixture's (non-trivial) weights."""
    fx = torch.load(shared_file("fixtures", "upstream_b0_parity.pt"), weights_only=True)
    ckpt = tmp_path / "b0.pth"
    torch.save(fx["checkpoint"], ckpt)
    model = {"name": "b0", "weights": str(ckpt), "input_size": [288, 384], "roi_size": [32, 24], "mask_size": [64, 48],
             "threshold": 0.3}
    vtest = shared_file("data", "vtest.avi")
    cfg = _cfg({"uri": str(vtest), "max_frames": 16}, [], model=model, smoothing={"enabled": True, "alpha": 0.4})
    code, m = _run(cfg, tmp_path)
    assert code == 0 and m["untrained_weights"] is False
    raw, smooth = m["flicker"]["raw"], m["flicker"]["smoothed"]
    assert raw["flicker_pairs"] >= 8
    assert smooth["flicker_mean_iou"] > raw["flicker_mean_iou"]


def test_sigint_mid_run_finalises_a_playable_mp4(tmp_path):
    vtest = shared_file("data", "vtest.avi")
    pipe = tmp_path / "p.yaml"
    pipe.write_text(json.dumps({
        "source": {"uri": str(vtest)}, "detector": {"type": "hog"}, "model": SMALL_MODEL,
        "runtime": {"device": "cpu"}, "sinks": [{"type": "video", "path": "a.mp4"}],
        "logging": {"progress": "off"}}))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "streamseg", "run", str(pipe), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "a.mp4").exists():
            time.sleep(0.5)
        time.sleep(4)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] is True and 0 < m["frames_out"] < 795
    assert len(_decode(out / "a.mp4")) == m["frames_out"]
    assert str(out / "a.mp4") in stdout


def test_untrained_weights_warn_and_watermark(tmp_path, caplog):
    code, m = _run(_cfg({"uri": str(SAMPLE), "max_frames": 1}, [{"type": "events", "path": "e.jsonl"}]), tmp_path)
    assert code == 0 and m["untrained_weights"] is True
    ev = json.loads((tmp_path / "e.jsonl").read_text().splitlines()[0])
    assert "UNTRAINED" in ev["watermark"]
    assert any("RANDOM weights" in r.getMessage() for r in caplog.records)
