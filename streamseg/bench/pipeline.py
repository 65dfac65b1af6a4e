"""``streamseg bench pipeline``: end-to-end FPS of ``streamseg run`` next to model-only FPS.

The pipeline runs on the configured source for ``--frames`` frames (sinks as configured, written to
a temporary folder). Then the same frames are decoded again and the same detector runs on them
*outside* any timing; only ``Segmenter.segment`` (model prepared exactly as the pipeline prepares
it) is timed per frame. ``ratio`` = end-to-end FPS / model-only FPS says how much the rest of the
pipeline (decode, detection, smoothing, annotation, encoding, sinks, startup) costs; the goal is
>= 0.9. Because a short run is dominated by startup, a steady-state figure (first output frame to
last output frame) is reported beside the figure from metrics.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .machine import machine_info
from streamseg.metrics import write_json

log = logging.getLogger(__name__)

SCHEMA = "streamseg.bench.pipeline/1"
RATIO_GOAL = 0.9


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamseg bench pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="pipelines/sample_b0.yaml", help="pipeline YAML (default: the sample)")
    p.add_argument("--frames", type=int, default=10, help="frames to process (source.max_frames; default 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (same syntax as streamseg run --set)")
    p.add_argument("--note", default=None, help="free text stored in the JSON")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/pipeline_<date>.json)")
    return p


def load_config(pipeline: str | Path, frames: int, overrides: list[str]) -> Any:
    """The pipeline config with max_frames, no progress bar and metrics.json inside the run folder."""
    from ..config import load_pipeline

    if frames < 1:
        raise UserError(f"bench pipeline --frames: must be >= 1, got {frames}")
    extra = [f"source.max_frames={frames}", "logging.progress=off", "metrics.path=metrics.json"]
    return load_pipeline(pipeline, overrides=[*overrides, *extra])


def run_end_to_end(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Run ``Pipeline(cfg, out_dir)``; its metrics.json plus the steady-state FPS (first to last output)."""
    import torch

    from ..pipeline import Pipeline

    torch.manual_seed(0)
    pipe = Pipeline(cfg, out_dir)
    done_at: list[float] = []
    pipe.add_frame_callback(lambda _result: done_at.append(time.perf_counter()))
    t0 = time.perf_counter()
    rc = pipe.run()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise UserError(f"bench pipeline: the pipeline run exited with code {rc}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    steady = (len(done_at) - 1) / (done_at[-1] - done_at[0]) if len(done_at) > 1 and done_at[-1] > done_at[0] else None
    return {"metrics": metrics, "run_wall_s": wall, "first_output_s": (done_at[0] - t0) if done_at else None,
            "steady_fps": steady}


def decode_and_detect(cfg: Any) -> tuple[list[Any], list[Any]]:
    """The frames of the run and their detections (a fresh detector, so the same tracker state)."""
    from ..pipeline import build_detector, build_source

    source = build_source(cfg)
    detector = build_detector(cfg)
    frames, dets = [], []
    every = cfg.detector.every_n
    try:
        source.start()
        last = None
        for frame in source:
            if last is None or frame.index % every == 0 or not len(last):
                last = detector.detect(frame)
            frames.append(frame)
            dets.append(last)
    finally:
        source.close()
        detector.close()
    return frames, dets


def build_segmenter(cfg: Any) -> Any:
    """The Segmenter exactly as ``Pipeline.run`` builds it (same model preparation and options)."""
    import torch

    from ..pipeline import _optimize, build_model
    from ..segment import Segmenter, SegmenterOptions

    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    rt, m = cfg.runtime, cfg.model
    input_size = tuple(model.input_hw) if getattr(model, "input_hw", None) else tuple(m.input_size)
    if isinstance(model, torch.nn.Module):
        model = _optimize(model, rt)
    return Segmenter(model, SegmenterOptions(
        device=rt.device, precision=rt.precision, input_size=input_size, resize=m.resize, threshold=m.threshold,
        max_rois=m.max_rois, cuda_streams=rt.cuda_streams, pinned_memory=rt.pinned_memory,
        channels_last=rt.channels_last, dilation=m.dilation, want_foreground=False))


def run_model_only(cfg: Any, frames: list[Any], dets: list[Any], warmup: int = 1) -> dict[str, Any]:
    """Time ``Segmenter.segment`` per batch of ``runtime.batch_frames`` frames (after ``warmup`` calls)."""
    import torch

    seg = build_segmenter(cfg)
    n = cfg.runtime.batch_frames
    batches = [(frames[i:i + n], dets[i:i + n]) for i in range(0, len(frames), n)]
    for f, d in batches[:warmup]:
        seg.segment(f, d)
    sync = torch.cuda.synchronize if seg.cuda else (lambda: None)
    times = []
    for f, d in batches:
        sync()
        t0 = time.perf_counter()
        seg.segment(f, d)
        sync()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {"fps": len(frames) / total if total > 0 else None, "total_s": total,
            "per_batch_s": {"median": statistics.median(times), "min": min(times), "max": max(times)},
            "warmup_calls": min(warmup, len(batches)), "batches": len(batches)}


def run_bench(opts: argparse.Namespace) -> dict[str, Any]:
    """Pipeline run, then model-only run on the same frames and detections; JSON-ready result."""
    cfg = load_config(opts.pipeline, opts.frames, list(opts.overrides))
    with tempfile.TemporaryDirectory(prefix="streamseg_bench_pipeline_") as td:
        e2e = run_end_to_end(cfg, Path(td))
    m = e2e["metrics"]
    frames, dets = decode_and_detect(cfg)
    model_only = run_model_only(cfg, frames, dets)
    mo_fps = model_only["fps"]
    e2e_fps = m["fps"]
    ratio = e2e_fps / mo_fps if mo_fps else None
    ratio_steady = e2e["steady_fps"] / mo_fps if mo_fps and e2e["steady_fps"] else None
    rois = [len(d) for d in dets]
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "note": opts.note,
        "config": {"pipeline": str(opts.pipeline), "frames": opts.frames, "overrides": list(opts.overrides),
                   "source": cfg.source.uri, "model": cfg.model.name, "weights": cfg.model.weights,
                   "input_size": list(cfg.model.input_size), "detector": cfg.detector.type,
                   "device": cfg.runtime.device, "precision": cfg.runtime.precision,
                   "batch_frames": cfg.runtime.batch_frames, "sinks": [s.type for s in cfg.sinks]},
        "frames_in": m["frames_in"],
        "frames_out": m["frames_out"],
        "frames_dropped": m["frames_dropped"],
        "rois_per_frame": {"mean": statistics.fmean(rois) if rois else 0.0, "max": max(rois, default=0)},
        "persons_segmented_pipeline": m.get("persons_segmented"),
        "persons_segmented_model_only": sum(rois),
        "end_to_end_fps": e2e_fps,
        "end_to_end_fps_steady": e2e["steady_fps"],
        "model_only_fps": mo_fps,
        "ratio": ratio,
        "ratio_steady": ratio_steady,
        "ratio_goal": RATIO_GOAL,
        "goal_met": bool(ratio is not None and ratio >= RATIO_GOAL),
        "goal_met_steady": bool(ratio_steady is not None and ratio_steady >= RATIO_GOAL),
        "definitions": {
            "end_to_end_fps": "metrics.json fps: frames_out / wall time from Pipeline() to the end of run() "
                              "(includes model build, source open, first-call warm-up, sink finalisation)",
            "end_to_end_fps_steady": "(frames_out - 1) / time from the first to the last output frame",
            "model_only_fps": "frames / summed time of Segmenter.segment on the same decoded frames and "
                              "detections, after one warm-up call; decode and detection not timed",
        },
        "first_output_s": e2e["first_output_s"],
        "run_wall_s": e2e["run_wall_s"],
        "stage_latency": m["stage_latency"],
        "capture_to_output_latency": m["capture_to_output_latency"]["overall"],
        "peak_rss_mb": m["peak_rss_mb"],
        "model_only": model_only,
        "pipeline_metrics": m,
    }


def default_out() -> Path:
    return Path("benchmarks/results") / f"pipeline_{_dt.date.today().isoformat()}.json"


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``streamseg bench pipeline ...``); writes the JSON and prints a one-line summary."""
    opts = build_parser().parse_args(argv)
    out = Path(opts.out) if opts.out else default_out()
    result = run_bench(opts)
    write_json(out, result)
    steady = result["end_to_end_fps_steady"]
    print(f"end-to-end {result['end_to_end_fps']:.3f} fps (steady {steady or float('nan'):.3f}), "
          f"model-only {result['model_only_fps'] or float('nan'):.3f} fps, ratio {result['ratio'] or float('nan'):.3f} "
          f"(steady {result['ratio_steady'] or float('nan'):.3f}; goal >= {RATIO_GOAL}), "
          f"peak RSS {result['peak_rss_mb']} MB")
    print(f"wrote {out}")
    return 0
