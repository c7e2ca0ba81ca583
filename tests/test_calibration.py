"""Calibration: the split's calibration part, the one record every command decides by, and calibrate.py on a
user's own folder."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from trustthepixels.data.ingest.scan import Sample
from trustthepixels.data.loading.split import carve_calibration, stratified_split
from trustthepixels.detector.calibrate import LabelledScores
from trustthepixels.evaluation.calibrate import _separation
from trustthepixels.metrics.calibration import Calibration, check, fit_calibration, images_needed
from trustthepixels.metrics.conformal import class_quantile
from trustthepixels.metrics.intervals import metric_intervals

from .conftest import write_image_folder
from .test_combinations import command, ok, one_line_error


def _samples(n: int, sources=("a",)) -> list[Sample]:
    return [
        Sample(Path(f"/x/{s}/{c}/{i}.jpg"), f"{s}/{c}/{i}.jpg", label, s, f"{c}/{i}.jpg")
        for s in sources
        for label, c in ((1, "AI"), (0, "Real"))
        for i in range(n)
    ]


def test_the_calibration_part_comes_out_of_validation_and_train_and_test_do_not_move():
    samples = _samples(200, ("a", "b"))
    before = stratified_split(samples, (0.6, 0.3, 0.1), seed=7)
    val_ai_a = [s.relpath for s in before["val"] if s.source == "a" and s.label == 1]
    val_real_b = [s.relpath for s in before["val"] if s.source == "b" and s.label == 0]
    groups = [val_ai_a[:5], val_real_b[:2]]  # near-duplicates among the validation images
    after = carve_calibration(before, 0.5, 7, groups)
    assert after["train"] == before["train"] and after["test"] == before["test"]
    assert sorted(s.relpath for s in after["val"] + after["calibration"]) == sorted(s.relpath for s in before["val"])
    for source in ("a", "b"):
        for label in (0, 1):
            count = {n: sum(s.source == source and s.label == label for s in after[n]) for n in ("val", "calibration")}
            assert count == {"val": 30, "calibration": 30}  # each source and class cut in half
    part_of = {s.relpath: name for name, part in after.items() for s in part}
    for group in groups:  # a near-duplicate group stays whole
        assert len({part_of[r] for r in group}) == 1
    assert carve_calibration(before, 0.0, 7)["calibration"] == []
    assert carve_calibration(before, 0.5, 8)["calibration"] != after["calibration"]  # seeded


def test_the_record_fits_once_round_trips_and_keeps_its_promise_per_class():
    rng = np.random.default_rng(0)
    assert images_needed(0.05) == 19 and class_quantile(np.arange(19.0), 0.05) == 18.0
    assert class_quantile(np.arange(18.0), 0.05) == np.inf  # one fewer: every set holds both labels
    covered, held = [], []
    for _ in range(60):
        labels = rng.integers(0, 2, 800)
        logits = rng.normal(1.2 * (2 * labels - 1), 1.5)
        record = fit_calibration(labels[:400], logits[:400], rng.normal(size=400), 0.1, 0.9, ["s"], "part")
        again = Calibration.from_state(json.loads(json.dumps(record.state())))
        assert again == record and record.summary()["reference"] == 400
        checked = check(record, labels[400:], logits[400:], record.familiarity(rng.normal(size=400)))
        covered.append([checked[name]["confident_errors"] for name in ("AI", "Real")])
        held.append([checked[name]["set_coverage"] for name in ("AI", "Real")])
        low, high = checked["AI"]["set_coverage_band"]
        assert low < 0.9 < high and checked["AI"]["set_coverage_lo"] <= checked["AI"]["set_coverage"]
        assert checked["all"]["unfamiliar"] <= 0.25
    # Split conformal: each class's miss rate is at most alpha on exchangeable images (mean over repetitions).
    assert np.mean(covered, axis=0).max() <= 0.1 + 0.01, np.mean(covered, axis=0)
    # ... because each class's true label is in its set at least 1 - alpha of the time.
    assert np.mean(held, axis=0).min() >= 0.9 - 0.01, np.mean(held, axis=0)


def test_calibrate_py_measures_with_the_resamples_and_seed_it_is_given():
    """Its AUROC interval is the one every command computes with `bootstrap` resamples and `seed` (it once passed
    them into the wrong places: 42 resamples, seed 0)."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 120)
    logits = rng.normal(size=120) + labels
    scores = LabelledScores([Path(f"{i}.jpg") for i in range(120)], labels, logits, np.full(120, np.nan), 0)
    shown = _separation(scores, 0.5, OmegaConf.create({"bootstrap": 300, "seed": 7}))
    bands = metric_intervals(labels, logits, n_resamples=300, seed=7)
    assert (shown["auroc_lo"], shown["auroc_hi"]) == (bands["auroc_lo"], bands["auroc_hi"])
    assert (shown["ap_lo"], shown["ap_hi"]) == (bands["ap_lo"], bands["ap_hi"])


@pytest.mark.slow
def test_calibrate_py_says_where_a_detector_works_and_writes_a_detector_calibrated_there(trained_checkpoint, tmp_path):
    """`python calibrate.py ckpt_path=... data.root=FOLDER`: on a folder whose labels the detector cannot separate,
    the first line of results says so, and the recalibrated record answers almost nothing there; the calibrated
    checkpoint is the same weights with a record naming the folder, and eval.py, predict.py and the model card take
    it like any checkpoint. Too few images for alpha is one line saying how many are needed."""
    images = sorted(p for p in write_image_folder(tmp_path / "generated", per_class=40, size=48).rglob("*.*"))
    random.Random(0).shuffle(images)
    mixed = tmp_path / "mixed"
    for i, image in enumerate(images):  # labels that say nothing about the pictures
        folder = mixed / ("AI" if i < 40 else "Real")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"{i}{image.suffix}")
    out = tmp_path / "calibrated"
    result = ok(command("calibrate.py", f"ckpt_path={trained_checkpoint}", f"data.root={mixed}",
                        f"hydra.run.dir={out}", "data.num_workers=0", cwd=tmp_path))  # fmt: skip
    first = next(line for line in (result.stdout + result.stderr).splitlines() if "The detector" in line)
    assert "does not work here: AUROC" in first and "most verdicts will be uncertain" in first
    metrics = json.loads((out / "metrics.json").read_text())
    after = metrics["checks"]["after"]
    # At chance it answers few images, and its confident errors per class are within reach of alpha (20 per half).
    assert after["all"]["coverage"] <= 0.5
    assert all(after[name]["confident_errors_lo"] <= 0.05 for name in ("AI", "Real"))
    assert metrics["images"] == {"usable": 80, "unusable": 0, "fitting_half": 40, "checking_half": 40}
    report = (out / "report.md").read_text()
    assert "does not work here" in report and "| recalibrated here | AI |" in report

    saved = torch.load(out / "calibrated.ckpt", map_location="cpu", weights_only=True)
    original = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in original["state_dict"].items())
    assert saved["calibration"]["fitted_on"]["sources"] == ["mixed"] and "conformal" not in saved
    ok(command("eval.py", f"ckpt_path={out / 'calibrated.ckpt'}", f"data.root={mixed}", "robustness=false",
               f"hydra.run.dir={tmp_path / 'eval'}", "data.num_workers=0", cwd=tmp_path))  # fmt: skip
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "fitting half of mixed" in evaluated["calibration"]["threshold_source"]
    ok(command("predict.py", f"ckpt_path={out / 'calibrated.ckpt'}", f"input={mixed / 'AI'}", "num_workers=0",
               f"hydra.run.dir={tmp_path / 'predict'}", cwd=tmp_path))  # fmt: skip
    from trustthepixels.detector.checkpoint import load_detector
    from trustthepixels.export.model_card import model_card

    detector = load_detector(out / "calibrated.ckpt")
    assert "Calibrated on fitting half of mixed" in model_card(detector, detector.decision())

    small = write_image_folder(tmp_path / "small", per_class=12, size=48)
    small_run = f"hydra.run.dir={tmp_path / 'small-run'}"
    line = one_line_error(command("calibrate.py", f"ckpt_path={trained_checkpoint}", f"data.root={small}", small_run,
                                  "data.num_workers=0", cwd=tmp_path))  # fmt: skip
    assert "The fitting half has 6 Real and 6 AI images: alpha=0.05 needs at least 19 of each class" in line
