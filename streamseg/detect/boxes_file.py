"""Boxes from a file, for users who run their own detector (JSON lines or CSV, keyed by frame index)."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from streamseg.errors import UserError
from streamseg.records import Detections, Frame

from .base import ByteTrackIds, clip_boxes

log = logging.getLogger(__name__)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return x


def _check_box(box: Any) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"a box must be [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (_num(v, "box coordinate") for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box {box!r} has x2 < x1 or y2 < y1")
    return [x1, y1, x2, y2]


def _read_jsonl(path: Path) -> dict[int, dict[str, list]]:
    frames: dict[int, dict[str, list]] = {}
    with path.open("r", encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "frame" not in rec or "boxes" not in rec:
                    raise ValueError('expected an object with "frame" and "boxes"')
                fi = rec["frame"]
                if isinstance(fi, bool) or not isinstance(fi, int) or fi < 0:
                    raise ValueError(f'"frame" must be an integer >= 0, got {fi!r}')
                boxes = [_check_box(b) for b in rec["boxes"]]
                n = len(boxes)
                scores = rec.get("scores")
                scores = [1.0] * n if scores is None else [_num(s, "score") for s in scores]
                ids = rec.get("track_ids")
                ids = None if ids is None else [int(_num(t, "track id")) for t in ids]
                if len(scores) != n or (ids is not None and len(ids) != n):
                    raise ValueError(f'"scores"/"track_ids" must have one entry per box ({n})')
            except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
                raise UserError(f"detector.path: {path}:{ln}: {e}") from e
            entry = frames.setdefault(fi, {"boxes": [], "scores": [], "ids": []})
            entry["boxes"] += boxes
            entry["scores"] += scores
            entry["ids"] += ids if ids is not None else [None] * n
    return frames


def _read_csv(path: Path) -> dict[int, dict[str, list]]:
    frames: dict[int, dict[str, list]] = {}
    with path.open("r", encoding="utf-8", newline="") as f:
        for ln, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if ln == 1 and row[0].lower() == "frame":
                continue  # header
            try:
                if not 5 <= len(row) <= 7:
                    raise ValueError(
                        f"expected frame,x1,y1,x2,y2[,score[,track_id]], got {len(row)} fields"
                    )
                fi = int(row[0])
                if fi < 0:
                    raise ValueError(f"frame must be >= 0, got {fi}")
                box = _check_box(row[1:5])
                score = _num(row[5], "score") if len(row) > 5 and row[5] != "" else 1.0
                tid = int(float(row[6])) if len(row) > 6 and row[6] != "" else None
            except ValueError as e:
                raise UserError(f"detector.path: {path}:{ln}: {e}") from e
            entry = frames.setdefault(fi, {"boxes": [], "scores": [], "ids": []})
            entry["boxes"].append(box)
            entry["scores"].append(score)
            entry["ids"].append(tid)
    return frames


def read_boxes_file(path: str | Path) -> dict[int, Detections]:
    """Parse a whole boxes file up front so a bad line stops the run before it starts."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(
            f"detector.path: boxes file '{p}' not found (JSON lines .jsonl or CSV .csv)"
        )
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        raw = _read_jsonl(p)
    elif suffix in (".csv", ".txt"):
        raw = _read_csv(p)
    else:
        raise UserError(
            f"detector.path: '{p}' has unknown extension '{suffix}'; allowed: .jsonl, .json, .ndjson, .csv, .txt"
        )
    out: dict[int, Detections] = {}
    for fi, e in raw.items():
        ids = e["ids"]
        if any(t is None for t in ids):
            track_ids = np.full(len(ids), -1, np.int64)
        else:
            track_ids = np.asarray(ids, np.int64)
        out[fi] = Detections(
            np.asarray(e["boxes"], np.float32), np.asarray(e["scores"], np.float32), track_ids
        )
    return out


class BoxesFileDetector:
    """Replays per-frame boxes from a file; frames the file does not list have no people.

    When the file carries track IDs they are used as is; otherwise (and unless ``tracker=None``)
    ultralytics' BYTETracker assigns them.
    """

    def __init__(
        self, path: str | Path, tracker: str | None = "bytetrack", min_score: float = 0.0
    ) -> None:
        if tracker is not None and str(tracker).lower() not in ("bytetrack", "none", "off", ""):
            raise UserError(
                f"detector.tracker: '{tracker}' is not available for boxes_file; allowed: bytetrack, none"
            )
        self.path = Path(path).expanduser()
        self.frames = read_boxes_file(self.path)
        self.min_score = float(min_score)
        self.file_has_ids = bool(self.frames) and all(
            len(d) == 0 or bool((d.track_ids >= 0).all()) for d in self.frames.values()
        )
        use_tracker = (
            not self.file_has_ids and tracker is not None and str(tracker).lower() == "bytetrack"
        )
        self._ids = ByteTrackIds() if use_tracker else None
        self.tracks = self.file_has_ids or self._ids is not None
        log.info(
            "boxes_file %s: %d frames, %d boxes, ids from %s",
            self.path,
            len(self.frames),
            sum(len(d) for d in self.frames.values()),
            "file" if self.file_has_ids else ("ByteTrack" if self._ids else "nowhere (untracked)"),
        )

    def detect(self, frame: Frame) -> Detections:
        dets = self.frames.get(frame.index)
        if dets is None or len(dets) == 0:
            dets = Detections.empty()
        else:
            dets = dets.select(dets.scores >= self.min_score)
            dets = Detections(
                clip_boxes(dets.xyxy, frame.height, frame.width),
                dets.scores,
                dets.track_ids,
                dets.class_ids,
            )
        if self._ids is not None:
            dets = self._ids.assign(dets)
        elif not self.file_has_ids:
            dets = Detections(
                dets.xyxy, dets.scores, np.full(len(dets), -1, np.int64), dets.class_ids
            )
        return dets

    def reset(self) -> None:
        if self._ids is not None:
            self._ids.reset()

    def close(self) -> None:
        """Nothing to release: the file was read at construction."""


def write_boxes_jsonl(path: str | Path, per_frame: dict[int, Detections]) -> Path:
    """Write detections in the format ``BoxesFileDetector`` reads (handy to cache a slow detector)."""
    p = Path(path)
    with p.open("w", encoding="utf-8") as f:
        for fi in sorted(per_frame):
            d = per_frame[fi]
            rec: dict[str, Any] = {
                "frame": int(fi),
                "boxes": d.xyxy.tolist(),
                "scores": d.scores.tolist(),
            }
            if len(d) and (d.track_ids >= 0).all():
                rec["track_ids"] = d.track_ids.tolist()
            f.write(json.dumps(rec) + "\n")
    return p
