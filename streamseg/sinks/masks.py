"""Mask files: per-frame 16-bit PNG instance-ID maps and/or COCO RLE JSON lines with track IDs.

Both outputs come from the same exclusive per-person masks (overlaps go to the higher
probability), so a PNG pixel labelled L and the RLE of the instance with ``label`` L agree exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamseg.errors import SinkError
from streamseg.masks import binarize, label_values, paint_labels, paste_all
from streamseg.records import FrameResult

log = logging.getLogger(__name__)

__all__ = ["MaskFilesSink", "encode_rle", "resolve_output"]


def resolve_output(path: str | Path, out_dir: str | Path | None) -> Path:
    """A relative sink path lands under ``out_dir`` (the CLI's --out) when one is given."""
    p = Path(path).expanduser()
    if out_dir is not None and not p.is_absolute():
        p = Path(out_dir) / p
    return p


def encode_rle(
    crop_mask: np.ndarray, x0: int, y0: int, frame_hw: tuple[int, int]
) -> dict[str, Any]:
    """COCO RLE (pycocotools) of a boolean crop placed in the frame; ``counts`` as a str for JSON."""
    from pycocotools import mask as mask_util

    H, W = int(frame_hw[0]), int(frame_hw[1])
    full = np.zeros((H, W), np.uint8, order="F")
    h, w = crop_mask.shape
    if h and w:
        full[y0 : y0 + h, x0 : x0 + w] = crop_mask
    rle = mask_util.encode(full)
    counts = rle["counts"]
    return {
        "size": [H, W],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


class MaskFilesSink:
    """Writes ``<png_dir>/<frame_index:06d>.png`` label maps and/or one RLE JSON line per frame.

    PNG value = track ID when tracked, else 1-based detection index (JSON gives both as
    ``track_id`` and ``label``). ``threshold`` None uses each frame's ``PersonMasks.threshold``.
    """

    def __init__(
        self,
        png_dir: str | Path | None = None,
        rle_jsonl: str | Path | None = None,
        threshold: float | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        if png_dir is None and rle_jsonl is None:
            raise SinkError("masks sink: set png_dir and/or rle_jsonl (nothing to write)")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise SinkError(f"masks sink: threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.png_dir = resolve_output(png_dir, out_dir) if png_dir is not None else None
        self.rle_path = resolve_output(rle_jsonl, out_dir) if rle_jsonl is not None else None
        self._fh = None
        self.frames_written = 0
        try:
            if self.png_dir is not None:
                self.png_dir.mkdir(parents=True, exist_ok=True)
            if self.rle_path is not None:
                self.rle_path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.rle_path.open("w", encoding="utf-8")
        except OSError as e:
            raise SinkError(
                f"masks sink: cannot write {e.filename or self.png_dir}: {e.strerror or e}"
            ) from None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.png_dir, self.rle_path) if p is not None]

    def write(self, result: FrameResult) -> None:
        """Write the mask outputs of one frame (an all-zero map when it has no people)."""
        frame = result.frame
        hw = (frame.height, frame.width)
        masks = result.masks
        dets = masks.detections if masks is not None else result.detections
        labels = label_values(dets)
        if masks is not None and len(masks):
            thr = masks.threshold if self.threshold is None else float(self.threshold)
            probs = paste_all(masks, hw)
            bins = binarize(probs, thr, exclusive=True)
        else:
            bins = []
        if self.png_dir is not None:
            lab = paint_labels(bins, labels, hw)
            path = self.png_dir / f"{frame.index:06d}.png"
            try:
                ok = cv2.imwrite(str(path), lab)
            except cv2.error as e:
                raise SinkError(f"masks sink: cannot write {path}: {e}") from None
            if not ok:
                raise SinkError(f"masks sink: cannot write {path} (check the folder is writable)")
        if self._fh is not None:
            inst = []
            for i in range(len(dets)):
                rec: dict[str, Any] = {
                    "track_id": int(dets.track_ids[i]),
                    "label": int(labels[i]),
                    "score": round(float(dets.scores[i]), 5),
                    "box": [round(float(v), 2) for v in dets.xyxy[i]],
                }
                if bins:
                    x0, y0, m = bins[i]
                    rec["mask_score"] = (
                        round(float(masks.scores[i]), 5) if masks is not None else None
                    )
                    rec["area"] = int(np.count_nonzero(m))
                    rec["rle"] = encode_rle(m, x0, y0, hw)
                else:
                    rec["area"] = 0
                    rec["rle"] = None
                inst.append(rec)
            line = {
                "frame": frame.index,
                "pts": frame.pts,
                "time": frame.time,
                "source_id": frame.source_id,
                "size": [frame.height, frame.width],
                "instances": inst,
            }
            try:
                self._fh.write(json.dumps(line) + "\n")
                self._fh.flush()
            except OSError as e:
                raise SinkError(f"masks sink: cannot write {self.rle_path}: {e}") from None
        self.frames_written += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        log.info(
            "masks sink: %d frames -> %s", self.frames_written, ", ".join(map(str, self.outputs))
        )

    def __enter__(self) -> MaskFilesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
