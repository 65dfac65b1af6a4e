#!/usr/bin/env bash
# System packages the RTSP tests need: Debian's gst-rtsp-server (plus the H.264 RTP/parse
# elements) for the test relay run by /usr/bin/python3 (see tests/conftest.py).
# Idempotent: does nothing when the relay's imports and elements are already there.
set -euo pipefail

have_relay_deps() {
  /usr/bin/python3 - <<'PY' 2>/dev/null
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
for name in ("rtph264depay", "rtph264pay", "h264parse", "appsrc", "appsink"):
    assert Gst.ElementFactory.find(name) is not None, name
PY
}

if [ -x /usr/bin/python3 ] && have_relay_deps; then
  echo "system-deps: RTSP relay dependencies already present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: apt-get not found; install gst-rtsp-server (GObject introspection) and" \
       "GStreamer plugins base/good/bad for /usr/bin/python3 by hand" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  python3 python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad >/dev/null

if have_relay_deps; then
  echo "system-deps: RTSP relay dependencies installed"
else
  echo "system-deps: installed packages but the relay imports/elements still fail" >&2
  exit 1
fi
