"""Mask geometry (paste, overlaps, label maps) and the mask / events / display sinks."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from streamseg.errors import SinkError
from streamseg.masks import (
    box_crop,
    instance_binary_masks,
    instance_label_map,
    label_values,
    paste_prob,
)
from streamseg.records import Detections, Frame, FrameResult, PersonMasks
from streamseg.sinks.events import EventsSink
from streamseg.sinks.masks import MaskFilesSink

HM, WM = 128, 96


def _ramp(a: float = 0.01, b: float = 0.002) -> np.ndarray:
    r, c = np.mgrid[0:HM, 0:WM].astype(np.float32)
    return (a * c + b * r).astype(np.float32)


def _expected_ramp(
    box: tuple[float, ...], x0: int, y0: int, w: int, h: int, a: float = 0.01, b: float = 0.002
) -> np.ndarray:
    """Analytic paste of the ramp: ROI sample j at x1 + j/(47)*(x2-x1); mask col m at ROI (m-0.5)/2."""
    xs = x0 + np.arange(w)
    ys = y0 + np.arange(h)
    col = ((xs - box[0]) * 47 / (box[2] - box[0])) * 2 + 0.5
    row = ((ys - box[1]) * 63 / (box[3] - box[1])) * 2 + 0.5
    col = np.clip(col, 0, WM - 1)
    row = np.clip(row, 0, HM - 1)
    return a * col[None, :] + b * row[:, None]


def test_paste_prob_maps_the_grid_onto_the_box() -> None:
    box = (100.3, 50.7, 180.9, 300.2)
    x0, y0, crop = paste_prob(_ramp(), box, (480, 640))
    assert (x0, y0) == (101, 51) and crop.shape == (250, 80) and crop.dtype == np.float32
    exp = _expected_ramp(box, x0, y0, 80, 250)
    # cv2's bilinear uses 1/32-pixel coordinates: error <= slope/32
    assert np.abs(crop - exp).max() < 0.01 / 32 + 0.002 / 32 + 1e-6


def test_paste_prob_corner_inclusive_sampling() -> None:
    # integer box: the box's first/last pixel centres are ROI samples 0 and 47, i.e. mask columns 0.5 and 94.5
    x0, y0, crop = paste_prob(_ramp(1.0, 0.0), (10, 20, 57, 83), (200, 200))
    assert (x0, y0) == (10, 20) and crop.shape == (64, 48)
    assert crop[0, 0] == pytest.approx(0.5, abs=1 / 32)
    assert crop[0, -1] == pytest.approx(94.5, abs=1 / 32)
    np.testing.assert_allclose(
        np.diff(crop[0]), 2.0, atol=1 / 16
    )  # one ROI step = two mask columns
    x0, y0, crop = paste_prob(_ramp(0.0, 1.0), (10, 20, 57, 83), (200, 200))
    assert crop[0, 0] == pytest.approx(0.5, abs=1 / 32) and crop[-1, 0] == pytest.approx(
        126.5, abs=1 / 32
    )


def test_paste_prob_clips_to_frame_and_handles_tiny_boxes() -> None:
    box = (-20.0, -10.0, 50.0, 90.0)
    x0, y0, crop = paste_prob(_ramp(), box, (60, 40))
    assert (x0, y0) == (0, 0) and crop.shape == (60, 40)
    np.testing.assert_allclose(
        crop, _expected_ramp(box, 0, 0, 40, 60), atol=0.01 / 32 + 0.002 / 32 + 1e-6
    )
    _, _, empty = paste_prob(_ramp(), (10.2, 10.2, 10.8, 10.8), (60, 40))
    assert empty.size == 0
    assert box_crop((700, 10, 800, 50), (480, 640))[2] == 0  # box outside the frame


def _two_people(track_ids: list[int]) -> tuple[PersonMasks, tuple[int, int]]:
    hw = (120, 160)
    boxes = np.array([[10, 10, 70, 100], [40, 20, 120, 110]], np.float32)
    p0 = np.full((HM, WM), 0.9, np.float32)
    p1 = np.full((HM, WM), 0.7, np.float32)
    p1[:, :20] = 0.95  # left strip of person 1 beats person 0
    p1[:10] = 0.1  # top of person 1 is background
    det = Detections(boxes, np.array([0.8, 0.6]), np.array(track_ids))
    return PersonMasks(det, np.stack([p0, p1]), np.array([0.9, 0.8], np.float32)), hw


def test_label_map_overlaps_go_to_higher_probability() -> None:
    masks, hw = _two_people([7, 3])
    lab = instance_label_map(masks, hw)
    assert lab.dtype == np.uint16 and lab.shape == hw
    assert set(np.unique(lab).tolist()) == {0, 3, 7}
    assert lab[50, 20] == 7 and lab[50, 100] == 3 and lab[5, 5] == 0
    assert lab[50, 41] == 3  # left strip of person 1 (0.95) beats person 0 (0.9)
    assert lab[50, 65] == 7  # elsewhere in the overlap person 0 (0.9) beats 0.7
    bins = instance_binary_masks(masks, hw)
    full = [np.zeros(hw, bool) for _ in bins]
    for f, (x0, y0, m) in zip(full, bins):
        f[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    assert not (full[0] & full[1]).any()  # exclusive
    np.testing.assert_array_equal(full[0], lab == 7)
    np.testing.assert_array_equal(full[1], lab == 3)
    loose = instance_binary_masks(masks, hw, exclusive=False)
    assert loose[0][2].sum() > bins[0][2].sum()


def test_untracked_people_are_labelled_by_index() -> None:
    masks, hw = _two_people([-1, -1])
    assert label_values(masks.detections).tolist() == [1, 2]
    assert set(np.unique(instance_label_map(masks, hw)).tolist()) == {0, 1, 2}
    assert label_values(Detections(np.zeros((1, 4)), [1.0], [70000])).tolist() == [70000 - 65535]


def _result(
    index: int, masks: PersonMasks | None, hw: tuple[int, int], dets: Detections | None = None
) -> FrameResult:
    frame = Frame(
        index,
        np.zeros((*hw, 3), np.uint8),
        pts=index * 100,
        time_base=Fraction(1, 1000),
        capture_time=1e9 + index,
    )
    d = (
        masks.detections
        if masks is not None
        else (dets if dets is not None else Detections.empty())
    )
    return FrameResult(frame, d, masks, timings={"detect": 0.01 * (index + 1), "segment": 0.02})


def test_png_and_rle_outputs_agree(tmp_path: Path) -> None:
    masks, hw = _two_people([7, -1])
    sink = MaskFilesSink(png_dir="png", rle_jsonl="masks.jsonl", out_dir=tmp_path)
    assert sink.outputs == [tmp_path / "png", tmp_path / "masks.jsonl"]
    sink.write(_result(3, masks, hw))
    sink.write(_result(4, None, hw))  # a frame without people
    sink.close()
    lab = cv2.imread(str(tmp_path / "png" / "000003.png"), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint16 and lab.shape == hw
    np.testing.assert_array_equal(lab, instance_label_map(masks, hw))
    empty = cv2.imread(str(tmp_path / "png" / "000004.png"), cv2.IMREAD_UNCHANGED)
    assert empty.dtype == np.uint16 and not empty.any()
    lines = [json.loads(x) for x in (tmp_path / "masks.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [3, 4]
    first = lines[0]
    assert first["pts"] == 300 and first["time"] == pytest.approx(0.3) and first["size"] == list(hw)
    inst = first["instances"]
    assert [i["track_id"] for i in inst] == [7, -1] and [i["label"] for i in inst] == [7, 2]
    assert inst[0]["box"] == [10, 10, 70, 100] and inst[0]["score"] == pytest.approx(0.8)
    for i in inst:
        rle = {"size": i["rle"]["size"], "counts": i["rle"]["counts"].encode()}
        dec = mask_util.decode(rle).astype(bool)
        np.testing.assert_array_equal(dec, lab == i["label"])
        assert i["area"] == int(dec.sum()) == int(mask_util.area(rle)) > 0
    assert lines[1]["instances"] == []


def test_events_match_boxes_and_mask_files(tmp_path: Path) -> None:
    masks, hw = _two_people([7, 3])
    ev = EventsSink("ev/events.jsonl", out_dir=tmp_path)
    mf = MaskFilesSink(rle_jsonl=tmp_path / "m.jsonl")
    r = _result(5, masks, hw)
    r.watermark = "UNTRAINED WEIGHTS"
    boxes_only = _result(6, None, hw, Detections(np.array([[1, 2, 30, 40]]), [0.5], [9]))
    for res in (r, boxes_only):
        ev.write(res)
        mf.write(res)
    ev.close()
    mf.close()
    assert ev.outputs == [tmp_path / "ev" / "events.jsonl"]
    events = [json.loads(x) for x in ev.outputs[0].read_text().splitlines()]
    rles = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    e = events[0]
    assert (
        e["frame"] == 5
        and e["pts"] == 500
        and e["time"] == pytest.approx(0.5)
        and e["capture_time"] == pytest.approx(1e9 + 5)
    )
    assert e["boxes"] == masks.detections.xyxy.tolist() and e["track_ids"] == [7, 3]
    assert e["scores"] == pytest.approx([0.8, 0.6])
    assert e["mask_areas"] == [i["area"] for i in rles[0]["instances"]]
    assert e["timings"] == {"detect": pytest.approx(0.06), "segment": pytest.approx(0.02)}
    assert e["watermark"] == "UNTRAINED WEIGHTS"
    e2 = events[1]
    assert e2["boxes"] == [[1, 2, 30, 40]] and e2["track_ids"] == [9] and e2["mask_areas"] is None
    assert rles[1]["instances"][0]["rle"] is None and rles[1]["instances"][0]["track_id"] == 9


def test_mask_sink_errors(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="set png_dir and/or rle_jsonl"):
        MaskFilesSink()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="masks sink: cannot write"):
        MaskFilesSink(png_dir=blocker / "png")
    with pytest.raises(SinkError, match="events sink: cannot write"):
        EventsSink(blocker / "e.jsonl")


def test_display_sink_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamseg.sinks.display import DisplaySink

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SinkError) as e:
        DisplaySink()
    assert str(e.value) == (
        "display sink: no display available (DISPLAY is not set); "
        "remove the display sink or run with a desktop session"
    )
    monkeypatch.setenv("DISPLAY", ":97")  # no X server with that number here
    if not Path("/tmp/.X11-unix/X97").exists():
        with pytest.raises(SinkError, match="no X server on DISPLAY=:97"):
            DisplaySink()
