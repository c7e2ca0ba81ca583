"""Numbers that are right: training and eval.py agree, calibration and thresholds hold on hard inputs, the
best checkpoint is the best whichever way the metric points, speeds exclude what they should."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from trustthepixels.callbacks import EpochSummary
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.evaluation.evaluate import evaluate
from trustthepixels.evaluation.sets import EvalSet, unique_names
from trustthepixels.metrics.core import (
    TEMPERATURE_BOUNDS,
    CalibrationError,
    binary_metrics,
    choose_threshold,
    core_metrics,
    fit_temperature,
)
from trustthepixels.training import train

from .conftest import TINY, compose_cfg, write_image_folder

SHARED = ("auroc", "ap", "acc", "balanced_acc", "f1", "acc_real", "acc_ai", "loss", "ece", "images")


def _train_and_evaluate(folder: Path, tmp: Path, cache: bool, *extra: str) -> tuple[dict, dict]:
    run = tmp / ("cached" if cache else "uncached")
    cfg = compose_cfg(
        ["debug=limit", f"data.root={folder}", *TINY, "trainer.max_epochs=2", f"data.cache={cache}", *extra], run
    )
    train(cfg)
    report = json.loads((run / "run" / "metrics.json").read_text())
    eval_cfg = compose_cfg(
        [f"ckpt_path={report['best_checkpoint']}", "robustness=false", "data.num_workers=0"],
        run / "eval",
        config_name="eval",
    )
    return report, evaluate(eval_cfg)["sets"]["test"]


def test_train_and_eval_report_the_same_test_numbers_with_and_without_the_cache(tmp_path):
    # 96 px JPEGs for a 32 px model: the base image is 36 px, so draft decoding and the resize both act.
    folder = write_image_folder(tmp_path / "data", per_class=24, size=96)
    runs = {}
    for cache in (True, False):
        report, evaluated = _train_and_evaluate(folder, tmp_path, cache, "data.jpeg_draft=true")
        for key in SHARED:
            assert report["test"][f"test/{key}"] == pytest.approx(evaluated[key], abs=1e-4), (cache, key)
        for key in ("auroc", "ap", "loss", "balanced_acc", "f1", "acc"):  # and the same intervals (was: AUROC's off)
            for end in ("_lo", "_hi"):
                assert report["test"][f"test/{key}{end}"] == pytest.approx(evaluated[key + end], abs=1e-4), key
        runs[cache] = report
    # Every number carries its 95% interval, around the number.
    for key in ("auroc", "ap", "acc", "balanced_acc", "f1", "ece", "loss", "acc_real", "acc_ai"):
        low, high = runs[True]["test"][f"test/{key}_lo"], runs[True]["test"][f"test/{key}_hi"]
        assert low <= runs[True]["test"][f"test/{key}"] <= high, key
        assert f"val/{key}_lo" in runs[True]["val"]
    # The cache is a speed setting: the same batches, so the same model and the same numbers.
    for key in SHARED:
        assert runs[True]["test"][f"test/{key}"] == pytest.approx(runs[False]["test"][f"test/{key}"], abs=1e-6)

    # predictions.csv beside metrics.json recomputes the test numbers, each image once.
    with open(tmp_path / "cached" / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    logits = np.array([float(r["logit"]) for r in rows])
    assert len({r["path"] for r in rows}) == len(rows) == runs[True]["data"]["images"]["test"]
    recomputed = core_metrics(labels, logits)
    for key in SHARED:
        assert runs[True]["test"][f"test/{key}"] == pytest.approx(recomputed[key], abs=1e-9)


@pytest.mark.slow
def test_mixed_precision_training_reports_the_float32_numbers_eval_py_computes(tmp_path):
    # bf16 autocast speeds training up (on a GPU); validation and test still score in float32 as eval.py does,
    # so the numbers training reports, and the checkpoint and threshold they choose, are the ones it reproduces.
    # The run also sets the resampling (nearest, whole image): eval.py must follow it from the checkpoint alone.
    folder = write_image_folder(tmp_path / "data", per_class=24, size=24)
    report, evaluated = _train_and_evaluate(
        folder, tmp_path, True, "trainer.precision=bf16-mixed", "data.interpolation=nearest", "data.crop_pct=1.0"
    )
    for key in SHARED:
        assert report["test"][f"test/{key}"] == pytest.approx(evaluated[key], abs=1e-6), key
    # Image by image: training's P(AI) (full repr) and eval.py's (6 decimals).
    with open(tmp_path / "cached" / "run" / "predictions.csv") as f:
        trained = {r["path"]: float(r["p_ai"]) for r in csv.DictReader(f)}
    with open(tmp_path / "cached" / "eval" / "run" / "predictions.csv") as f:
        scored = {r["path"]: float(r["p_ai"]) for r in csv.DictReader(f) if r["set"] == "test"}
    assert len(scored) == len(trained) > 0
    for path, p_ai in scored.items():
        relpath = next(rel for rel in trained if path.endswith(rel))
        assert p_ai == pytest.approx(trained[relpath], abs=1e-6), path


def test_metrics_agree_with_scikit_learn_and_name_missing_classes():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    logits = rng.normal(0, 1.5, 300) + labels
    probs = 1 / (1 + np.exp(-logits))
    m = core_metrics(labels, logits)
    assert m["loss"] == pytest.approx(skm.log_loss(labels, probs), abs=1e-9)
    assert m["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(labels, probs > 0.5))
    one_class = core_metrics(np.ones(10, dtype=int), rng.normal(size=10))
    assert np.isnan(one_class["auroc"]) and np.isnan(one_class["acc_real"]) and one_class["acc"] >= 0


def test_temperature_is_bounded_and_refused_on_separable_validation():
    labels = np.array([0] * 20 + [1] * 20)
    separable = np.concatenate([np.linspace(-5, -1, 20), np.linspace(1, 5, 20)])
    fitted = fit_temperature(labels, separable)
    assert not fitted.fitted and fitted.value == 1.0 and "separated" in fitted.note
    m = binary_metrics(labels, separable, temperature=fitted.value)
    assert m["ece_temperature_scaled"] == m["ece"]  # not the 6e-9 an unbounded T -> 0 reported

    nearly = separable.copy()
    nearly[[0, 39]] = nearly[[39, 0]]  # one mistake each way: a temperature can be fitted, within bounds
    fitted = fit_temperature(labels, nearly * 50)
    assert fitted.fitted and TEMPERATURE_BOUNDS[0] <= fitted.value <= TEMPERATURE_BOUNDS[1]
    assert not fit_temperature(np.zeros(5, dtype=int), np.arange(5.0)).fitted


def test_threshold_is_linear_in_memory_and_says_when_one_class_is_missing():
    rng = np.random.default_rng(4)
    n = 200_000  # the (unique scores x images) matrix this replaced would need ~40 GB here
    labels = rng.integers(0, 2, n)
    probs = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0, 1)
    threshold = choose_threshold(labels, probs)
    best = skm.balanced_accuracy_score(labels, probs > threshold)
    for other in (threshold - 0.01, threshold + 0.01, 0.5):
        assert best >= skm.balanced_accuracy_score(labels, probs > other)
    with pytest.raises(CalibrationError, match="needs both classes"):
        choose_threshold(np.ones(8, dtype=int), np.linspace(0, 1, 8))


def test_eval_decides_by_the_checkpoints_record_whatever_the_split_file_says_now(trained_checkpoint, tmp_path):
    run_dir = trained_checkpoint.parent.parent
    with open(run_dir / "split.csv") as f:
        rows = list(csv.DictReader(f))
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "best.ckpt").write_bytes(trained_checkpoint.read_bytes())
    with open(copy / "split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["split"] != "val" or r["class"] == "AI")
    cfg = compose_cfg(
        [f"ckpt_path={copy / 'checkpoints' / 'best.ckpt'}", "robustness=false", "data.num_workers=0"],
        tmp_path / "eval",
        config_name="eval",
    )
    result = evaluate(cfg)
    # The verdict rule and the temperature are the checkpoint's calibration record (fitted at the end of train.py, on
    # the calibration part), whatever the split file says now: eval.py fits nothing.
    record = load_detector(trained_checkpoint).calibration
    assert result["calibration"]["threshold"] == record.threshold
    assert result["calibration"]["temperature"] == record.temperature
    assert "calibration part" in result["calibration"]["threshold_source"]
    report = (tmp_path / "eval" / "run" / "report.md").read_text()
    assert f"**{record.threshold:.3f}** (balanced accuracy on calibration part of" in report


def test_extra_sets_never_overwrite_each_other(tmp_path):
    sets = [
        EvalSet("test", [], [], np.array([]), [], tmp_path / "data"),
        EvalSet("test", [], [], np.array([]), [], tmp_path / "other" / "test"),
        EvalSet("test", [], [], np.array([]), [], tmp_path / "more" / "other" / "test"),
        EvalSet("cifake", [], [], np.array([]), [], tmp_path / "cifake"),
    ]
    unique_names(sets)
    assert [s.name for s in sets] == ["test", "other/test", "other/test-2", "cifake"]


def test_val_loss_as_optimized_metric_keeps_the_lowest_loss(image_folder, tmp_path):
    cfg = compose_cfg(
        ["debug=limit", f"data.root={image_folder}", *TINY, "trainer.max_epochs=3", "optimized_metric=val/loss"],
        tmp_path,
    )
    assert cfg.callbacks.model_checkpoint.mode == "min"
    assert compose_cfg(["optimized_metric=val/loss"], tmp_path / "c").callbacks.early_stopping.mode == "min"
    metrics = train(cfg)
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    assert best.name.startswith("epoch") and "-loss" in best.name
    losses = []
    for epoch_file in [best, tmp_path / "run" / "checkpoints" / "last.ckpt"]:
        losses.append(torch.load(epoch_file, weights_only=True)["val_metrics"]["val/loss"])
    assert metrics["val/loss"] == pytest.approx(losses[0]) and losses[0] <= losses[1]
    from hydra import compose, initialize_config_dir

    from .conftest import CONFIGS

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        search = compose("train", ["hparams_search=optuna", "optimized_metric=val/loss"], return_hydra_config=True)
    assert search.hydra.sweeper.direction == "minimize"


def test_sweep_summary_ranks_by_the_metric_direction(tmp_path):
    from trustthepixels.sweeps import write_summary

    for job, loss in (("0", 0.7), ("1", 0.3), ("2", 0.5)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={job}\n")
        (tmp_path / job / "metrics.json").write_text(json.dumps({"val": {"val/loss": loss}, "test": {}}))
    assert [r["job"] for r in write_summary(tmp_path, "val/loss")] == ["1", "2", "0"]
    assert [r["job"] for r in write_summary(tmp_path, "val/auroc")] == ["0", "1", "2"]  # none has it: by name


def test_images_per_second_leaves_validation_out(monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr("trustthepixels.callbacks.time.perf_counter", lambda: clock.now)
    logged = {}
    module = SimpleNamespace(device=torch.device("cpu"), log=lambda name, value, **_: logged.__setitem__(name, value))
    trainer = SimpleNamespace(world_size=1, is_global_zero=False)
    summary = EpochSummary()
    summary.on_train_epoch_start(trainer, module)
    batch = (torch.zeros(8, 3, 2, 2), torch.zeros(8), torch.arange(8))
    for _ in range(4):  # 4 batches of 8 images, each 0.5 s of which 0.1 s waiting for data
        clock.now += 0.1
        summary.on_train_batch_start(trainer, module, batch, 0)
        clock.now += 0.4
        summary.on_train_batch_end(trainer, module, None, batch, 0)
    clock.now += 100.0  # validation, which Lightning runs before on_train_epoch_end
    summary.on_train_epoch_end(trainer, module)
    assert logged["train/images_per_sec"] == pytest.approx(32 / 2.0)
    assert logged["train/data_wait_share"] == pytest.approx(0.1 / 0.5)


def test_no_weight_decay_on_what_the_backbone_lists(make_cfg):
    from hydra.utils import instantiate

    model = instantiate(make_cfg("model=vit_small_patch16_224", "model.pretrained=false").model)
    model._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = model.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in model.backbone.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {"pos_embed", "cls_token"} <= set(model.backbone.no_weight_decay())
    assert not decayed & {"pos_embed", "cls_token"} and "blocks.0.attn.qkv.weight" in decayed


def test_the_weak_detector_warning_quotes_the_validation_interval_train_py_reports():
    """One validation AUROC interval: the warning of the model card, serve.py's page and the ONNX metadata is the one
    metrics.json holds (it once bootstrapped its own, 1000 resamples at seed 0)."""
    from omegaconf import OmegaConf

    from trustthepixels.detector.checkpoint import Detector
    from trustthepixels.training import _intervals

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 60)
    logits = rng.normal(size=60) + 0.5 * labels
    reported = _intervals("val", None, None, logits, labels, OmegaConf.create({"seed": 7}))
    saved = {"labels": labels.tolist(), "logits": logits.tolist()}
    detector = Detector(None, {}, {}, None, Path("x.ckpt"), val_predictions=saved, seed=7)
    _, low, high = detector.val_auroc()
    assert (low, high) == (reported["val/auroc_lo"], reported["val/auroc_hi"])
    assert f"95% interval {low:.2f} to {high:.2f}" in detector.weakness(at_most=1.0)
