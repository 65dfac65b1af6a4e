"""``streamseg bench live``: a real RTSP relay, a looping publisher and ``streamseg run`` for N seconds.

The relay (the shared GStreamer relay script, run on the system python) and the publisher (the shared
PyAV loop publisher, remuxing a clip in real time) are started as child processes; the pipeline
reads ``rtsp://127.0.0.1:PORT/live`` and publishes its annotated output to ``.../publish/out``.
The measured period starts at the first output frame (model build and stream open are excluded) and
lasts ``--seconds``; then the source is stopped, the pipeline drains and finalises, and the child
processes are stopped. Reported: FPS, drop rate, capture-to-output and capture-to-publish latency
percentiles overall and per window (``latency_window_s``, default 60 s, windows counted from the
first output frame), plus the drift of p50/p95 between the first and the last full window.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .machine import machine_info
from streamseg.metrics import write_json

log = logging.getLogger(__name__)

SCHEMA = "streamseg.bench.live/1"
SYSTEM_PYTHON = "/usr/bin/python3"
REPO_ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers
def shared_dir() -> Path | None:
    """The shared material folder: $STREAMSEG_SHARED, else ../shared beside the repo, else ./shared."""
    env = os.environ.get("STREAMSEG_SHARED")
    cands = ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]
    return next((c for c in cands if c.is_dir()), None)


def default_clip() -> Path:
    """The shared 10 s pedestrians clip when present, else the shipped 3 s sample."""
    sd = shared_dir()
    if sd is not None and (sd / "data" / "pedestrians_10s.mp4").is_file():
        return sd / "data" / "pedestrians_10s.mp4"
    return REPO_ROOT / "samples" / "pedestrians_3s.mp4"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> bool:
    """Whether something accepts connections on 127.0.0.1:port within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(p: subprocess.Popen | None, kill: bool = False, timeout: float = 5.0) -> None:
    """SIGTERM (SIGKILL when ``kill``) one child we started; SIGKILL it if it does not exit in
    ``timeout`` seconds. Also used by the test fixtures."""
    if p is None or p.poll() is not None:
        return
    if kill:
        p.kill()
    else:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout)


class LiveRig:
    """The relay and the looping publisher as child processes (a context manager that always stops them)."""

    def __init__(self, clip: Path, port: int | None = None, tools: Path | None = None):
        sd = tools or ((shared_dir() or REPO_ROOT / "shared") / "tools")
        self.relay_script, self.pub_script = sd / "rtsp_relay.py", sd / "publish_loop.py"
        for p in (self.relay_script, self.pub_script):
            if not p.is_file():
                raise UserError(f"bench live: {p} not found; set STREAMSEG_SHARED to the folder holding tools/")
        if not Path(SYSTEM_PYTHON).is_file():
            raise UserError(f"bench live: {SYSTEM_PYTHON} not found (the relay needs the system python with gi)")
        self.clip = Path(clip)
        if not self.clip.is_file():
            raise UserError(f"bench live --clip: {self.clip} not found")
        self.port = port or free_port()
        self.relay: subprocess.Popen | None = None
        self.publisher: subprocess.Popen | None = None

    @property
    def read_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    @property
    def out_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/publish/out"

    def __enter__(self) -> LiveRig:  # noqa: PYI034
        self.relay = subprocess.Popen(
            [SYSTEM_PYTHON, str(self.relay_script), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.__exit__()
            raise UserError(f"bench live: the RTSP relay did not listen on port {self.port} "
                            "(is gir1.2-gst-rtsp-server-1.0 installed? see .ci/system-deps.sh)")
        self.publisher = subprocess.Popen(
            [sys.executable, str(self.pub_script), "loop", f"rtsp://127.0.0.1:{self.port}/publish/live",
             str(self.clip)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let the publisher ANNOUNCE and send its first keyframe
        if self.publisher.poll() is not None:
            self.__exit__()
            raise UserError(f"bench live: the publisher exited at once (rc {self.publisher.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.publisher)
        stop_process(self.relay)


def live_config(read_url: str, out_url: str, overrides: list[str]) -> Any:
    """The small live pipeline: HOG, b0 untrained at 256x320, RTSP in and out, 60 s latency windows."""
    from ..config import config_from_dict

    raw = {
        "source": {"uri": read_url, "type": "rtsp"},
        "detector": {"type": "hog"},
        "model": {"name": "b0", "weights": "untrained", "input_size": [256, 320]},
        "runtime": {"device": "auto"},
        "sinks": [{"type": "rtsp", "url": out_url}],
        "logging": {"progress": "status", "status_interval_s": 10},
        "metrics": {"path": "metrics.json", "latency_window_s": 60},
    }
    return config_from_dict(raw, origin="bench live", overrides=[*overrides, "metrics.path=metrics.json"])


# ----------------------------------------------------------------------------- the run
def run_live(cfg: Any, seconds: float, out_dir: Path, startup_timeout_s: float = 180.0) -> dict[str, Any]:
    """Run the pipeline in this thread; a watcher stops its source ``seconds`` after the first output frame."""
    from ..pipeline import Pipeline

    pipe = Pipeline(cfg, out_dir)
    done_at: list[float] = []
    first = threading.Event()

    def record(_result: Any) -> None:
        if not done_at:  # count latency windows from the first output frame, not from Pipeline()
            t = time.time()
            pipe.metrics.latency.start = t
            pipe.metrics.publish_latency.start = t
            first.set()
        done_at.append(time.perf_counter())

    pipe.add_frame_callback(record)
    finished = threading.Event()
    timing: dict[str, Any] = {}

    def watcher() -> None:
        if not first.wait(startup_timeout_s):
            log.error("bench live: no output frame within %.0f s; stopping", startup_timeout_s)
            timing["startup_timed_out"] = True
        elif finished.wait(seconds):
            return
        timing["stopped_at"] = time.perf_counter()
        src = getattr(pipe, "source", None)
        if src is not None:
            src.stop()

    t0 = time.perf_counter()
    th = threading.Thread(target=watcher, name="bench-live-timer", daemon=True)
    th.start()
    try:
        rc = pipe.run()
    finally:
        finished.set()
        th.join(5)
    t_end = time.perf_counter()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    steady = None
    if len(done_at) > 1 and done_at[-1] > done_at[0]:
        steady = (len(done_at) - 1) / (done_at[-1] - done_at[0])
    return {"rc": rc, "metrics": metrics, "steady_fps": steady,
            "first_output_s": (done_at[0] - t0) if done_at else None,
            "measured_s": (done_at[-1] - done_at[0]) if len(done_at) > 1 else 0.0,
            "drain_and_finalise_s": (t_end - timing["stopped_at"]) if "stopped_at" in timing else None,
            "startup_timed_out": bool(timing.get("startup_timed_out"))}


def _drift(windows: list[dict[str, Any]], window_s: float) -> dict[str, Any] | None:
    """p50/p95 of the last full window minus the first (ms); None with fewer than two windows."""
    if len(windows) < 2:
        return None
    a, b = windows[0], windows[-1]
    out: dict[str, Any] = {"from_window": a["window"], "to_window": b["window"]}
    for k in ("p50_ms", "p95_ms"):
        out[k] = round(b[k] - a[k], 3) if a.get(k) is not None and b.get(k) is not None else None
    out["last_window_count"] = b.get("count")
    out["note"] = f"windows of {window_s:g} s from the first output frame; the last one may be partial"
    return out


def run_bench(opts: argparse.Namespace) -> dict[str, Any]:
    """Relay + publisher + pipeline for ``opts.seconds``; the JSON-ready result."""
    if opts.seconds <= 0:
        raise UserError(f"bench live --seconds: must be > 0, got {opts.seconds}")
    clip = Path(opts.clip) if opts.clip else default_clip()
    with LiveRig(clip, port=opts.port) as rig:
        cfg = live_config(rig.read_url, rig.out_url, list(opts.overrides))
        with tempfile.TemporaryDirectory(prefix="streamseg_bench_live_") as td:
            run = run_live(cfg, opts.seconds, Path(td))
    m = run["metrics"]
    f_in, dropped = m["frames_in"], m["frames_dropped"]
    c2o = m["capture_to_output_latency"]
    c2p = m.get("capture_to_publish_latency")
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "note": opts.note,
        "config": {"seconds": opts.seconds, "clip": str(clip), "overrides": list(opts.overrides),
                   "model": cfg.model.name, "weights": cfg.model.weights, "input_size": list(cfg.model.input_size),
                   "detector": cfg.detector.type, "device": cfg.runtime.device,
                   "latency_window_s": cfg.metrics.latency_window_s, "source": "rtsp relay /live (looping publisher)",
                   "sink": "rtsp relay /publish/out"},
        "exit_code": run["rc"],
        "startup_timed_out": run["startup_timed_out"],
        "first_output_s": run["first_output_s"],
        "measured_s": run["measured_s"],
        "drain_and_finalise_s": run["drain_and_finalise_s"],
        "frames_in": f_in,
        "frames_out": m["frames_out"],
        "frames_dropped": dropped,
        "dropped_by_reason": m["dropped_by_reason"],
        "drop_rate": dropped / (f_in + dropped) if (f_in + dropped) else None,
        "fps": m["fps"],
        "fps_steady": run["steady_fps"],
        "capture_to_output_latency": c2o,
        "capture_to_publish_latency": c2p,
        "latency_drift": {
            "capture_to_output": _drift(c2o["windows"], c2o["window_s"]),
            "capture_to_publish": _drift(c2p["windows"], c2p["window_s"]) if c2p else None,
        },
        "stage_latency": m["stage_latency"],
        "peak_rss_mb": m["peak_rss_mb"],
        "rtsp_out": m.get("rtsp_out"),
        "source_stats": m.get("source"),
        "definitions": {
            "drop_rate": "frames_dropped / (frames_in + frames_dropped)",
            "fps": "metrics.json fps (frames_out / wall time from Pipeline(), startup included)",
            "fps_steady": "(frames_out - 1) / time from the first to the last output frame",
        },
        "pipeline_metrics": m,
    }


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamseg bench live", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="measured seconds after the first output frame")
    p.add_argument("--clip", default=None, help="H.264 MP4 to loop (default: shared pedestrians_10s.mp4, "
                                                "else samples/pedestrians_3s.mp4)")
    p.add_argument("--port", type=int, default=None, help="relay port (default: a free one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set model.input_size=[128,160])")
    p.add_argument("--note", default=None, help="free text stored in the JSON")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/live_<date>.json)")
    return p


def default_out() -> Path:
    return Path("benchmarks/results") / f"live_{_dt.date.today().isoformat()}.json"


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``streamseg bench live ...``); writes the JSON and prints a short summary."""
    opts = build_parser().parse_args(argv)
    out = Path(opts.out) if opts.out else default_out()
    result = run_bench(opts)
    write_json(out, result)
    c2o = result["capture_to_output_latency"]["overall"]
    c2p = (result["capture_to_publish_latency"] or {}).get("overall", {})
    print(f"{result['frames_out']} frames out, {result['fps']:.2f} fps (steady {result['fps_steady'] or float('nan'):.2f}), "
          f"drop rate {result['drop_rate'] or 0:.3f}; capture->output p50 {c2o['p50_ms']} ms p95 {c2o['p95_ms']} ms; "
          f"capture->publish p50 {c2p.get('p50_ms')} ms p95 {c2p.get('p95_ms')} ms")
    print(f"wrote {out}")
    return 0 if result["exit_code"] == 0 else int(result["exit_code"])
