"""A folder of still images played as a video: sorted file names, pts = index at a fixed rate."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from streamseg.errors import SourceError
from streamseg.sources.base import RawFrame, VideoSource

__all__ = ["ImageFolderSource", "IMAGE_SUFFIXES"]

log = logging.getLogger("streamseg.sources")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _read_rgb(path: Path) -> np.ndarray | None:
    import cv2  # local import: only image folders need OpenCV here

    data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII paths, unlike cv2.imread
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        return None
    return np.ascontiguousarray(img[:, :, ::-1])


class ImageFolderSource(VideoSource):
    """Frames from ``folder/*.{jpg,jpeg,png,bmp,webp}`` in name order; never drops frames."""

    def __init__(
        self,
        folder: str,
        *,
        fps: float | None = None,
        queue_size: int = 8,
        max_frames: int | None = None,
        loop: bool = False,
    ):
        super().__init__(
            folder,
            "images",
            live=False,
            queue_size=queue_size,
            reconnect=None,
            max_frames=max_frames,
            loop=loop,
        )
        self.folder = Path(folder)
        rate = Fraction(fps if fps is not None else 10).limit_denominator(100000)
        if rate <= 0:
            raise SourceError(f"source.fps must be > 0 for an image folder, got {fps}")
        self.rate = rate
        self._files: list[Path] = []

    def _connect(self) -> Any:
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} not found (source.uri)")
        files = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise SourceError(
                f"image folder {self.folder} has no images "
                f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
            )
        self._files = files
        first = None
        for p in files:
            first = _read_rgb(p)
            if first is not None:
                break
        if first is None:
            raise SourceError(
                f"image folder {self.folder}: none of its {len(files)} images can be decoded"
            )
        n = len(files) if self.max_frames is None else min(len(files), self.max_frames)
        self._set_stream_info(
            width=int(first.shape[1]),
            height=int(first.shape[0]),
            fps=self.rate,
            time_base=1 / self.rate,
            codec="image",
            frame_count=None if self.loop else n,
        )
        return files

    def _frames(self, handle: Any) -> Iterator[RawFrame | None]:
        tb = 1 / self.rate
        for i, path in enumerate(handle):
            img = _read_rgb(path)
            if img is None:
                self._count_decode_error()
                log.warning("source %s: skipping unreadable image %s", self._uri_safe, path.name)
                yield None
                continue
            yield img, i, tb
