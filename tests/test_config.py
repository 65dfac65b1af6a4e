"""Pipeline schema: shipped pipelines, error lines, --set overrides, ${VAR} interpolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamseg.config import (
    MasksSinkConfig,
    PipelineConfig,
    RtspSinkConfig,
    VideoSinkConfig,
    apply_overrides,
    config_from_dict,
    interpolate_env,
    load_pipeline,
    redacted_dict,
    schema_reference,
    summary_lines,
    validate_paths,
)
from streamseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
SAMPLE_CLIP = ROOT / "samples" / "pedestrians_3s.mp4"
LINE = re.compile(r"^\S.*: [^:]+: .+; allowed: .+$")


def _raw(tmp_path: Path, **sections) -> dict:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    raw = {"source": {"uri": str(clip)}, "model": {"weights": "untrained"}}
    raw.update(sections)
    return raw


def _errors(raw, **kw) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(raw, origin="p.yaml", **kw)
    return ei.value.lines


# --------------------------------------------------------------------------- shipped pipelines


def test_sample_pipeline_matches_the_brief(monkeypatch):
    monkeypatch.chdir(ROOT)
    check = SAMPLE_CLIP.exists()  # the lead ships the clip; validate files once it is there
    cfg = load_pipeline(PIPELINES / "sample_b0.yaml", check_files=check)
    assert cfg.source.uri == "samples/pedestrians_3s.mp4"
    assert cfg.source.kind == "file" and cfg.source.is_live is False
    assert cfg.detector.type == "hog" and cfg.detector.tracker == "bytetrack"
    assert cfg.model.name == "b0" and cfg.model.weights == "untrained"
    assert cfg.runtime.device == "cpu" and cfg.runtime.precision == "fp32"
    assert cfg.smoothing.enabled is True
    assert cfg.sink_types == ["video", "masks", "events"]
    video, masks, events = cfg.sinks
    assert isinstance(video, VideoSinkConfig) and video.path == "annotated.mp4"
    assert isinstance(masks, MasksSinkConfig) and (masks.png_dir, masks.rle_jsonl) == ("masks/", "masks.jsonl")
    assert events.path == "events.jsonl"


def test_webcam_and_file_pipelines_validate(monkeypatch):
    monkeypatch.chdir(ROOT)
    cam = load_pipeline(PIPELINES / "webcam_b0.yaml")  # a webcam uri is not a file: nothing to check
    assert cam.source.kind == "webcam" and cam.source.is_live and cam.source.size_wh == (640, 480)
    assert cam.detector.type == "yolo" and cam.detector.weights == "yolo11n.pt"
    assert cam.model.name == "b0" and set(cam.sink_types) == {"display", "video"}

    f = load_pipeline(PIPELINES / "file_b1.yaml", check_files=SAMPLE_CLIP.exists())
    assert f.model.name == "b1" and f.detector.type == "yolo"
    assert set(f.sink_types) == {"video", "masks", "events"} and f.source.kind == "file"


def test_rtsp_pipeline_needs_camera_env_and_hides_password(monkeypatch):
    monkeypatch.delenv("CAMERA_USER", raising=False)
    monkeypatch.delenv("CAMERA_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as ei:
        load_pipeline(PIPELINES / "rtsp_b7.yaml")
    assert len(ei.value.lines) == 2
    assert all("source.uri: environment variable CAMERA_" in line for line in ei.value.lines)

    monkeypatch.setenv("CAMERA_USER", "admin")
    monkeypatch.setenv("CAMERA_PASSWORD", "s3cr3t-pw")
    monkeypatch.setenv("CAMERA_HOST", "10.0.0.7")
    cfg = load_pipeline(PIPELINES / "rtsp_b7.yaml")
    assert cfg.source.uri == "rtsp://admin:s3cr3t-pw@10.0.0.7:554/stream1"
    assert cfg.source.kind == "rtsp" and cfg.source.is_live and cfg.source.transport == "tcp"
    assert cfg.model.name == "b7" and cfg.runtime.device == "auto" and cfg.runtime.precision == "fp16"
    (sink,) = cfg.sinks
    assert isinstance(sink, RtspSinkConfig) and sink.url == "rtsp://127.0.0.1:8554/streamseg"
    assert cfg.source.reconnect.enabled and cfg.source.reconnect.max_attempts is None
    assert "s3cr3t-pw" not in "\n".join(summary_lines(cfg))
    assert "s3cr3t-pw" not in str(redacted_dict(cfg))


@pytest.mark.parametrize("name", ["sample_b0", "webcam_b0", "file_b1", "rtsp_b7"])
def test_every_key_in_shipped_pipelines_is_commented(name):
    lines = (PIPELINES / f"{name}.yaml").read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z_]+):\s*(\S.*)?$", line)
        if not m or not m.group(2) or m.group(2).startswith("#"):
            continue  # section headers
        prev = lines[i - 1].strip() if i else ""
        if "#" not in m.group(2) and not prev.startswith("#"):
            bare.append(line)
    assert bare == []


def test_every_schema_key_has_a_description():
    rows = schema_reference()
    assert len(rows) > 80
    missing = [key for key, _, _, desc in rows if not desc]
    assert missing == []
    keys = {r[0] for r in rows}
    assert {"source.reconnect.stall_timeout_s", "detector.hog.scale", "model.mask_size",
            "sinks[rtsp].reconnect.backoff_max_s", "metrics.latency_window_s"} <= keys


def test_defaults_follow_the_brief(tmp_path):
    cfg = config_from_dict(_raw(tmp_path))
    assert cfg.source.queue_size == 8 and cfg.source.transport == "tcp" and cfg.source.open_timeout_s == 10
    assert cfg.source.reconnect.backoff_base_s == 0.5 and cfg.source.reconnect.backoff_max_s == 10
    assert cfg.detector.type == "yolo" and cfg.detector.classes == ["person"] and cfg.detector.imgsz == 640
    assert cfg.detector.hog.scale == 1.05 and cfg.detector.hog.nms_iou == 0.3
    assert cfg.model.input_size == (640, 640) and cfg.model.mask_size == (128, 96)
    assert cfg.runtime.batch_frames == 1 and cfg.runtime.cuda_streams is True
    assert cfg.smoothing.alpha == 0.6 and cfg.sinks == []
    assert cfg.logging.level == "INFO" and cfg.metrics.path == "metrics.json"


# --------------------------------------------------------------------------- one line per mistake

CASES = [
    ("unknown key", {"detector": {"cnf": 0.3}}, "detector.cnf: unknown key (did you mean 'conf'?)"),
    ("wrong type", {"detector": {"conf": "high"}}, "detector.conf: expected a valid number"),
    ("out of range", {"detector": {"conf": 1.5}}, "detector.conf: 1.5 is out of range; allowed: a number >= 0 and <= 1"),
    ("bad enum", {"detector": {"type": "ssd"}}, "detector.type: invalid value 'ssd'; allowed: yolo|hog|boxes_file"),
    ("imgsz", {"detector": {"imgsz": 500}}, "detector.imgsz: 500 is out of range; allowed: an integer >= 32, a multiple of 32"),
    ("input size", {"model": {"weights": "untrained", "input_size": [500, 640]}}, "model.input_size: [500, 640] has 500"),
    ("mask size", {"model": {"weights": "untrained", "mask_size": [64, 48]}}, "model.mask_size: [64, 48] is not 2 x roi_size"),
    ("missing weights", {"model": {"name": "b0"}}, "model.weights: missing required key"),
    ("missing source", {"source": None}, "source: expected a mapping"),
    ("sink type", {"sinks": [{"type": "gif"}]}, "sinks.0.type: unknown sink type 'gif'; allowed: video|masks|events|display|rtsp"),
    ("sink without type", {"sinks": [{"path": "x.mp4"}]}, "sinks.0.type: missing sink type"),
    ("sink crf", {"sinks": [{"type": "video", "crf": 99}]}, "sinks.0.crf: 99 is out of range; allowed: an integer >= 0 and <= 51"),
    ("masks outputs", {"sinks": [{"type": "masks"}]}, "sinks.0.png_dir: neither png_dir nor rle_jsonl"),
    ("same output", {"sinks": [{"type": "video"}, {"type": "video"}]}, "sinks.1.path: 'annotated.mp4' is also written by sinks.0.path"),
    ("rtsp url", {"sinks": [{"type": "rtsp", "url": "http://x/y"}]}, "sinks.0.url: invalid value 'http://x/y'"),
    ("bool as int", {"runtime": {"batch_frames": True}}, "runtime.batch_frames: expected a number, got True"),
    ("device", {"runtime": {"device": "gpu"}}, "runtime.device: invalid value 'gpu'; allowed: auto|cpu|cuda|cuda:N"),
    ("winograd", {"runtime": {"winograd": "f3"}}, "runtime.winograd: invalid value 'f3'; allowed: auto|off|f2|f4"),
    ("backoff", {"source": {"uri": "rtsp://h/x", "reconnect": {"backoff_base_s": 5, "backoff_max_s": 1}}},
     "source.reconnect.backoff_max_s: 1.0 is smaller than backoff_base_s 5.0"),
    ("camera size", {"source": {"uri": "0", "size": "640*480"}}, "source.size: invalid value '640*480'"),
    ("classes", {"detector": {"classes": [1.5]}}, "detector.classes: invalid class 1.5"),
    ("boxes_file needed", {"detector": {"type": "boxes_file"}}, "detector.boxes_file: missing, but detector.type is boxes_file"),
    ("onnx needed", {"model": {"weights": "untrained", "backend": "onnxruntime"}}, "model.onnx: missing, but model.backend is onnxruntime"),
    ("options nested", {"source": {"uri": "0", "options": {"b": [1]}}}, "source.options.b: expected a valid string"),
    ("tuple length", {"model": {"weights": "untrained", "roi_size": [64, 48, 3]}}, "model.roi_size: has 3 items"),
]


@pytest.mark.parametrize("label,patch,expected", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_gives_one_line(tmp_path, label, patch, expected):
    raw = _raw(tmp_path)
    for k, v in patch.items():
        raw[k] = v
    lines = _errors(raw)
    assert len(lines) == 1, lines
    assert lines[0].startswith("p.yaml: ")
    assert expected in lines[0]
    assert "; allowed: " in lines[0]


def test_several_mistakes_give_one_line_each(tmp_path):
    raw = _raw(tmp_path, detector={"conf": 2, "tracker": "sort"}, smoothing={"alpha": 0, "extra": 1})
    lines = _errors(raw)
    assert sorted(line.split(": ")[1] for line in lines) == [
        "detector.conf", "detector.tracker", "smoothing.alpha", "smoothing.extra"]


def test_union_errors_collapse_to_one_line(tmp_path):
    # list[int | str] makes pydantic report one error per union member; the user sees one line
    lines = _errors(_raw(tmp_path, sinks=["video"]))
    assert lines == ["p.yaml: sinks.0: expected a mapping with a type key, got 'video'; "
                     "allowed: a mapping with type video|masks|events|display|rtsp"]


# --------------------------------------------------------------------------- YAML and files


def test_yaml_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  uri: x.mp4\n  type: [file\nmodel: {weights: untrained}\n")
    with pytest.raises(ConfigError) as ei:
        load_pipeline(bad)
    (line,) = ei.value.lines
    assert line.startswith(f"{bad}: line 4, column ") and "YAML syntax error" in line

    dup = tmp_path / "dup.yaml"
    dup.write_text("source:\n  uri: a\n  uri: b\nmodel: {weights: untrained}\n")
    with pytest.raises(ConfigError) as ei:
        load_pipeline(dup)
    assert ei.value.lines == [f"{dup}: line 3, column 3: duplicate key 'uri'; allowed: each key once per section"]

    lst = tmp_path / "list.yaml"
    lst.write_text("- source\n- model\n")
    with pytest.raises(ConfigError, match=r"\(top level\): expected a mapping of sections"):
        load_pipeline(lst)

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_pipeline(empty)

    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_null_sections_mean_defaults(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(f"source:\n  uri: {tmp_path}/c.mp4\nmodel:\n  weights: untrained\nsmoothing:\nsinks:\n")
    (tmp_path / "c.mp4").write_bytes(b"\0")
    cfg = load_pipeline(p)
    assert cfg.smoothing.alpha == 0.6 and cfg.sinks == []


def test_yaml_off_and_numbers_are_read_as_meant(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("source:\n  uri: 0\n  options: {timeout: 5000000, reconnect: true}\n"
                 "model: {weights: untrained, name: B7_Enhanced, input_size: 320}\n"
                 "runtime: {device: 1}\nlogging: {progress: off, level: debug}\n"
                 "sinks: [{type: rtsp, url: 'rtsp://h/x', bitrate: 2M}]\n")
    cfg = load_pipeline(p)
    assert cfg.source.uri == "0" and cfg.source.kind == "webcam"
    assert cfg.source.options == {"timeout": "5000000", "reconnect": "1"}
    assert cfg.model.name == "b7-enhanced" and cfg.model.input_size == (320, 320)
    assert cfg.runtime.device == "cuda:1" and cfg.logging.progress == "off" and cfg.logging.level == "DEBUG"
    assert cfg.sinks[0].bitrate == 2_000_000


def test_missing_input_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {"source": {"uri": "missing.mp4"}, "model": {"weights": "untrained"}}
    (line,) = _errors(raw)
    assert line.startswith("p.yaml: source.uri: file not found (missing.mp4, relative to ")

    (tmp_path / "frames").mkdir()
    (line,) = _errors({"source": {"uri": "frames"}, "model": {"weights": "untrained"}})
    assert "source.uri: folder frames has no images" in line
    (tmp_path / "frames" / "0001.png").write_bytes(b"\0")
    assert config_from_dict({"source": {"uri": "frames"}, "model": {"weights": "untrained"}}).source.kind == "images"

    (tmp_path / "clip.mp4").write_bytes(b"\0")
    base = {"source": {"uri": "clip.mp4"}}
    (line,) = _errors({**base, "model": {"weights": "ckpt/b0.pth"}})
    assert "model.weights: 'ckpt/b0.pth' is not an existing file, a registry name or \"untrained\"" in line
    (line,) = _errors({**base, "model": {"weights": "untrained", "backend": "onnxruntime", "onnx": "m.onnx"}})
    assert "model.onnx: file not found (m.onnx)" in line
    (line,) = _errors({**base, "model": {"weights": "untrained"},
                       "detector": {"type": "boxes_file", "boxes_file": "boxes.jsonl"}})
    assert "detector.boxes_file: file not found (boxes.jsonl)" in line
    (line,) = _errors({**base, "model": {"weights": "untrained"}, "detector": {"weights": "./w/yolo.pt"}})
    assert "detector.weights: file not found (./w/yolo.pt)" in line

    # bare ultralytics names are left to ultralytics; an existing checkpoint file passes
    (tmp_path / "b0.pth").write_bytes(b"\0")
    cfg = config_from_dict({**base, "model": {"weights": "b0.pth"}, "detector": {"weights": "yolo11s.pt"}})
    validate_paths(cfg)
    assert cfg.model.weights == "b0.pth"
    # check_files=False skips all of it
    assert config_from_dict({"source": {"uri": "gone.mp4"}, "model": {"weights": "x/y.pt"}},
                            check_files=False).source.uri == "gone.mp4"


def test_registry_names_pass(tmp_path):
    weights = pytest.importorskip("streamseg.models.weights")
    name = sorted(weights.REGISTRY)[0]
    cfg = config_from_dict(_raw(tmp_path, model={"weights": name}))
    assert cfg.model.weights == name
    (line,) = _errors(_raw(tmp_path, model={"weights": "no-such-registry-name"}))
    assert "model.weights: 'no-such-registry-name' is not an existing file" in line and name in line


# --------------------------------------------------------------------------- --set


def test_overrides_apply_yaml_values(tmp_path):
    raw = _raw(tmp_path, sinks=[{"type": "video"}, {"type": "events"}])
    cfg = config_from_dict(raw, overrides=[
        "model.input_size=[384,640]", "detector.conf=0.4", "sinks.0.path=x.mp4", "sinks.2.type=masks",
        "sinks.2.rle_jsonl=m.jsonl", "smoothing.enabled=false", "source.options.rtsp_transport=udp",
        "runtime.threads=", "detector.classes=[0, person]",
    ])
    assert cfg.model.input_size == (384, 640) and cfg.detector.conf == 0.4
    assert cfg.sink_types == ["video", "events", "masks"] and cfg.sinks[0].path == "x.mp4"
    assert cfg.sinks[2].rle_jsonl == "m.jsonl" and cfg.smoothing.enabled is False
    assert cfg.source.options == {"rtsp_transport": "udp"} and cfg.runtime.threads is None
    assert cfg.detector.classes == [0, "person"]
    assert raw["sinks"] == [{"type": "video"}, {"type": "events"}]  # the input dict is left alone


def test_override_text_that_is_not_yaml_stays_text(tmp_path):
    cfg = config_from_dict(_raw(tmp_path), overrides=[
        "source.format=lavfi", "source.uri=testsrc2=size=640x480:rate=30,realtime"], check_files=True)
    assert cfg.source.uri == "testsrc2=size=640x480:rate=30,realtime" and cfg.source.kind == "lavfi"
    assert cfg.source.is_live is True


def test_override_errors_name_the_key_path(tmp_path):
    raw = _raw(tmp_path)
    assert _errors(raw, overrides=["detector.conf"]) == [
        "p.yaml: --set 'detector.conf': missing '='; allowed: key.path=value, e.g. detector.conf=0.4"]
    assert _errors(raw, overrides=["model..weights=x"])[0].startswith("p.yaml: --set 'model..weights=x': bad key path")
    (line,) = _errors(raw, overrides=["sinks.3.path=x.mp4"])
    assert line.startswith("p.yaml: sinks.3: bad list index '3' (the list has 0 entries)")
    (line,) = _errors(raw, overrides=["detector.cnf=0.4"])
    assert line.startswith("p.yaml: detector.cnf: unknown key (did you mean 'conf'?) (from --set); allowed: ")
    (line,) = _errors(raw, overrides=["source.uri.x=1"])
    assert line.startswith("p.yaml: source.uri.x: source.uri is ") and "not a section" in line
    (line,) = _errors(raw, overrides=["detector.conf=9"])
    assert line == "p.yaml: detector.conf: 9 is out of range (from --set); allowed: a number >= 0 and <= 1"


def test_apply_overrides_alone():
    out = apply_overrides({"a": {"b": 1}, "l": [{"x": 1}]}, ["a.b=2", "a.c=[1, 2]", "l.0.x=null", "l.1.y=z"])
    assert out == {"a": {"b": 2, "c": [1, 2]}, "l": [{"x": None}, {"y": "z"}]}


# --------------------------------------------------------------------------- ${VAR}


def test_env_interpolation():
    env = {"USER_A": "bob", "PASSWORD_A": "pa55", "EMPTY": ""}
    raw = {"u": "rtsp://${USER_A}:${PASSWORD_A}@${HOST:-cam.local}/s", "n": [1, "${EMPTY:-fallback}"],
           "lit": "$${NOT_A_VAR}", "k": {"deep": "${USER_A}"}}
    assert interpolate_env(raw, env=env) == {
        "u": "rtsp://bob:pa55@cam.local/s", "n": [1, "fallback"], "lit": "${NOT_A_VAR}", "k": {"deep": "bob"}}
    with pytest.raises(ConfigError) as ei:
        interpolate_env({"sinks": [{"url": "rtsp://${NOPE}/x"}]}, origin="f.yaml", env=env)
    assert ei.value.lines == ["f.yaml: sinks.0.url: environment variable NOPE is not set; "
                              "allowed: export NOPE=... or write ${NOPE:-default}"]


def test_env_values_are_typed_by_the_schema_and_secrets_never_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("QSIZE", "3")
    monkeypatch.setenv("CAM_PASSWORD", "hunter22")
    cfg = config_from_dict(_raw(tmp_path, source={"uri": str(tmp_path / "clip.mp4"), "queue_size": "${QSIZE}"}))
    assert cfg.source.queue_size == 3
    # a bad URL that holds the password is reported without it, in and outside URL user-info
    lines = _errors(_raw(tmp_path, sinks=[{"type": "rtsp", "url": "http://u:${CAM_PASSWORD}@h/x"}],
                         source={"uri": "${CAM_PASSWORD}", "type": "webcam", "size": "${CAM_PASSWORD}"}))
    assert len(lines) == 2
    assert all("hunter22" not in line for line in lines)
    assert any("source.size: invalid value '***'" in line for line in lines)


def test_pipeline_config_is_usable_directly():
    cfg = PipelineConfig.model_validate({"source": {"uri": "rtsp://h/x"}, "model": {"weights": "untrained"}})
    assert cfg.source.kind == "rtsp" and cfg.source.is_live
    lines = summary_lines(cfg)
    assert lines[0].startswith("source:    rtsp rtsp://h/x (live)") and lines[-1] == "sinks:     none (metrics only)"
