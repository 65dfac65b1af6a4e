"""Training loop: learning on a handful of samples, exact resume, checkpoints/exports, CLI, config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from streamseg.errors import CheckpointError, ConfigError
from streamseg.train import HierarchicalLoss
from streamseg.train.config import load_train_config, train_config_from_dict
from streamseg.train.synthetic import make_tiny_coco
from streamseg.train.trainer import Trainer, _loader, build_scheduler, evaluate
from tests._shared import shared_file

SMALL = {"name": "b0", "roi_size": [8, 6], "mask_size": [16, 12]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these tiny steps gain little from two, and spin badly on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_coco(tmp_path_factory.mktemp("tiny"), num_train=2, num_val=1, size_wh=(128, 96),
                          video=shared_file("data", "vtest.avi"))


def _raw(tiny, out: Path, **train) -> dict:
    return {
        "model": dict(SMALL),
        "data": {"train_annotations": str(tiny.train_json), "train_images": str(tiny.image_dir),
                 "val_annotations": str(tiny.val_json), "val_images": str(tiny.image_dir),
                 "image_size": [64, 64], "num_workers": 0},
        "train": {"epochs": 2, "batch_size": 2, "lr": 1e-3, "seed": 3, **train},
        "output": {"dir": str(out), "progress": False, "keep_checkpoints": 0},
    }


def test_overfitting_a_few_samples_raises_target_miou(tiny, tmp_path):
    raw = _raw(tiny, tmp_path / "of", epochs=1)
    # two people of the first image, seen together in every step; train set = validation set
    data = json.loads(tiny.train_json.read_text())
    data["images"] = data["images"][:1]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == data["images"][0]["id"]]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(data))
    raw["data"].update(train_annotations=str(one), val_annotations=str(one), max_targets=2, augment=False,
                       repeat=32)
    raw["output"].update(export_upstream=False, tensorboard=False)
    trainer = Trainer(train_config_from_dict(raw))
    assert len(trainer.train_ds.samples) == 2
    before = evaluate(trainer.model, _loader(trainer.val_ds, [[0, 1]], 0), trainer.device, loss=HierarchicalLoss())
    summary = trainer.fit()
    after = summary["last_val"]
    assert summary["global_step"] == 32
    assert before["miou"] < 0.5
    assert after["miou"] > 0.85 and after["miou"] - before["miou"] > 0.4
    assert after["loss/loss"] < 0.75 * before["loss/loss"]


@pytest.fixture(scope="module")
def straight_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    cfg = train_config_from_dict(_raw(tiny, out))
    summary = Trainer(cfg).fit()
    return out, summary


def _csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k not in ("train_steps_per_s",)} for r in csv.DictReader(fh)]


def test_resume_gives_the_same_run(tiny, tmp_path, straight_run):
    ref_dir, ref_summary = straight_run
    out = tmp_path / "resumed"
    raw = _raw(tiny, out)
    n = ref_summary["global_step"]
    assert n == 6  # 5 samples, batches of 2 -> 3 steps per epoch
    # stop mid-epoch 1, then mid-epoch 2, then finish: each leg a fresh Trainer
    s1 = Trainer(train_config_from_dict(raw, overrides=["train.max_steps=2"])).fit()
    assert s1["global_step"] == 2 and s1["stopped_early"] and s1["epochs_completed"] == 0
    s2 = Trainer(train_config_from_dict(raw, overrides=["train.max_steps=4"]), resume=str(out / "last.pt")).fit()
    assert s2["global_step"] == 4 and s2["epochs_completed"] == 1
    s3 = Trainer(train_config_from_dict(raw), resume=str(out / "last.pt")).fit()
    assert s3["global_step"] == n and not s3["stopped_early"]

    a = torch.load(ref_dir / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), rtol=0, atol=1e-6), k
    sa, sb = a["meta"]["train_state"], b["meta"]["train_state"]
    for pid, st in sa["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(st[key], sb["optimizer"]["state"][pid][key], rtol=0, atol=1e-9)
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["loss_ema"] == pytest.approx(sb["loss_ema"])
    assert sa["epoch"] == sb["epoch"] == 2 and sa["global_step"] == sb["global_step"] == n
    assert sb["best_miou"] == pytest.approx(sa["best_miou"], abs=1e-9)
    rows_a, rows_b = _csv(ref_dir / "metrics.csv"), _csv(out / "metrics.csv")
    assert len(rows_a) == len(rows_b) == 2
    for ra, rb in zip(rows_a, rows_b):
        for k in ("epoch", "lr", "val_miou", "val_iou_class_2", "train_loss"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-5, abs=1e-7), k


def test_checkpoints_logs_and_upstream_export(straight_run):
    from streamseg.models import load_checkpoint

    out, summary = straight_run
    names = {p.name for p in out.iterdir()}
    assert {"last.pt", "checkpoint_epoch_0001.pt", "checkpoint_epoch_0002.pt", "best.pt", "metrics.csv",
            "summary.json", "upstream", "tb"} <= names
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert json.loads((out / "summary.json").read_text())["global_step"] == 6
    up = torch.load(out / "upstream" / "best_model.pth", weights_only=True)
    assert set(up) == {"epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "best_miou", "config"}
    assert up["best_miou"] == pytest.approx(summary["best_miou"])
    best = load_checkpoint(out / "best.pt")
    from_up = load_checkpoint(out / "upstream" / "best_model.pth", roi_size=(8, 6), mask_size=(16, 12))
    assert best.spec.name == from_up.spec.name == "b0" and tuple(best.spec.mask_size) == (16, 12)
    for k, v in best.state_dict().items():
        assert torch.equal(v, from_up.state_dict()[k]), k
    # every epoch checkpoint is also a loadable model
    assert load_checkpoint(out / "checkpoint_epoch_0001.pt").spec.roi_size == (8, 6)
    # the frozen UNet did not move, the head did
    first = torch.load(out / "checkpoint_epoch_0001.pt", weights_only=True)["state_dict"]
    last = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    unet = [k for k in last if k.startswith("pretrained_unet.model.model.") and k.endswith("weight")]
    assert unet and all(torch.equal(first[k], last[k]) for k in unet)
    assert not torch.equal(first["feature_combiner.weight"], last["feature_combiner.weight"])


def test_resume_refuses_wrong_files(tiny, tmp_path, straight_run):
    out, _ = straight_run
    cfg = train_config_from_dict(_raw(tiny, tmp_path / "x"))
    with pytest.raises(CheckpointError, match="not a resumable streamseg training checkpoint"):
        Trainer(cfg, resume=str(out / "best.pt"))
    other = train_config_from_dict(_raw(tiny, tmp_path / "y"), overrides=["model.mask_size=[24,12]"])
    with pytest.raises(CheckpointError, match=r"was trained as b0 roi \[8, 6\] mask \[16, 12\]"):
        Trainer(other, resume=str(out / "last.pt"))


def test_eval_main_prints_and_writes_json(tiny, tmp_path, straight_run, capsys):
    from streamseg.models import load_checkpoint
    from streamseg.train.cli import eval_main

    out, _ = straight_run
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(yaml.safe_dump(_raw(tiny, tmp_path / "ev")))
    js = tmp_path / "m.json"
    assert eval_main(str(cfg_file), str(out / "best.pt"), [], str(js)) == 0
    text = capsys.readouterr().out
    rep = json.loads(js.read_text())
    m = rep["metrics"]
    n_val = len(json.loads(tiny.val_json.read_text())["annotations"])
    assert rep["model"] == "b0" and m["num_rois"] == n_val >= 2
    assert f"Target mIoU (upstream):       {m['target_iou']:.4f}" in text
    assert "Detection rate IoU > 0.7" in text and "Instance separation accuracy" in text
    cfg = load_train_config(cfg_file)
    from streamseg.train.trainer import make_dataset

    ds = make_dataset(cfg, "val", augment=False)
    direct = evaluate(load_checkpoint(out / "best.pt"), _loader(ds, [[i] for i in range(len(ds))], 0),
                      torch.device("cpu"))
    assert direct["target_iou"] == pytest.approx(m["target_iou"])
    assert direct["instance_separation_accuracy"] == pytest.approx(m["instance_separation_accuracy"])


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from streamseg.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: b9}\ntrain: {lrr: 1}\n")
    rc = main(["train", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}: model.name:" in err and "allowed: b0, b1, b7, b0-enhanced, b1-enhanced, b7-enhanced" in err
    assert f"{bad}: train.lrr: unknown key; allowed: epochs, batch_size, lr," in err
    missing = tmp_path / "missing.yaml"
    missing.write_text("data: {train_annotations: /nonexistent/a.json}\n")
    rc = main(["train", str(missing)])
    err = capsys.readouterr().err
    assert rc == 2 and "data.train_annotations: file not found (/nonexistent/a.json)" in err
    assert "data.train_images: not set" in err


def test_warmup_schedule_and_upstream_cosine():
    def lrs(warmup: int) -> list[float]:
        cfg = train_config_from_dict({"train": {"epochs": 6, "lr": 1e-4, "min_lr": 1e-6, "warmup_epochs": warmup}})
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
        sch = build_scheduler(opt, cfg)
        out = []
        for _ in range(6):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        return out

    import math

    plain = lrs(0)
    assert plain == pytest.approx([1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)])
    # linear warm-up reaching lr in the last warm-up epoch, then the cosine over the other epochs
    warm = lrs(2)
    assert warm[:2] == pytest.approx([0.5e-4, 1e-4])
    assert warm[2:] == pytest.approx([1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: warmup_epochs \(6\) must be smaller than epochs \(6\)"):
        train_config_from_dict({"train": {"epochs": 6, "warmup_epochs": 6}})


@pytest.mark.parametrize("name", ["train_b0", "train_b1", "train_b7", "train_b0_enhanced", "train_b1_enhanced",
                                  "train_b7_enhanced", "tiny_b0"])
def test_shipped_configs_validate(name):
    from tests._shared import ROOT

    cfg = load_train_config(ROOT / "configs" / f"{name}.yaml")
    variant = name.replace("train_", "").replace("tiny_", "").replace("_", "-")
    assert cfg.model.name == variant
    assert tuple(cfg.model.roi_size) == (64, 48) and tuple(cfg.model.mask_size) == (128, 96)
    if name.startswith("train_"):  # the upstream recipe, untouched
        t = cfg.train
        assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.min_lr, t.grad_clip) == (100, 2, 1e-4, 0.01, 1e-6, 1.0)
        assert t.warmup_epochs == 0 and cfg.loss.contour_mode == "upstream" and cfg.data.image_size == (640, 640)


def test_package_exports():
    import streamseg.train as st

    assert st.HierarchicalLoss is HierarchicalLoss
    assert callable(st.train_main) and callable(st.eval_main) and st.Trainer is Trainer
    with pytest.raises(AttributeError):
        st.nope  # noqa: B018


def test_training_config_file_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: \(file\): training config not found; allowed: a path"):
        load_train_config(missing)
    dup = tmp_path / "dup.yaml"
    dup.write_text("model:\n  name: b0\nmodel:\n  name: b1\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(dup)
    assert str(e.value).startswith(f"{dup}: line 3, column 1: duplicate key") and "\n" not in str(e.value)
