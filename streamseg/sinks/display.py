"""On-screen preview window (cv2.imshow), refused up front when there is no display to open it on."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import cv2

from streamseg.annotate import Annotator
from streamseg.errors import SinkError
from streamseg.records import FrameResult

log = logging.getLogger(__name__)

__all__ = ["DisplaySink", "check_display"]

NO_DISPLAY = (
    "display sink: no display available (DISPLAY is not set); "
    "remove the display sink or run with a desktop session"
)


def _cv2_gui() -> str:
    """The GUI backend OpenCV was built with ('NONE' for the headless wheel)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip() or "NONE"
    return "UNKNOWN"


def check_display() -> None:
    """Raise SinkError (one line) unless a window can plausibly be opened here.

    Checked before the run starts because a GUI toolkit that cannot reach a display may abort the
    whole process instead of raising.
    """
    if sys.platform.startswith("linux"):
        disp = os.environ.get("DISPLAY", "").strip()
        wayland = os.environ.get("WAYLAND_DISPLAY", "").strip()
        if not disp and not wayland:
            raise SinkError(NO_DISPLAY)
        if disp.startswith(":") and not wayland:  # local X server: its socket must exist
            num = disp[1:].split(".", 1)[0]
            if num.isdigit() and not Path(f"/tmp/.X11-unix/X{num}").exists():
                raise SinkError(
                    f"display sink: no X server on DISPLAY={disp} (/tmp/.X11-unix/X{num} missing); "
                    "remove the display sink or run with a desktop session"
                )
    gui = _cv2_gui()
    if gui.upper().startswith("NONE"):
        raise SinkError(
            "display sink: this OpenCV has no GUI support (headless build); "
            "install opencv-python with the same version as opencv-python-headless or remove the display sink"
        )


class DisplaySink:
    """Shows the annotated frames in a window; 'q' or Esc sets ``stop_requested`` for the run loop."""

    def __init__(
        self,
        window: str = "streamseg",
        annotator: Annotator | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        check_display()
        self.window = window
        self.annotator = annotator or Annotator(draw_fps=True)
        self.stop_requested = False
        self._fps: float | None = None
        self._last: float | None = None
        try:
            cv2.namedWindow(self.window, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise SinkError(
                f"display sink: cannot open a window: {str(e).strip().splitlines()[-1]}"
            ) from None
        self._open = True

    @property
    def outputs(self) -> list[Path]:
        return []

    def write(self, result: FrameResult) -> None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self._fps = inst if self._fps is None else 0.9 * self._fps + 0.1 * inst
        self._last = now
        img = self.annotator.annotate(result.frame.image, result, fps=self._fps)
        cv2.imshow(self.window, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            if not self.stop_requested:
                log.info("display sink: stop requested from the window")
            self.stop_requested = True

    def close(self) -> None:
        if self._open:
            try:
                cv2.destroyWindow(self.window)
                cv2.waitKey(1)
            except cv2.error:
                pass
            self._open = False
