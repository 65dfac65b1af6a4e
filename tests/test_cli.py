"""The streamseg command line: exit codes, one-line errors, validate/info output, dispatch."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamseg import cli
from streamseg.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def good(tmp_path: Path) -> dict:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")  # validate only checks that inputs exist; nothing is decoded
    return {
        "source": {"uri": str(clip)},
        "detector": {"type": "hog", "tracker": "bytetrack", "conf": 0.3},
        "model": {"name": "b0", "weights": "untrained"},
        "runtime": {"device": "cpu"},
        "sinks": [{"type": "video", "path": "a.mp4"}, {"type": "events", "path": "e.jsonl"}],
    }


def _write(tmp_path: Path, raw: dict | str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return p


def _patch(raw: dict, dotted: str, value) -> dict:
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def test_validate_ok_prints_summary(tmp_path, good, capsys):
    p = _write(tmp_path, good)
    assert cli.main(["validate", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{p}: valid"
    text = "\n".join(out)
    assert "source:    file " in text and "detector:  hog, conf 0.3, tracker bytetrack" in text
    assert "model:     b0, weights untrained" in text
    assert "sinks.0:   video -> a.mp4" in text and "sinks.1:   events -> e.jsonl" in text


# Each entry: (id, how to break the good pipeline, text expected in the single error line).
MISTAKES = [
    ("unknown-key", lambda r: _patch(r, "detector.cnf", 0.3), "detector.cnf: unknown key (did you mean 'conf'?)"),
    ("wrong-type", lambda r: _patch(r, "source.queue_size", "many"), "source.queue_size: expected a valid integer"),
    ("out-of-range", lambda r: _patch(r, "smoothing.alpha", 1.5), "smoothing.alpha: 1.5 is out of range"),
    ("bad-enum", lambda r: _patch(r, "runtime.precision", "fp8"), "runtime.precision: invalid value 'fp8'; allowed: fp32|fp16|bf16"),
    ("missing-required", lambda r: _patch(r, "model", {"name": "b1"}), "model.weights: missing required key"),
    ("missing-source-file", lambda r: _patch(r, "source.uri", "/nonexistent/clip.mp4"), "source.uri: file not found"),
    ("missing-weights-file", lambda r: _patch(r, "model.weights", "ckpt/none.pth"), "model.weights: 'ckpt/none.pth' is not an existing file"),
    ("missing-onnx", lambda r: _patch(r, "model.onnx", "/nonexistent/m.onnx"), "model.onnx: file not found"),
    ("missing-boxes-file", lambda r: _patch(r, "detector", {"type": "boxes_file", "boxes_file": "/nonexistent/b.jsonl"}),
     "detector.boxes_file: file not found"),
    ("missing-yolo-file", lambda r: _patch(r, "detector", {"type": "yolo", "weights": "/nonexistent/y.pt"}),
     "detector.weights: file not found"),
    ("input-size", lambda r: _patch(r, "model.input_size", [480, 630]), "model.input_size: [480, 630] has 630, not a positive multiple of 32"),
    ("mask-size", lambda r: _patch(r, "model.roi_size", [32, 24]), "model.mask_size: [128, 96] is not 2 x roi_size [32, 24]; allowed: [64, 48]"),
    ("sink-type", lambda r: _patch(r, "sinks", [{"type": "hdmi"}]), "sinks.0.type: unknown sink type 'hdmi'"),
    ("sink-key", lambda r: _patch(r, "sinks", [{"type": "events", "pth": "x"}]), "sinks.0.pth: unknown key (did you mean 'path'?); allowed: type, path"),
    ("env-unset", lambda r: _patch(r, "source.uri", "rtsp://${STREAMSEG_TEST_UNSET_VAR}@h/x"),
     "source.uri: environment variable STREAMSEG_TEST_UNSET_VAR is not set"),
]


@pytest.mark.parametrize("label,breaker,expected", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_exit_2(tmp_path, good, capsys, label, breaker, expected):
    p = _write(tmp_path, breaker(good))
    for cmd in ("validate", "run"):
        assert cli.main([cmd, str(p)]) == 2
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"streamseg: error: {p}: ")
        assert expected in lines[0]
        assert "; allowed: " in lines[0]
        assert "Traceback" not in err


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    p = _write(tmp_path, "source:\n  uri: a.mp4\nmodel:\n  weights: [untrained\n")
    assert cli.main(["validate", str(p)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"streamseg: error: {p}: line 5, column 1: YAML syntax error:")


def test_top_level_not_a_mapping(tmp_path, capsys):
    p = _write(tmp_path, "- just\n- a list\n")
    assert cli.main(["validate", str(p)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "(top level): expected a mapping of sections, got ['just', 'a list']" in line


def test_set_errors_and_values(tmp_path, good, capsys):
    p = _write(tmp_path, good)
    assert cli.main(["validate", str(p), "--set", "detector.conf"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"streamseg: error: {p}: --set 'detector.conf': missing '='; allowed: key.path=value, e.g. detector.conf=0.4"

    assert cli.main(["validate", str(p), "--set", "sinks.9.path=x.mp4"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "sinks.9: bad list index '9' (the list has 2 entries)" in line

    assert cli.main(["validate", str(p), "--set", "detector.conf=0.4", "--set", "sinks.0.path=x.mp4",
                     "--set", "model.input_size=[384,640]"]) == 0
    out = capsys.readouterr().out
    assert "conf 0.4" in out and "video -> x.mp4" in out and "input 384x640" in out


def test_two_mistakes_two_lines(tmp_path, good, capsys):
    p = _write(tmp_path, _patch(_patch(good, "detector.conf", -1), "runtime.device", "tpu"))
    assert cli.main(["validate", str(p)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert {ln.split(": ")[3] for ln in lines} == {"detector.conf", "runtime.device"}


def test_password_never_printed(tmp_path, good, capsys, monkeypatch):
    monkeypatch.setenv("STREAMSEG_TEST_PASSWORD", "pa55-w0rd")
    good["source"] = {"uri": "rtsp://admin:${STREAMSEG_TEST_PASSWORD}@cam.local/s"}
    p = _write(tmp_path, good)
    assert cli.main(["validate", str(p)]) == 0
    out = capsys.readouterr().out
    assert "rtsp://***:***@cam.local/s" in out and "pa55-w0rd" not in out

    good["sinks"] = [{"type": "rtsp", "url": "rtsps//admin:${STREAMSEG_TEST_PASSWORD}@h/x"}]
    p = _write(tmp_path, good)
    assert cli.main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "sinks.0.url: invalid value" in err and "pa55-w0rd" not in err


def test_subprocess_exit_code_and_no_traceback(tmp_path, good):
    bad = _write(tmp_path, _patch(good, "detector.type", "ssd"))
    ok = _write(tmp_path, _patch(dict(good, detector={"type": "hog"}), "smoothing.alpha", 0.5), "ok.yaml")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "streamseg", "validate", str(bad)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"streamseg: error: {bad}: detector.type: invalid value 'ssd'; allowed: yolo|hog|boxes_file"]
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "streamseg", "validate", str(ok)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith(f"{ok}: valid") and "smoothing: on (alpha 0.5)" in r.stdout


def test_usage_errors_exit_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["eval", "cfg.yaml"]) == 2  # --weights is required
    assert "--weights" in capsys.readouterr().err


def test_unavailable_module_is_a_user_error():
    with pytest.raises(UserError, match="^streamseg frob is not available in this build$"):
        cli._lazy("frob", "streamseg.no_such_module", "main")
    with pytest.raises(UserError, match="not available"):
        cli._lazy("frob", "streamseg.config", "no_such_function")


def test_unexpected_error_logs_traceback_exit_1(tmp_path, good, capsys, monkeypatch):
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("kaputt")

    monkeypatch.setattr(cli, "_cmd_validate", boom)
    assert cli.main(["validate", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "streamseg validate failed with an unexpected error" in err and "RuntimeError: kaputt" in err
    assert "Traceback" in err


def test_interrupt_exit_130(monkeypatch, capsys):
    def stop(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_validate", stop)
    assert cli.main(["validate", "x.yaml"]) == 130


def test_verbose_sets_debug_and_log_lines_are_redacted(capsys):
    assert cli.build_parser().parse_args(["-v", "info"]).verbose is True
    assert not hasattr(cli.build_parser().parse_args(["info"]), "verbose")  # main() fills in False
    cli.setup_logging(logging.DEBUG)
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("streamseg.test").warning("opening rtsp://user:topsecret@cam/s")
    err = capsys.readouterr().err
    assert "topsecret" not in err and "rtsp://***:***@cam/s" in err
    assert " WARNING streamseg.test: " in err
    args = cli.build_parser().parse_args(["validate", "-v", "p.yaml"])
    assert args.verbose is True
    cli.setup_logging(logging.INFO)


def test_bench_passes_everything_through():
    args = cli.build_parser().parse_args(["bench", "pipeline", "--seconds", "5", "--set", "x=1"])
    assert args.rest == ["pipeline", "--seconds", "5", "--set", "x=1"]
    args = cli.build_parser().parse_args(["export", "upstream-b0", "o.onnx", "--height", "384", "--int8",
                                          "--calib-video", "v.mp4"])
    assert (args.checkpoint, args.output, args.height, args.width, args.opset) == ("upstream-b0", "o.onnx", 384, 640, 17)
    assert args.int8 and args.calib_video == "v.mp4" and args.calib_frames == 32 and args.dilation == 0
    args = cli.build_parser().parse_args(["train", "t.yaml", "--resume", "c.pt", "--set", "a=1", "--set", "b=2"])
    assert (args.config, args.resume, args.set) == ("t.yaml", "c.pt", ["a=1", "b=2"])


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"versions", "devices", "encoders", "input_formats", "display"}
    v = info["versions"]
    for key in ("streamseg", "python", "torch", "torchvision", "timm", "segmentation_models_pytorch", "av",
                "ffmpeg", "ffmpeg_libraries", "ultralytics", "opencv", "onnxruntime"):
        assert key in v
    assert v["streamseg"] == "0.1.0" and "libavcodec" in v["ffmpeg_libraries"]
    d = info["devices"]
    assert d["cpu_count"] >= 1 and isinstance(d["cuda"], list)
    assert d["cuda_available"] == (len(d["cuda"]) > 0)
    enc = info["encoders"]
    assert enc["libx264"] == {"listed": True, "opens": True, "detail": "ok"}  # README's default must work
    assert "h264_nvenc" in enc and set(enc["h264_nvenc"]) == {"listed", "opens", "detail"}
    assert info["input_formats"]["lavfi"] is True and set(info["input_formats"]) >= {"v4l2", "avfoundation", "dshow"}
    assert isinstance(info["display"]["available"], bool)


def test_info_text(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("versions:") and "\nencoders (listed / opens):\n" in out
    assert "  libx264                      yes" in out
