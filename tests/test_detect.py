"""Detectors: HOG on real footage, boxes files, YOLO built offline from a model config, weight errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
from _shared import shared_file

from streamseg.detect import Detector, create_detector, detector_options
from streamseg.detect.boxes_file import write_boxes_jsonl
from streamseg.errors import UserError
from streamseg.records import Detections, Frame


def _vtest_frames(first: int, count: int) -> list[Frame]:
    path = shared_file("data", "vtest.avi")
    out: list[Frame] = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= first:
                out.append(
                    Frame(
                        index=i,
                        image=f.to_ndarray(format="rgb24"),
                        pts=f.pts,
                        time_base=f.time_base,
                    )
                )
            if len(out) == count:
                break
    assert len(out) == count
    return out


@pytest.fixture(scope="module")
def vtest_400() -> list[Frame]:
    """vtest.avi frames 400..404 (three people walking, measured in IO_RECIPES §5)."""
    return _vtest_frames(400, 5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _check_shapes(d: Detections) -> None:
    n = len(d)
    assert d.xyxy.shape == (n, 4) and d.xyxy.dtype == np.float32
    assert d.scores.shape == (n,) and d.track_ids.shape == (n,) and d.class_ids.shape == (n,)
    assert d.track_ids.dtype == np.int64


def test_hog_finds_people_on_vtest_frame_400(vtest_400: list[Frame]) -> None:
    det = create_detector("hog")
    assert isinstance(det, Detector) and det.tracks is True
    frame = vtest_400[0]
    assert frame.index == 400 and frame.image.shape == (576, 768, 3)
    d = det.detect(frame)
    _check_shapes(d)
    assert 2 <= len(d) <= 6, d.xyxy
    w = d.xyxy[:, 2] - d.xyxy[:, 0]
    h = d.xyxy[:, 3] - d.xyxy[:, 1]
    assert (
        (d.xyxy[:, :2] >= 0).all() and (d.xyxy[:, 2] <= 768).all() and (d.xyxy[:, 3] <= 576).all()
    )
    assert (w > 20).all() and (h / w > 1.3).all() and (h / w < 3.5).all()  # standing people
    assert (d.scores > 0).all() and np.all(np.diff(d.scores) <= 0)  # SVM margins, best first
    # first tracker update activates every confident detection
    assert sorted(d.track_ids.tolist()) == list(range(1, len(d) + 1))


def test_hog_track_ids_persist_over_frames(vtest_400: list[Frame]) -> None:
    det = create_detector("hog")
    runs = [det.detect(f) for f in vtest_400]
    # person 1 walks out at the right edge around frame 404; the other two stay all along
    steady = set.intersection(*(set(r.track_ids.tolist()) for r in runs))
    assert len(steady) >= 2, [r.track_ids for r in runs]
    for tid in steady:  # an id follows one person: its box moves only a little between frames
        boxes = [r.xyxy[r.track_ids.tolist().index(tid)] for r in runs]
        for a, b in itertools.pairwise(boxes):  # HOG boxes jitter in size, so compare centres
            shift = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
            assert shift < 0.35 * (a[3] - a[1]), (tid, boxes)
    det.reset()
    again = det.detect(vtest_400[0])
    assert sorted(again.track_ids.tolist()) == list(
        range(1, len(again) + 1)
    )  # IDs restart after reset


@pytest.mark.parametrize("hw", [(96, 128), (10, 10), (127, 400), (400, 63)])
def test_hog_frames_smaller_than_its_window(hw: tuple[int, int]) -> None:
    """OpenCV 4.x segfaults on images smaller than the 64x128 window: the detector must not call it."""
    for kw in ({}, {"upscale": 0.5}):
        d = create_detector("hog", **kw).detect(Frame(0, np.zeros((*hw, 3), np.uint8)))
        assert len(d) == 0 and d.xyxy.shape == (0, 4)
    assert (
        len(create_detector("hog", upscale=0.2).detect(Frame(0, np.zeros((576, 768, 3), np.uint8))))
        == 0
    )


def test_hog_untracked_and_upscale(vtest_400: list[Frame]) -> None:
    base = create_detector("hog", tracker=None)
    assert base.tracks is False
    d = base.detect(vtest_400[0])
    assert (d.track_ids == -1).all()
    up = create_detector("hog", tracker=None, upscale=1.25).detect(vtest_400[0])
    assert len(up) >= 2
    assert (up.xyxy[:, 2] <= 768).all() and (up.xyxy[:, 3] <= 576).all()
    # boxes are mapped back to frame pixels: each base box is found again at the same place
    for b in d.xyxy:
        assert max(_iou(b, u) for u in up.xyxy) > 0.4


def test_boxes_file_jsonl_round_trip(tmp_path: Path) -> None:
    per_frame = {
        0: Detections(
            np.array([[10, 20, 60, 150], [100, 30, 140, 120]]),
            np.array([0.9, 0.6]),
            np.array([4, 7]),
        ),
        2: Detections(np.array([[12, 22, 62, 152]]), np.array([0.8]), np.array([4])),
    }
    path = write_boxes_jsonl(tmp_path / "boxes.jsonl", per_frame)
    det = create_detector("boxes_file", path=str(path))
    assert det.tracks is True
    img = np.zeros((200, 300, 3), np.uint8)
    d0 = det.detect(Frame(0, img))
    np.testing.assert_allclose(d0.xyxy, per_frame[0].xyxy)
    np.testing.assert_allclose(d0.scores, [0.9, 0.6], rtol=1e-6)
    assert d0.track_ids.tolist() == [4, 7]
    assert len(det.detect(Frame(1, img))) == 0  # frames the file does not list have nobody
    assert det.detect(Frame(2, img)).track_ids.tolist() == [4]


def test_boxes_file_without_ids_gets_bytetrack_ids(tmp_path: Path) -> None:
    lines = [
        {"frame": i, "boxes": [[10 + i, 20, 60 + i, 150], [200, 30, 250, 160]]} for i in range(4)
    ]
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    det = create_detector("boxes_file", path=path)
    img = np.zeros((200, 300, 3), np.uint8)
    runs = [det.detect(Frame(i, img)) for i in range(4)]
    assert runs[0].scores.tolist() == [1.0, 1.0]  # scores default to 1
    assert sorted(runs[0].track_ids.tolist()) == [1, 2]
    assert all(
        r.track_ids.tolist() == runs[0].track_ids.tolist() for r in runs
    )  # same people, same ids
    plain = create_detector("boxes_file", path=path, tracker=None)
    assert plain.tracks is False and (plain.detect(Frame(0, img)).track_ids == -1).all()


def test_boxes_file_csv(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "frame,x1,y1,x2,y2,score,track_id\n3,1,2,30,80,0.5,9\n3,40,2,70,90,0.7,11\n5,1,1,5,9,0.2,9\n"
    )
    det = create_detector("boxes_file", path=path, min_score=0.3)
    d = det.detect(Frame(3, np.zeros((100, 100, 3), np.uint8)))
    assert d.track_ids.tolist() == [9, 11] and d.xyxy[1].tolist() == [40, 2, 70, 90]
    assert len(det.detect(Frame(5, np.zeros((100, 100, 3), np.uint8)))) == 0  # below min_score
    short = tmp_path / "s.csv"
    short.write_text("0,1,2,30,80\n")  # score and id are optional
    d = create_detector("boxes_file", path=short, tracker=None).detect(
        Frame(0, np.zeros((100, 100, 3), np.uint8))
    )
    assert d.scores.tolist() == [1.0] and d.track_ids.tolist() == [-1]


@pytest.mark.parametrize(
    "name,text,line",
    [
        ("bad.jsonl", '{"frame": 0, "boxes": []}\n{"frame": 1, "boxes": [[1, 2, 3]]}\n', 2),
        ("bad2.jsonl", '{"frame": 0, "boxes": [[0, 0, 5, 5]]}\n\nnot json\n', 3),
        ("bad3.jsonl", '{"frame": 0, "boxes": [[0, 0, 5, 5]], "scores": [0.1, 0.2]}\n', 1),
        ("bad.csv", "frame,x1,y1,x2,y2\n0,1,2,3,4\n1,1,2,x,4\n", 3),
        ("bad2.csv", "0,10,2,3,4\n", 1),
    ],
)
def test_boxes_file_bad_line_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(UserError) as e:
        create_detector("boxes_file", path=p)
    msg = str(e.value)
    assert f"{p}:{line}:" in msg and "\n" not in msg


def test_boxes_file_missing_and_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as e:
        create_detector("boxes_file", path=tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(e.value)
    with pytest.raises(
        UserError, match="detector.type: unknown 'ssd'; allowed: boxes_file, hog, yolo"
    ):
        create_detector("ssd")
    with pytest.raises(UserError, match=r"detector.winstride: not an option of detector.type=hog"):
        create_detector("hog", winstride=4)
    with pytest.raises(UserError, match="detector.path is required"):
        create_detector("boxes_file")
    assert detector_options("yolo")["conf"] == 0.25


TRACKER_YAML = """tracker_type: bytetrack
track_high_thresh: 0.000001
track_low_thresh: 0.0000001
new_track_thresh: 0.000001
track_buffer: 30
match_thresh: 0.8
fuse_score: false
"""


def test_yolo_from_model_config_offline(tmp_path: Path) -> None:
    """Random weights from yolov8n.yaml: shapes, person class only, then tracked IDs that persist."""
    rng = np.random.default_rng(0)
    img = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    det = create_detector(
        "yolo", weights="yolov8n.yaml", conf=1e-6, imgsz=160, max_det=20, classes=[0], tracker=None
    )
    assert det.tracks is False and det.classes == [0]
    d = det.detect(Frame(0, img))
    _check_shapes(d)
    assert 0 < len(d) <= 20
    assert (d.class_ids == 0).all() and (d.track_ids == -1).all()
    assert (d.xyxy[:, 2] <= 320).all() and (d.xyxy[:, 3] <= 240).all() and (d.xyxy >= 0).all()

    cfg = tmp_path / "track.yaml"
    cfg.write_text(TRACKER_YAML)  # thresholds low enough for random-weight scores
    tdet = create_detector(
        "yolo",
        weights="yolov8n.yaml",
        conf=1e-6,
        imgsz=160,
        max_det=20,
        classes=["0"],
        tracker=str(cfg),
    )
    assert tdet.tracks is True
    runs = [tdet.detect(Frame(i, img)) for i in range(3)]
    for r in runs:
        _check_shapes(r)
        assert len(r) > 0 and (r.track_ids >= 1).all() and (r.class_ids == 0).all()
    assert set(runs[2].track_ids.tolist()) & set(
        runs[0].track_ids.tolist()
    )  # same image, same tracks
    tdet.reset()
    assert min(tdet.detect(Frame(0, img)).track_ids.tolist()) == 1
    tdet.close()


def test_yolo_class_names_are_checked() -> None:
    with pytest.raises(UserError) as e:
        create_detector("yolo", weights="yolov8n.yaml", classes=["person"])
    msg = str(e.value)
    assert "detector.classes: unknown class 'person'" in msg and "0, 1, 2" in msg


@pytest.mark.parametrize("weights", ["/nonexistent/dir/yolo11n.pt", "my_custom_person.pt"])
def test_yolo_missing_weights_error_names_file(weights: str) -> None:
    with pytest.raises(UserError) as e:
        create_detector("yolo", weights=weights)
    msg = str(e.value)
    assert weights in msg and "detector.weights=/path/to/" in msg and "\n" not in msg


def test_yolo_known_name_without_download_says_how_to_supply_it() -> None:
    with pytest.raises(UserError) as e:
        create_detector("yolo", weights="yolo11n.pt", allow_download=False)
    assert "'yolo11n.pt'" in str(e.value) and "detector.weights=/path/to/yolo11n.pt" in str(e.value)


def test_yolo_bad_tracker_and_device() -> None:
    with pytest.raises(UserError, match="detector.tracker: unknown tracker 'sort'"):
        create_detector("yolo", weights="yolov8n.yaml", classes=[0], tracker="sort")
    with pytest.raises(UserError, match="detector.device"):
        create_detector("yolo", weights="yolov8n.yaml", classes=[0], device="tpu")


def test_detector_from_config_sections(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from streamseg.detect import detector_from_config

    hog_cfg = SimpleNamespace(
        type="hog",
        tracker="none",
        hog=SimpleNamespace(
            win_stride=16, padding=8, scale=1.1, upscale=1.0, hit_threshold=0.2, nms_iou=0.3
        ),
    )
    det = detector_from_config(hog_cfg)
    assert det.tracks is False and det.win_stride == (16, 16) and det.hit_threshold == 0.2
    p = tmp_path / "b.jsonl"
    p.write_text('{"frame": 0, "boxes": [[1, 2, 3, 4]], "track_ids": [5]}\n')
    det = detector_from_config(
        SimpleNamespace(type="boxes_file", boxes_file=str(p), tracker="bytetrack")
    )
    assert det.detect(Frame(0, np.zeros((10, 10, 3), np.uint8))).track_ids.tolist() == [5]
    with pytest.raises(UserError, match="detector.tracker: 'botsort' needs detector.type=yolo"):
        detector_from_config(SimpleNamespace(type="hog", tracker="botsort", hog=SimpleNamespace()))


def test_detectors_make_no_network_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building and running detectors (ultralytics included) must not open a single connection."""
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    img = np.zeros((96, 128, 3), np.uint8)
    cfg = tmp_path / "track.yaml"
    cfg.write_text(TRACKER_YAML)
    yolo = create_detector(
        "yolo", weights="yolov8n.yaml", conf=1e-6, imgsz=64, classes=[0], tracker=str(cfg)
    )
    hog = create_detector("hog")
    for i in range(2):
        yolo.detect(Frame(i, img))
        hog.detect(Frame(i, img))
    assert attempts == []
