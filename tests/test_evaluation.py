"""eval.py, predict.py and export.py on a detector trained for real, and the metric definitions."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.scoring import InferenceDataset
from trustthepixels.evaluation.evaluate import evaluate
from trustthepixels.evaluation.robustness import perturbations
from trustthepixels.evaluation.settings import Perturbations
from trustthepixels.export.exporter import export_onnx
from trustthepixels.metrics.core import binary_metrics, choose_threshold, fit_temperature

from .conftest import REPO, TINY, compose_cfg, write_image_folder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    logits = rng.normal(0, 1, 500) + 1.5 * labels
    probs = 1 / (1 + np.exp(-logits))
    threshold = 0.37
    m = binary_metrics(labels, logits, threshold)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(labels, probs), abs=1e-6)
    assert m["ap"] == pytest.approx(skm.average_precision_score(labels, probs), abs=1e-6)
    for suffix, t in (("", 0.5), ("_at_threshold", threshold)):
        predicted = (probs > t).astype(int)
        assert m[f"acc{suffix}"] == pytest.approx(skm.accuracy_score(labels, predicted))
        assert m[f"f1{suffix}"] == pytest.approx(skm.f1_score(labels, predicted))
        assert m[f"balanced_acc{suffix}"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
        assert m[f"acc_real{suffix}"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=0))
        assert m[f"acc_ai{suffix}"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=1))


def test_threshold_maximises_balanced_accuracy_and_temperature_fixes_overconfidence():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    logits = rng.normal(0, 1, 400) + 2.0 * labels - 1.2
    probs = 1 / (1 + np.exp(-logits))
    t = choose_threshold(labels, probs)
    best = max(skm.balanced_accuracy_score(labels, probs > c) for c in [0.0, *np.unique(probs)])  # every cut
    assert skm.balanced_accuracy_score(labels, probs > t) == pytest.approx(best, abs=1e-9)
    # Calibrated logits made three times too large: the fitted temperature undoes it, and the ECE drops.
    true_logits = rng.normal(0, 1.5, 4000)
    outcomes = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    fitted = fit_temperature(outcomes, 3 * true_logits)
    assert fitted.fitted and fitted.value == pytest.approx(3.0, rel=0.15)
    m = binary_metrics(outcomes, 3 * true_logits, temperature=fitted.value)
    assert m["ece_temperature_scaled"] < m["ece"] / 2


def test_perturbations_treat_both_classes_identically(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    for name in ("AI", "Real"):
        (tmp_path / name).mkdir()
        image.save(tmp_path / name / "same.png")
    config = {"input_size": (3, 64, 64), "crop_pct": 1.0}
    chosen = perturbations(vars(Perturbations()))  # eval.py's defaults
    assert {p.kind for p in chosen} == {"jpeg", "blur", "downscale"} and len(chosen) == 9
    paths = [tmp_path / "AI" / "same.png", tmp_path / "Real" / "same.png"]
    clean = InferenceDataset(paths, config, 8)[0][0]
    for perturb in chosen:
        dataset = InferenceDataset(paths, config, 8, perturb)
        ai, real = dataset[0][0], dataset[1][0]
        assert torch.equal(ai, real), perturb  # same operation, same parameters, whatever the label
        assert not torch.equal(ai, clean), perturb
    assert chosen[-1](torch.zeros(3, 80, 120, dtype=torch.uint8)).shape == (3, 20, 30)  # downscale x0.25


def test_eval_on_a_trained_checkpoint(trained_checkpoint, tmp_path, monkeypatch):
    from trustthepixels.evaluation import figures as drawing

    extra = write_image_folder(tmp_path / "other-source", per_class=8, size=40)
    reliability, bins_drawn = drawing.reliability_figure, []
    monkeypatch.setattr(drawing, "reliability_figure", lambda *a: bins_drawn.append(a[3]) or reliability(*a))
    cfg = compose_cfg(
        [
            f"ckpt_path={trained_checkpoint}",
            f"extra_sets=[{extra}]",
            "data.num_workers=0",
            "perturbations.jpeg=[50]",
            "perturbations.blur=[2]",
            "perturbations.downscale=[0.5]",
            "bootstrap=500",
            "calibration_bins=7",
        ],
        tmp_path,
        config_name="eval",
    )
    result = evaluate(cfg)
    assert bins_drawn == [7]  # the reliability diagram bins P(AI) as the ECE does (it had 10 bins of its own)
    out = tmp_path / "run"
    assert set(result["sets"]) == {"test", "other-source"}

    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    threshold = result["calibration"]["threshold"]
    for name, m in result["sets"].items():
        y = np.array([int(r["label"]) for r in rows if r["set"] == name])
        p = np.array([float(r["p_ai"]) for r in rows if r["set"] == name])
        assert m["images"] == len(y)
        assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-5)
        assert m["ap"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-5)
        assert m["acc"] == pytest.approx(skm.accuracy_score(y, p > 0.5))
        assert m["f1"] == pytest.approx(skm.f1_score(y, p > 0.5))
        assert m["acc_at_threshold"] == pytest.approx(skm.accuracy_score(y, p > threshold))
    assert [(r["perturbation"], r["strength"]) for r in result["robustness"]] == [
        ("none", "-"),
        ("jpeg", "50"),
        ("blur", "2"),
        ("downscale", "0.5"),
    ]
    figures = ("confusion_matrix", "roc", "pr", "reliability", "p_ai_histogram")
    for name in (*figures, "robustness_jpeg", "robustness_blur", "robustness_downscale"):  # one per kind
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
    report = (out / "report.md").read_text()
    assert "## Robustness" in report and "other-source" in report and "ECE after temperature scaling" in report
    assert "## Abstention" in report and "| confident errors |" in report
    assert "(500 resamples)" in report  # what this run did (the report said 2000 whatever bootstrap= was)
    # Every number with its 95% interval; a set this small is said to be too small to rank models.
    for m in [*result["sets"].values(), *result["robustness"]]:
        for key in ("auroc", "ap", "acc", "acc_at_threshold", "balanced_acc_at_threshold", "ece", "loss"):
            assert m[f"{key}_lo"] <= m[key] + 1e-12 and m[key] <= m[f"{key}_hi"] + 1e-12, key
    assert "AUROC | 1.000 [1.000, 1.000]" in report or " [" in report
    # The record it decided by, and where it was fitted: the run's calibration part.
    assert json.loads((out / "metrics.json").read_text())["calibration"]["fitted_on"]["part"] == "calibration part"
    assert list(out.glob("events.out.tfevents.*"))


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )


def test_predict_names_bad_files_and_scores_the_rest(trained_checkpoint, bad_image_folder, tmp_path):
    result = run_script(
        "predict.py",
        f"ckpt_path={trained_checkpoint}",
        f"input={bad_image_folder}",
        f"output={tmp_path / 'p.csv'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "p.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert len(rows) == 2 * 12 + 15
    unreadable = {name for name, r in rows.items() if r["error"]}
    assert unreadable == {
        "truncated_half.jpg",
        "truncated_header_only.jpg",
        "empty_zero_bytes.jpg",
        "text_file_named_as.jpg",
        "macos_DS_Store_from_image_folder",
        "decompression_bomb_20000x20000.png",
        "one_pixel_1x1.jpg",  # the training run's rule (data.min_image_side=8) applies to new images too
    }
    assert "data.min_image_side=8" in rows["one_pixel_1x1.jpg"]["error"]
    # The one verdict rule, predict.py's default: the checkpoint's validation threshold and prediction sets.
    rule = load_detector(trained_checkpoint).decision(None, {"enabled": True, "alpha": 0.05})
    for name, row in rows.items():
        assert float(row["threshold"]) == rule.value and row["source"] == bad_image_folder.name
        if name not in unreadable:
            assert 0.0 <= float(row["p_ai"]) <= 1.0 and row["label"] == ""  # no true label for new images
            assert row["verdict"] == rule.verdict(float(row["p_ai"]), float(row["familiarity"]))
    assert "truncated_half.jpg" in result.stdout and "decompression bomb" in result.stdout


@pytest.mark.slow
def test_predict_single_image_with_gradcam_and_exit_status(trained_checkpoint, bad_image_folder, tmp_path):
    image = next((bad_image_folder / "AI").glob("ai_*.jpg"))
    result = run_script(
        "predict.py",
        f"ckpt_path={trained_checkpoint}",
        f"input={image}",
        "explain=true",
        f"paths.log_dir={tmp_path / 'outputs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "predict" / "runs").iterdir()
    (overlay,) = (run_dir / "gradcam").iterdir()
    assert overlay.read_bytes().startswith(PNG_SIGNATURE)

    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for name in ("empty_zero_bytes.jpg", "text_file_named_as.jpg"):
        shutil.copy(next(bad_image_folder.rglob(name)), only_bad / name)
    result = run_script("predict.py", f"ckpt_path={trained_checkpoint}", f"input={only_bad}", cwd=tmp_path)
    assert result.returncode != 0 and "empty file" in result.stdout


def test_onnx_export_matches_pytorch_on_real_images(trained_checkpoint, shared_dir, tmp_path):
    import onnx

    cfg = compose_cfg(
        [
            f"ckpt_path={trained_checkpoint}",
            f"check_images={shared_dir / 'data' / 'real-vs-ai'}",
            "check_limit=24",
            f"output={tmp_path / 'detector.onnx'}",
        ],
        tmp_path,
        config_name="export",
    )
    report = export_onnx(cfg)
    assert report["checked_images"] == 24 and report["max_abs_diff_p_ai"] < 1e-4
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "detector.onnx")).metadata_props}
    assert metadata["input_size"] == "32" and json.loads(metadata["labels"]) == {"0": "Real", "1": "AI"}
    assert {"mean", "std", "threshold", "interpolation", "crop_pct"} <= set(metadata)


def test_robust_degradation_is_the_evaluated_one():
    from trustthepixels.data.loading.degrade import blur, jpeg, robust_augmentation

    image = torch.from_numpy(np.random.default_rng(2).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    assert torch.equal(robust_augmentation(blur_prob=0.0, jpeg_prob=0.0)(image), image)
    only_jpeg = robust_augmentation(blur_prob=0.0, jpeg_prob=1.0, quality=(40, 40))(image)
    assert torch.equal(only_jpeg, jpeg(image, 40))
    blurred = robust_augmentation(blur_prob=1.0, jpeg_prob=0.0, sigma=(2.0, 2.0))(image)
    assert torch.equal(blurred, blur(image, 2.0)) and blurred.float().std() < image.float().std()


def test_robust_augmentation_trains(make_cfg, image_folder):
    from trustthepixels.training import train

    metrics = train(
        make_cfg(
            "debug=fdr",
            f"data.root={image_folder}",
            "model=resnet18",
            "model.pretrained=false",
            "data.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.augment=robust",
        )
    )
    assert "test/auroc" in metrics


@pytest.mark.slow
def test_checkpoints_carry_prediction_sets_and_eval_reports_what_abstention_costs(tmp_path):
    """Trained with enough calibration images for alpha 0.05, the checkpoint holds one calibration record (and no
    validation threshold or sets beside it); eval.py reports coverage, accuracy on answered images and confident
    errors with intervals, from the same verdicts as its predictions.csv."""
    import torch

    from trustthepixels.training import train

    folder = write_image_folder(tmp_path / "data", per_class=100, size=32)
    overrides = [f"data.root={folder}", *TINY, "trainer.max_epochs=1", "data.split=[0.4,0.4,0.2]", "logger=none"]
    train(compose_cfg(overrides, tmp_path))
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    saved = torch.load(best, map_location="cpu", weights_only=True)
    assert not {"val_threshold", "conformal"} & set(saved)
    stored = saved["calibration"]["sets"]
    assert stored["alpha"] == 0.05 and stored["n_ai"] == stored["n_real"] == 20  # half of validation's 40 per class
    result = evaluate(compose_cfg([f"ckpt_path={best}", "robustness=false", "data.num_workers=0"], tmp_path / "e",
                                  config_name="eval"))  # fmt: skip
    test = result["sets"]["test"]
    with open(tmp_path / "e" / "run" / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["set"] == "test"]
    answered = [r for r in rows if r["verdict"] not in ("uncertain", "unfamiliar")]
    right = [r for r in answered if r["verdict"] == ("AI" if r["label"] == "1" else "Real")]
    assert test["abstain/coverage"] == pytest.approx(len(answered) / len(rows))
    assert test["abstain/confident_errors"] == pytest.approx((len(answered) - len(right)) / len(rows))
    if answered:
        assert test["abstain/accuracy_answered"] == pytest.approx(len(right) / len(answered))
    assert test["abstain/coverage_lo"] <= test["abstain/coverage"] <= test["abstain/coverage_hi"]
    assert result["calibration"]["sets"]["ai_min_p"] == pytest.approx(stored["ai_min_p"])
    # And its familiarity score, fitted at the end of train.py: the test images' familiarity and the risk-coverage
    # curve of the verdicts.
    familiarity, record = saved["familiarity"], saved["calibration"]
    assert familiarity["n_train"] == 80 and familiarity["layers"] == "last_stage"
    assert record["familiar_quantile"] == 0.99 and len(record["reference"]) == 40
    assert all(0 <= float(r["familiarity"]) <= 1 for r in rows)
    unfamiliar = sum(float(r["familiarity"]) < 0.01 for r in rows)
    assert test["abstain/unfamiliar"] == pytest.approx(unfamiliar / len(rows))
    assert unfamiliar == sum(r["verdict"] == "unfamiliar" for r in rows)
    assert 0 <= test["abstain/aurc"] <= 1 and (tmp_path / "e" / "run" / "risk_coverage.png").is_file()
    assert result["calibration"]["familiar_min"] == pytest.approx(0.01)
    # Every other command decides by the same record: predict.py, the server and the ONNX export give those images
    # eval.py's familiarity and verdicts.
    calibrated = best
    from trustthepixels.detector.predictions import read_predictions
    from trustthepixels.prediction.predict import predict
    from trustthepixels.serving.backends import OnnxBackend, TorchBackend

    with open(tmp_path / "e" / "run" / "predictions.csv", newline="") as f:
        evaluated = {r["path"]: r for r in csv.DictReader(f) if r["set"] == "test"}
    files = [str(folder / path) for path in evaluated]
    predict(compose_cfg([f"ckpt_path={calibrated}", f"input=[{','.join(files)}]", "num_workers=0"], tmp_path / "p",
                        config_name="predict"))  # fmt: skip
    predicted = read_predictions(tmp_path / "p" / "run" / "predictions.csv")
    assert len(predicted) == len(evaluated)
    for row in predicted:
        mine = evaluated[f"{row.source}/{row.path}"]
        assert row.familiarity == pytest.approx(float(mine["familiarity"]), abs=1e-9) and row.verdict == mine["verdict"]
    abstain = compose_cfg([], tmp_path / "s", config_name="serve").abstain
    assert TorchBackend(calibrated, "cpu", abstain=abstain).info.rule.familiar_min == pytest.approx(0.01)
    export_onnx(compose_cfg([f"ckpt_path={calibrated}", f"check_images={folder}", "check_limit=8",
                             f"output={tmp_path / 'cal.onnx'}"], tmp_path / "x", config_name="export"))  # fmt: skip
    assert OnnxBackend(tmp_path / "cal.onnx", abstain=abstain).info.rule.familiar_min == pytest.approx(0.01)


@pytest.mark.slow
def test_eval_on_a_run_folder_moved_without_its_images(tmp_path):
    """eval.py scores data.root, or says in one line what is missing (was a RuntimeError traceback either way)."""
    from trustthepixels.training import train

    folder = write_image_folder(tmp_path / "dataset", per_class=12, size=40)
    train(compose_cfg(["debug=limit", f"data.root={folder}", *TINY, "trainer.max_epochs=1"], tmp_path))
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    shutil.copytree(folder, tmp_path / "elsewhere")
    shutil.rmtree(folder)  # the run folder stays; its images have gone
    logs = f"paths.log_dir={tmp_path / 'outputs'}"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, str(REPO / "eval.py"), f"ckpt_path={checkpoint}", "robustness=false", logs]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "not where it trained" in result.stderr and "data.root=FOLDER" in result.stderr
    result = run_script(
        "eval.py", f"ckpt_path={checkpoint}", f"data.root={tmp_path / 'elsewhere'}", "robustness=false", logs,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # What it prints is a table for a reader, not the JSON its file holds.
    printed = result.stdout + result.stderr
    assert len(printed.strip().splitlines()) <= 40 and '"auroc"' not in printed, printed
    assert re.search(r"^AUROC +\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", printed, flags=re.MULTILINE), printed
    (metrics,) = (tmp_path / "outputs").rglob("metrics.json")
    report = json.loads(metrics.read_text())
    # The record it decides by travels in the checkpoint: nothing of the moved run's splits is needed.
    assert report["sets"]["elsewhere"]["images"] == 24 and report["calibration"]["fitted_on"]["part"]
