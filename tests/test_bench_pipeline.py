"""``streamseg bench pipeline`` on 2 frames of the shipped sample writes the JSON the issue asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamseg.bench.pipeline import main
from streamseg.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _args(out: Path, frames: int = 2) -> list[str]:
    return [
        "--pipeline", str(ROOT / "pipelines" / "sample_b0.yaml"),
        "--frames", str(frames),
        "--set", f"source.uri={ROOT / 'samples' / 'pedestrians_3s.mp4'}",
        "--set", "model.input_size=[128,160]",
        "--set", "model.roi_size=[32,24]",
        "--set", "model.mask_size=[64,48]",
        "--note", "test",
        "--out", str(out),
    ]


def test_bench_pipeline_writes_fps_ratio_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "res" / "pipeline.json"
    assert main(_args(out)) == 0
    res = json.loads(out.read_text())
    for key in ("end_to_end_fps", "model_only_fps", "ratio", "peak_rss_mb"):
        assert isinstance(res[key], (int, float)) and res[key] > 0, (key, res[key])
    assert res["ratio"] == pytest.approx(res["end_to_end_fps"] / res["model_only_fps"])
    assert res["frames_in"] == res["frames_out"] == 2
    assert res["frames_dropped"] == 0
    assert res["model_only"]["batches"] == 2
    # same frames, same detector: the model-only pass saw the persons the pipeline segmented
    assert res["persons_segmented_model_only"] == res["persons_segmented_pipeline"]
    assert {"detect", "segment"} <= set(res["stage_latency"])
    assert res["stage_latency"]["segment"]["count"] == 2
    assert res["config"]["input_size"] == [128, 160]
    assert res["machine"]["logical_cores"] >= 1
    assert res["note"] == "test"


def test_bench_pipeline_rejects_zero_frames(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--frames"):
        main(_args(tmp_path / "x.json", frames=0))
