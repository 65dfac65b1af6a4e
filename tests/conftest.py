"""Session fixtures for real-time video tests: a real RTSP relay (Debian gst-rtsp-server, run by
the system python) and a real publisher looping the pedestrian clip, both on 127.0.0.1.

Locally the RTSP tests skip when GStreamer's RTSP server is not installed; with CI=true they
fail instead (``.ci/system-deps.sh`` installs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from _shared import shared_file

from streamseg.bench.live import free_port, stop_process, wait_port  # noqa: F401 - tests import free_port from here

SYSTEM_PYTHON = "/usr/bin/python3"
RELAY_PATHS = "live,out,recon,relaytest,pw"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: run .ci/system-deps.sh)")
    pytest.skip(reason)


class RtspRelay:
    """One relay process. Publish to ``publish_url(name)``, read from ``read_url(name)``."""

    def __init__(self, script: Path, port: int | None = None):
        self.script = script
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspRelay":
        self.proc = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(self.script),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--paths",
                RELAY_PATHS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_port(self.port):
            self.stop(kill=True)
            raise RuntimeError(f"RTSP relay did not listen on port {self.port}")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            stop_process(self.proc, kill=kill)
            self.proc = None

    def read_url(self, name: str, userinfo: str = "") -> str:
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/{name}"

    def publish_url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/publish/{name}"


class LoopPublisher:
    """The shared tools' PyAV publisher: remuxes a clip in an endless real-time loop."""

    def __init__(self, script: Path, url: str, clip: Path):
        self.script, self.url, self.clip = script, url, clip
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LoopPublisher":
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), "loop", self.url, str(self.clip)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            stop_process(self.proc, kill=kill)
            self.proc = None


def wait_readable(url: str, timeout: float = 20.0) -> bool:
    """Retry opening ``url`` until one frame decodes (the publisher needs a moment to connect)."""
    import av

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with av.open(
                url,
                options={
                    "rtsp_transport": "tcp",
                    "timeout": "3000000",
                    "analyzeduration": "0",
                    "probesize": "32768",
                },
                timeout=(5, 5),
            ) as c:
                for _ in c.decode(video=0):
                    return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    return False


@pytest.fixture(scope="session")
def rtsp_tools() -> dict[str, Path]:
    """Paths of the relay, publisher and looped clip; skip/fail when GStreamer is missing."""
    relay = shared_file("tools", "rtsp_relay.py")
    publisher = shared_file("tools", "publish_loop.py")
    clip = shared_file("data", "pedestrians_10s.mp4")
    if not Path(SYSTEM_PYTHON).exists():
        _missing(f"{SYSTEM_PYTHON} is missing (the RTSP relay runs on the system python with gi)")
    probe = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
            "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
            "assert all(Gst.ElementFactory.find(e) for e in "
            "('rtph264depay','rtph264pay','h264parse'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        _missing(
            "GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, "
            "gstreamer1.0-plugins-good/bad) is not installed"
        )
    return {"relay": relay, "publisher": publisher, "clip": clip}


@pytest.fixture(scope="session")
def rtsp_server(rtsp_tools: dict[str, Path]) -> Iterator[RtspRelay]:
    """A relay on a free port for the whole session."""
    relay = RtspRelay(rtsp_tools["relay"]).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="session")
def rtsp_camera(rtsp_server: RtspRelay, rtsp_tools: dict[str, Path]) -> Iterator[str]:
    """URL of a 'camera': the pedestrian clip (768x576, 10 fps) looped in real time."""
    pub = LoopPublisher(
        rtsp_tools["publisher"], rtsp_server.publish_url("live"), rtsp_tools["clip"]
    ).start()
    try:
        if not wait_readable(rtsp_server.read_url("live")):
            raise RuntimeError("looping RTSP publisher did not come up")
        yield rtsp_server.read_url("live")
    finally:
        pub.stop()


@pytest.fixture
def relay_factory(rtsp_tools: dict[str, Path]) -> Iterator:
    """Make extra relays (e.g. to kill and restart one); all are stopped after the test."""
    made: list[RtspRelay] = []

    def make(port: int | None = None) -> RtspRelay:
        r = RtspRelay(rtsp_tools["relay"], port).start()
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.stop(kill=True)


@pytest.fixture
def publisher_factory(rtsp_tools: dict[str, Path]) -> Iterator:
    """Make looping publishers of the clip to a URL; all are stopped after the test."""
    made: list[LoopPublisher] = []

    def make(url: str) -> LoopPublisher:
        p = LoopPublisher(rtsp_tools["publisher"], url, rtsp_tools["clip"]).start()
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop(kill=True)
