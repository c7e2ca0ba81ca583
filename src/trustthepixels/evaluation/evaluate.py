"""`eval.py`: evaluate a checkpoint on its own test split (or any folder), on extra datasets, and under
perturbations; write metrics.json, report.md, predictions.csv and figures (PNG and TensorBoard)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from trustthepixels.data.ingest.roots import parse_roots, roots_state, source_of
from trustthepixels.data.ingest.scan import Sample, scan_sources
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.data.loading.transforms import image_size
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.detector.checkpoint import Detector, load_detector, resolve_device
from trustthepixels.detector.predictions import Prediction, Threshold, decision_threshold, p_ai_of, write_predictions
from trustthepixels.evaluation import figures
from trustthepixels.evaluation.report import render_report
from trustthepixels.evaluation.robustness import Perturbation, perturbations
from trustthepixels.metrics.conformal import abstention_metrics
from trustthepixels.metrics.core import (
    CalibrationError,
    Temperature,
    binary_metrics,
    choose_threshold,
    fit_temperature,
    sigmoid,
)
from trustthepixels.metrics.intervals import binary_metric_intervals, clopper_pearson

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Images to score: each named by its source and its path inside that source's folder (as every
    predictions file names them), with its label and the file to read."""

    name: str
    sources: list[str]
    relpaths: list[str]  # inside each image's source folder
    labels: np.ndarray
    paths: list[Path]
    root: Path  # the folder of its (first) source
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason): unusable files of the scan

    @classmethod
    def from_split(cls, name: str, detector: Detector, rows: list[tuple[str, int]]) -> EvalSet:
        """Part of the training run's own split (its `split.csv`), found in the folders it was trained on."""
        keys = [source_of(detector.data_roots, p) for p, _ in rows]
        return cls(
            name,
            [source for source, _ in keys],
            [relpath for _, relpath in keys],
            np.array([label for _, label in rows]),
            [detector.locate(p) for p, _ in rows],
            detector.first_source_folder,
        )

    @classmethod
    def from_samples(cls, name: str, samples: list[Sample], root: Path) -> EvalSet:
        return cls(
            name,
            [s.source for s in samples],
            [s.source_relpath for s in samples],
            np.array([s.label for s in samples]),
            [s.path for s in samples],
            root,
        )

    @classmethod
    def from_folder(cls, root: str | Path, min_side: int, cache_dir: str | None, name: str | None = None) -> EvalSet:
        """All of a folder's usable images; the source is named after the folder (or `name`)."""
        (source, folder), *_ = parse_roots(str(root)).items()
        scan = scan_sources({name or source: folder}, min_side=min_side, cache_dir=cache_dir)
        subset = cls.from_samples(name or source, scan.samples, scan.root)
        subset.skipped = [(relpath, reason) for relpath, _, reason in scan.skipped]
        return subset

    def predictions(self, logits: np.ndarray, rule: Threshold, **context: str) -> list[Prediction]:
        return [
            Prediction(source, relpath, float(z), rule.value, int(y), context=context, decided=rule.verdict(p_ai_of(z)))
            for source, relpath, z, y in zip(self.sources, self.relpaths, logits, self.labels, strict=True)
        ]


def unique_names(sets: list[EvalSet]) -> None:
    """Name every set uniquely: a folder called `test` given in extra_sets must not overwrite the test split's
    results. A clash takes the parent folder's name (`other/test`), then a number."""
    taken: set[str] = set()
    for subset in sets:
        name = subset.name
        if name in taken:
            name = f"{subset.root.parent.name}/{subset.name}"
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        subset.name = name
        taken.add(name)


class Evaluator:
    """Scores whole sets of verified images (a file that fails now changed since it was scanned: an error)."""

    def __init__(self, detector: Detector, batch_size: int, num_workers: int, device: str, min_side: int):
        self.detector = detector
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.min_side = min_side

    def logits(self, subset: EvalSet, perturb: Perturbation | None = None) -> np.ndarray:
        what = f"{subset.name}" + (f" ({perturb.name})" if perturb else "")
        logits, errors = self.detector.score_files(
            subset.paths, self.batch_size, self.num_workers, self.device, perturb, self.min_side, f"Scoring {what}"
        )
        if errors:  # files verified at setup cannot fail unless they changed since
            raise RuntimeError(
                f"{len(errors)} file(s) of {what} could not be read: {[str(e) for e in list(errors.values())[:3]]}"
            )
        return logits


def _sets(cfg: DictConfig, detector: Detector) -> tuple[EvalSet | None, EvalSet]:
    """The validation split (for threshold and temperature) and the main set to evaluate."""
    split_csv = detector.run_dir / "split.csv" if detector.run_dir else None
    val = test = None
    if split_csv is not None and split_csv.is_file() and detector.data_roots:
        parts = read_split_csv(split_csv)
        val = EvalSet.from_split("val", detector, parts["val"])
        test = EvalSet.from_split("test", detector, parts["test"])
    if cfg.data.root:
        test = EvalSet.from_folder(cfg.data.root, _min_side(cfg, detector), cfg.data.cache_dir)
    if test is None:
        raise FileNotFoundError(
            f"No split.csv beside {detector.checkpoint} (expected in <run dir>/split.csv): pass data.root=FOLDER "
            "to evaluate on a folder of AI/ and Real/ images"
        )
    return val, test


def _min_side(cfg: DictConfig, detector: Detector) -> int:
    """The training run's rule for a usable image, unless data.min_image_side says otherwise."""
    return detector.min_image_side if cfg.data.min_image_side is None else int(cfg.data.min_image_side)


def calibrate(
    detector: Detector,
    val: EvalSet | None,
    val_logits: np.ndarray | None,
    configured: float | None = None,
    abstain: Mapping[str, Any] | None = None,
) -> tuple[Threshold, Temperature]:
    """The decision threshold (`decision_threshold`: `threshold=`, else the checkpoint's validation one; for a
    checkpoint saved without validation predictions, chosen here on its validation split by the same rule) and
    the temperature fitted on the validation split (1.0, with the reason, when it cannot be)."""
    validation = detector.val_threshold
    if validation is None and val is not None:
        try:
            validation = choose_threshold(val.labels, sigmoid(val_logits))
        except CalibrationError as err:
            log.warning("Cannot choose a threshold on the validation split: %s", err)
    threshold = decision_threshold(configured, validation, detector.decision(None, abstain).sets)
    if val is None:
        return threshold, Temperature(1.0, False, "no validation split (the checkpoint's run has no split.csv)")
    temperature = fit_temperature(val.labels, val_logits)
    if not temperature.fitted:
        log.warning("No temperature fitted: %s", temperature.note)
    return threshold, temperature


def abstention_with_intervals(labels: np.ndarray, logits: np.ndarray, rule: Threshold) -> dict[str, float]:
    """Coverage, accuracy on answered images and the confident-error rate of the verdict rule, each with its exact
    95% interval."""
    counts = abstention_metrics(labels, rule.verdicts(sigmoid(logits)))
    out = {}
    for name, hits, trials in (
        ("coverage", counts["answered"], counts["images"]),
        ("accuracy_answered", counts["answered_right"], counts["answered"]),
        ("confident_errors", counts["answered"] - counts["answered_right"], counts["images"]),
    ):
        out[f"abstain/{name}"] = counts[name]
        out[f"abstain/{name}_lo"], out[f"abstain/{name}_hi"] = clopper_pearson(hits, trials)
    return out


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    num_workers = resolve_num_workers(cfg.data.num_workers)
    min_side = _min_side(cfg, detector)
    evaluator = Evaluator(detector, cfg.data.batch_size, num_workers, device, min_side)

    val, main = _sets(cfg, detector)
    extra = [EvalSet.from_folder(p, min_side, cfg.data.cache_dir) for p in cfg.extra_sets or []]
    unique_names([main, *extra])
    val_logits = evaluator.logits(val) if val is not None else None
    decision, fitted = calibrate(detector, val, val_logits, cfg.threshold, cfg.get("abstain"))
    threshold, temperature = decision.value, fitted.value
    log.info("Threshold %.4f (%s), temperature %.3f", threshold, decision.origin, temperature)

    writer = SummaryWriter(str(out))
    sets, logits_of = {}, {}
    for subset in [main, *extra]:
        logits_of[subset.name] = evaluator.logits(subset)
        sets[subset.name] = binary_metrics(
            subset.labels, logits_of[subset.name], threshold, temperature, cfg.calibration_bins
        ) | binary_metric_intervals(
            subset.labels, logits_of[subset.name], threshold, temperature, cfg.calibration_bins, cfg.bootstrap, cfg.seed
        )
        if decision.sets is not None:
            sets[subset.name] |= abstention_with_intervals(subset.labels, logits_of[subset.name], decision)
        for key, value in sets[subset.name].items():
            writer.add_scalar(f"eval/{subset.name}/{key}", value)
    write_predictions(
        out / "predictions.csv",
        [p for subset in [main, *extra] for p in subset.predictions(logits_of[subset.name], decision, set=subset.name)],
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
        "reliability.png": figures.reliability_figure(labels, logits, temperature),
        "p_ai_histogram.png": figures.histogram_figure(labels, probs, threshold),
    }

    robustness = []
    if cfg.robustness:
        robustness.append({"perturbation": "none", "strength": "-", **sets[main.name]})
        for perturb in perturbations(OmegaConf.to_container(cfg.perturbations)):
            perturbed = evaluator.logits(main, perturb)
            metrics = binary_metrics(main.labels, perturbed, threshold, temperature, cfg.calibration_bins)
            metrics |= binary_metric_intervals(
                main.labels, perturbed, threshold, temperature, cfg.calibration_bins, cfg.bootstrap, cfg.seed
            )
            robustness.append({"perturbation": perturb.kind, "strength": f"{perturb.strength:g}", **metrics})
            writer.add_scalar(f"robustness/{perturb.kind}/auroc", metrics["auroc"], int(perturb.strength * 100))
        drawn["robustness.png"] = figures.robustness_figure(robustness)
    for name, fig in drawn.items():
        fig.savefig(out / name, dpi=110)
        writer.add_figure(f"eval/{Path(name).stem}", fig)
        plt.close(fig)
    writer.close()

    result = {
        "checkpoint": str(detector.checkpoint),
        "model": detector.model.hparams.backbone,
        "input_size": image_size(detector.data_config),
        "trained_on": roots_state(detector.data_roots) if detector.data_roots else None,
        "calibration": {
            "threshold": threshold,
            "threshold_source": decision.origin,
            "abstain": decision.sets.state() if decision.sets is not None else None,
            "temperature": temperature,
            "temperature_fitted": fitted.fitted,
            "temperature_note": fitted.note,
            "val_images": len(val.relpaths) if val else 0,
        },
        "min_image_side": min_side,
        "sets": sets,
        "skipped": {s.name: s.skipped for s in [main, *extra]},
        "robustness_set": main.name,
        "robustness": robustness,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    figure_names = [n for n in drawn if n != "robustness.png"]
    (out / "report.md").write_text(render_report(result, figure_names, "robustness.png" if robustness else None))
    log.info("Evaluation written to %s\n%s", out, json.dumps(sets, indent=1))
    return result
