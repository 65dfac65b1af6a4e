"""``streamseg bench model`` on a tiny configuration writes the JSON the issue asks for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streamseg.bench import bench_main
from streamseg.bench.machine import machine_info
from streamseg.errors import UserError
from streamseg.models.winograd import kernel_available

TINY = [
    "--variants",
    "b0",
    "--height",
    "128",
    "--width",
    "128",
    "--roi-size",
    "32x24",
    "--mask-size",
    "64x48",
    "--rois",
    "1,2",
    "--warmup",
    "0",
    "--target-repeats",
    "1",
    "--precisions",
    "fp32,bf16,int8",
    "--backends",
    "torch,ort",
    "--threads",
    "2",
    "--quick",
    "--target-rois",
    "2",
]


def test_bench_model_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "model_test.json"
    rc = bench_main(argparse.Namespace(rest=["model", *TINY, "--out", str(out)], mode="model"))
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["schema"] == "streamseg.bench.model/1"
    for k in ("cpu_model", "logical_cores", "torch", "onnxruntime", "torch_threads", "gpus"):
        assert k in res["machine"]
    assert res["machine"]["torch_threads"] == 2
    v = res["variants"]["b0"]
    assert list(res["variants"]) == ["b0"]
    assert v["params_total"] == 19_995_836  # UPSTREAM.md section 3 (B0 total)
    assert v["params_trainable"] == 13_744_367
    assert v["gflops_per_roi"] > 0 and v["gflops_fixed"] > 0
    assert v["gflops"]["2"] == pytest.approx(v["gflops_fixed"] + 2 * v["gflops_per_roi"])
    # torch fp32/bf16 and ort fp32 for 1 and 2 ROIs; int8 skipped without --calib-video
    got = {(r["backend"], r["precision"], r["rois"]) for r in v["runs"]}
    assert got == {
        (b, p, n)
        for b, p in [("torch", "fp32"), ("torch", "bf16"), ("ort", "fp32")]
        for n in (1, 2)
    }
    assert any("int8" in s for s in v["skipped"])
    for r in v["runs"]:
        assert r["median_s"] > 0 and r["min_s"] <= r["median_s"] and r["repeats"] == 1
        assert 0.0 <= r["argmax_agree"] <= 1.0 and 0.0 <= r["target_iou"] <= 1.0
        assert "peak_mem_mb" in r
    fp32 = [r for r in v["runs"] if r["precision"] == "fp32"]
    assert all(r["masks_max_abs_diff"] < 1e-3 for r in fp32)
    st = res["speed_target"]
    assert st["variant"] == "b0" and st["rois"] == 2
    winograd = {"torch_fold_cl_noaux_winograd_f2", "torch_fold_cl_noaux_winograd_f4"}
    assert set(st["candidates"]) == {
        "torch_noaux",
        "torch_fold_noaux",
        "torch_fold_cl_noaux",
        "ort_fp32",
    } | (winograd if kernel_available() else set())
    for k in winograd & set(st["candidates"]):
        assert "winograd=" in st["candidates"][k]["call"]
        assert st["candidates"][k]["masks_max_abs_diff"] < 1e-3
    assert st["chosen"] in st["candidates"] and st["candidates"][st["chosen"]]["outputs_unchanged"]
    assert st["chosen_time_ratio"] > 0 and isinstance(st["target_met"], bool)
    floor = st["compute_floor"]
    peak = floor["peak_gflops_per_s"]
    assert peak["best"] == max(peak["conv3x3_256_8x64x48"], peak["sgemm_2048"]) > 0
    # the floor uses the FLOPs of the inference path at this size: fixed + 2 ROIs, no aux heads
    assert floor["gflops_inference_path"] == pytest.approx(v["gflops"]["2"], rel=1e-6)
    assert floor["time_floor_s"] == pytest.approx(floor["gflops_inference_path"] / peak["best"])
    assert floor["time_ratio_floor"] == pytest.approx(
        floor["time_floor_s"] / st["reference"]["median_s"]
    )


def test_bench_dispatch_and_option_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown kind"):
        bench_main(argparse.Namespace(rest=["nope"], mode="nope"))
    with pytest.raises(UserError, match="--variants: unknown"):
        bench_main(
            argparse.Namespace(
                rest=["model", "--variants", "b9", "--out", str(tmp_path / "x.json")]
            )
        )
    with pytest.raises(UserError, match="--precisions: unknown"):
        bench_main(
            argparse.Namespace(
                rest=["model", "--precisions", "fp8", "--out", str(tmp_path / "x.json")]
            )
        )
    assert not (tmp_path / "x.json").exists()


def test_machine_info_is_json_ready() -> None:
    info = machine_info()
    json.dumps(info)
    assert info["logical_cores"] >= 1 and isinstance(info["cpu_flags"], list)
