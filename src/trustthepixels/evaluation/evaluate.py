"""`eval.py`: evaluate a checkpoint on its own test split (or any folder), on extra datasets, and under
perturbations; write metrics.json, report.md, predictions.csv and figures (PNG and TensorBoard)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from trustthepixels.config import resolve_device
from trustthepixels.data.ingest.roots import roots_state
from trustthepixels.data.loading.transforms import image_size
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.predictions import Threshold, write_predictions
from trustthepixels.detector.scoring import Scores
from trustthepixels.evaluation import figures
from trustthepixels.evaluation.report import render_report, terminal_table
from trustthepixels.evaluation.robustness import Perturbation, perturbations
from trustthepixels.evaluation.sets import EvalSet, eval_set, min_side, score_set, unique_names
from trustthepixels.metrics.core import sigmoid
from trustthepixels.metrics.intervals import measured
from trustthepixels.metrics.selective import abstention_rates, risk_coverage

log = logging.getLogger(__name__)


def abstention_with_intervals(labels: np.ndarray, scores: Scores, rule: Threshold) -> dict[str, float]:
    """Coverage, accuracy on answered images and the confident-error rate of the verdict rule, each with its exact
    95% interval, and the share of images it calls unfamiliar; the area under its risk-coverage curve (AURC)."""
    rates = abstention_rates(labels, rule.verdicts(sigmoid(scores.logits), scores.familiarity))
    out = {f"abstain/{k}": v for k, v in rates.items() if k not in ("answered", "images")}
    out["abstain/aurc"] = risk_coverage(labels, scores.logits, rule.value, scores.familiarity, rule.familiar_min).aurc
    return out


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    num_workers = resolve_num_workers(cfg.data.num_workers)
    usable_side = min_side(cfg, detector)

    def score(subset: EvalSet, perturb: Perturbation | None = None) -> Scores:
        return score_set(detector, subset, cfg.data.batch_size, num_workers, device, usable_side, perturb)

    main = eval_set(cfg, detector)
    extra = [EvalSet.from_folder(p, usable_side, cfg.data.cache_dir) for p in cfg.extra_sets or []]
    unique_names([main, *extra])
    decision = detector.decision(cfg.threshold, cfg.get("abstain"))
    record = detector.calibration
    threshold, temperature = decision.value, record.temperature
    log.info("Threshold %.4f (%s), temperature %.3f", threshold, decision.origin, temperature)

    def measured_here(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """Every metric at this threshold and temperature, with its 95% interval."""
        settings = {"threshold": threshold, "temperature": temperature, "bins": cfg.calibration_bins}
        return measured(labels, logits, **settings, n_resamples=cfg.bootstrap, seed=cfg.seed)

    writer = SummaryWriter(str(out))
    sets, scores_of, logits_of = {}, {}, {}
    for subset in [main, *extra]:
        scores_of[subset.name] = score(subset)
        logits_of[subset.name] = scores_of[subset.name].logits
        sets[subset.name] = measured_here(subset.labels, logits_of[subset.name])
        if decision.abstains:
            sets[subset.name] |= abstention_with_intervals(subset.labels, scores_of[subset.name], decision)
    write_predictions(
        out / "predictions.csv",
        [p for subset in [main, *extra] for p in subset.predictions(scores_of[subset.name], decision, set=subset.name)],
    )

    labels, logits = main.labels, logits_of[main.name]
    probs = sigmoid(logits)
    drawn = {
        "confusion_matrix.png": figures.confusion_matrix_figure(labels, probs, threshold),
        "roc.png": figures.roc_figure(
            labels,
            probs,
            sets[main.name]["auroc"],
            (sets[main.name]["auroc_lo"], sets[main.name]["auroc_hi"]),
            n_resamples=cfg.bootstrap,
            seed=cfg.seed,
        ),
        "pr.png": figures.pr_figure(labels, probs, sets[main.name]["ap"]),
        "reliability.png": figures.reliability_figure(labels, logits, temperature, cfg.calibration_bins),
        "p_ai_histogram.png": figures.histogram_figure(labels, probs, threshold),
    }

    if decision.abstains:
        curve = risk_coverage(labels, logits, threshold, scores_of[main.name].familiarity, decision.familiar_min)
        answered = sets[main.name]
        operating = (answered["abstain/coverage"], 1.0 - answered["abstain/accuracy_answered"])
        drawn["risk_coverage.png"] = figures.risk_coverage_figure(curve.coverage, curve.risk, curve.aurc, operating)

    robustness = []
    if cfg.robustness:
        robustness.append({"perturbation": "none", "strength": "-", **sets[main.name]})
        for perturb in perturbations(OmegaConf.to_container(cfg.perturbations)):
            metrics = measured_here(main.labels, score(main, perturb).logits)
            robustness.append({"perturbation": perturb.kind, "strength": f"{perturb.strength:g}", **metrics})
        drawn |= figures.robustness_figures(robustness)
    for name, fig in drawn.items():
        fig.savefig(out / name, dpi=110)
        writer.add_figure(f"eval/{Path(name).stem}", fig)
        plt.close(fig)

    result = {
        "checkpoint": str(detector.checkpoint),
        "model": detector.model.hparams.backbone,
        "input_size": image_size(detector.data_config),
        "trained_on": roots_state(detector.data_roots) if detector.data_roots else None,
        "calibration": record.summary()
        | {"threshold": threshold, "threshold_source": decision.origin, "familiar_min": decision.familiar_min},
        "min_image_side": usable_side,
        "sets": sets,
        "skipped": {s.name: s.skipped for s in [main, *extra]},
        "bootstrap_resamples": cfg.bootstrap,
        "robustness_set": main.name,
        "robustness": robustness,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(render_report(result, list(drawn)))
    writer.add_text("eval/report", render_report(result, []))  # the tables; the figures are under IMAGES
    writer.close()
    log.info("\n%s", terminal_table(result, str(out)))
    return result
