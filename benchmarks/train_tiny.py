"""Record a B0 training run on the tiny generated dataset (steps/s on this machine).

    python benchmarks/train_tiny.py [--video ../shared/data/vtest.avi] [--out benchmarks/results/train_b0_tiny_cpu.json]

Generates the dataset into a temporary folder, trains with configs/tiny_b0.yaml (paths
overridden), then writes the per-epoch log, the measured training steps/s (optimizer steps of
batch 2, validation and checkpoint writing excluded) and the machine description as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_video = ROOT.parent / "shared" / "data" / "vtest.avi"
    ap.add_argument("--video", default=str(default_video) if default_video.exists() else None)
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny_b0.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_b0_tiny_cpu.json"))
    ap.add_argument("--set", action="append", default=[], help="extra config overrides key.path=value")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from streamseg.train.config import load_train_config
    from streamseg.train.synthetic import make_tiny_coco
    from streamseg.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_tiny_coco(Path(tmp) / "tiny_coco", video=a.video)
        run_dir = Path(tmp) / "run"
        overrides = [
            f"data.train_annotations={tiny.train_json}", f"data.train_images={tiny.image_dir}",
            f"data.val_annotations={tiny.val_json}", f"data.val_images={tiny.image_dir}",
            f"output.dir={run_dir}", "output.progress=false", *a.set,
        ]
        if a.threads:
            overrides.append(f"train.threads={a.threads}")
        cfg = load_train_config(a.config, overrides)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, origin=a.config)
        setup_s = time.perf_counter() - t0
        n_train, n_val = len(trainer.train_ds), len(trainer.val_ds or [])
        summary = trainer.fit()
        with (run_dir / "metrics.csv").open() as fh:
            rows = list(csv.DictReader(fh))
    epochs = []
    for r in rows:
        epochs.append({
            "epoch": int(r["epoch"]), "lr": float(r["lr"]), "train_loss": float(r["train_loss"]),
            "train_steps_per_s": float(r["train_steps_per_s"]),
            "val_target_miou": float(r["val_miou"]) if r.get("val_miou") else None,
            "val_loss": float(r["val_loss_loss"]) if r.get("val_loss_loss") else None,
        })
    # the first epoch includes warm-up effects (allocator, first-call overheads): report both
    rates = [e["train_steps_per_s"] for e in epochs]
    result = {
        "what": "B0 training on the tiny generated dataset (streamseg.train.synthetic), CPU",
        "config": Path(a.config).name,
        "overrides": a.set,
        "model": cfg.model.name,
        "roi_size": list(cfg.model.roi_size),
        "mask_size": list(cfg.model.mask_size),
        "image_size_hw": list(cfg.data.image_size),
        "batch_size": cfg.train.batch_size,
        "train_samples": n_train,
        "val_samples": n_val,
        "epochs": epochs,
        "steps": summary["global_step"],
        "train_steps_per_s_mean": sum(rates) / len(rates),
        "train_steps_per_s_after_first_epoch": (sum(rates[1:]) / len(rates[1:])) if len(rates) > 1 else None,
        "wall_s_total_incl_validation_and_checkpoints": summary["wall_s_this_run"],
        "setup_s": setup_s,
        "best_val_target_miou": summary["best_miou"],
        "machine": {
            "cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": summary["device"],
            "note": "shared 2-core machine; other jobs may have run concurrently",
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "train_steps_per_s_mean", "best_val_target_miou")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
