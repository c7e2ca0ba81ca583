"""`benchmark.py`: the generalization matrix. Train on each source (and on all but each, with leave_one_out),
score every checkpoint on every source's test split.

Each row of the matrix is one Hydra job (`train_on=<source>` or `train_on=all_but_<source>`, swept by the
config itself), so any launcher runs the rows, in parallel on SLURM. A job trains exactly as `train.py` does,
with `data.root` set to the sources it trains on, then scores its best checkpoint on each source at the
threshold its validation split chose, and writes `benchmark_row.json`. `generalization.matrix.MatrixWriter`, a Hydra
callback, rebuilds `matrix.md`, `matrix.csv`, `matrix.png` and a TensorBoard run at the sweep's root after every job.

Every column is the same images for every row: a source the row trained on is scored on its part of the
row's test split, which is the source's own test split (the split cuts each source alone, see `split.py`); a
source it never saw on that same split, computed without training; a test-only source on all its images.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from trustthepixels.config import resolve_device, setting, to_plain, validated
from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.data.ingest.pairs import read_pairs
from trustthepixels.data.ingest.roots import Roots, parse_roots
from trustthepixels.data.loading.planner import calibration_halves, plan_split
from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.detector.calibrate import LabelledScores, check_record, fit_record
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.predictions import write_predictions
from trustthepixels.errors import ConfigError, UserError
from trustthepixels.evaluation.evaluate import abstention_with_intervals
from trustthepixels.evaluation.sets import EvalSet, score_set
from trustthepixels.generalization.folds import pool_folds
from trustthepixels.metric_registry import ABSTENTION as ABSTENTION_METRICS
from trustthepixels.metrics.calibration import check
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.intervals import measured, metric_intervals
from trustthepixels.training import train

log = logging.getLogger(__name__)
ROW_FILE = "benchmark_row.json"
# What a cell holds besides its AUROC and accuracy, where the row abstains.
ABSTENTION = (*(m.key for m in ABSTENTION_METRICS if m.summary), "familiarity_auroc")
PREDICTIONS_FILE = "benchmark_predictions.csv"  # every cell's images, a `tested_on` column in front
LEAVE_OUT = "all_but_"
UNION = "+"


@dataclass
class Comparison:
    baseline: Optional[str] = setting("a row of the matrix (a source name, all_but_<name> or a union), or null")
    focus: list[str] = setting("a list of source names whose paired differences are averaged")
    generators: dict[str, str] = setting("a mapping source name -> provenance CSV (out, source_file <generator>_...)")


@dataclass
class BenchmarkSettings:
    """benchmark.yaml's own settings (the training ones are train.yaml's, with their groups' schemas): their types,
    checked by `validated` (a structured config cannot extend train.yaml's open set of keys)."""

    sources: Optional[dict[str, str]] = setting("a mapping name -> AI/ + Real/ folder, two or more")
    test_only: Optional[list[str]] = setting("a list of source names only tested on, e.g. [ml72, poidh]")
    leave_one_out: bool = setting("true (also train on all sources but each) or false")
    folds: Optional[int] = setting("the number of cross-validation folds (2 or more), or null", low=2)
    unions: Optional[list[str]] = setting(
        "a list of rows that train on several sources together, each names joined by +, e.g. [a+b]"
    )
    train_on: Optional[str] = setting("a source name, all_but_<name> or <name>+<name> (the sweep sets it)")
    device: str = setting("auto, cpu, cuda or cuda:N")
    comparison: Optional[Comparison] = setting(
        "{baseline: ROW, focus: [SOURCES], generators: {SOURCE: CSV}}: matrix.md's paired tables"
    )
    recalibrate: bool = setting("true (recalibrate each out-of-source cell on half of it, check on the rest) or false")


def benchmark_settings(cfg: Any) -> BenchmarkSettings:
    names = [f.name for f in dataclasses.fields(BenchmarkSettings)]
    return validated(BenchmarkSettings, {name: to_plain(cfg.get(name)) for name in names}, "")


def benchmark_sources(cfg: DictConfig) -> tuple[Roots, list[str]]:
    """The named sources and the ones only tested on (and `folds`), checked: a user's mistake is one line naming the
    key, before any row starts."""
    s = benchmark_settings(cfg)
    sources = s.sources
    if not isinstance(sources, dict) or len(sources) < 2:
        raise ConfigError(
            f"sources={sources!r}: name two or more AI/ + Real/ folders, e.g. "
            "'sources={a: PATH1, b: PATH2}', or benchmark=shared for the sources in ../shared/data"
        )
    roots = parse_roots(sources)
    missing = [f"{name}={folder}" for name, folder in roots.items() if not folder.is_dir()]
    if missing:
        raise ConfigError(f"sources: {', '.join(missing)}: not a folder (each source is a folder with AI/ and Real/)")
    test_only = s.test_only or []
    unknown = [name for name in test_only if name not in roots]
    if unknown:
        raise ConfigError(f"test_only={test_only}: {unknown} not in sources ({', '.join(roots)})")
    if len(test_only) == len(roots):
        raise ConfigError("test_only lists every source: leave at least one to train on")
    trainable = [name for name in roots if name not in test_only]
    if s.comparison is not None:
        c = s.comparison
        if c.baseline is not None and c.baseline not in rows(roots, test_only, bool(s.leave_one_out), s.unions):
            raise ConfigError(f"comparison.baseline={c.baseline!r}: use one of the matrix's rows, e.g. {trainable[0]}")
        wrong = [name for name in [*c.focus, *c.generators] if name not in roots]
        if wrong:
            raise ConfigError(f"comparison: {wrong} not in sources ({', '.join(roots)})")
        missing = [str(path) for path in c.generators.values() if not Path(path).is_file()]
        if missing:
            raise ConfigError(f"comparison.generators: {', '.join(missing)}: no such file (a provenance CSV)")
        if c.baseline is None and (c.focus or c.generators):  # matrix.md would print neither table
            raise ConfigError(
                "comparison.focus and comparison.generators compare rows against comparison.baseline: set it to a "
                f"row of the matrix, e.g. comparison.baseline={trainable[0]}"
            )
    for union in s.unions or []:
        if len(union.split(UNION)) < 2 or not set(union.split(UNION)) <= set(trainable):
            raise ConfigError(
                f"unions={s.unions}: {union!r} is not two or more trainable sources joined by +, "
                f"e.g. {UNION.join(trainable[:2])}"
            )
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default="auto"))
    if s.folds and strategy.startswith("ddp"):
        # Lightning starts a fit's DDP ranks by re-running the command line, so each fold's ranks would re-run
        # the whole row from fold 0 (a hang, or ranks of different folds in one process group).
        raise ConfigError(
            f"folds={s.folds} with trainer.strategy={strategy}: each fold's DDP ranks would re-run the row from its "
            "first fold; run the folds on one device (trainer=gpu or trainer=cpu), or DDP without folds"
        )
    return roots, test_only


def rows(sources: Any, test_only: Any, leave_one_out: bool, unions: Any = None) -> list[str]:
    """The matrix's rows: each trainable source, then (leave_one_out, with 3+ of them) all but each, then `unions`."""
    trainable = [name for name in to_plain(sources) if name not in (to_plain(test_only) or [])]
    out = list(trainable)
    if leave_one_out and len(trainable) >= 3:
        out += [f"{LEAVE_OUT}{name}" for name in trainable]
    return out + list(to_plain(unions) or [])


def rows_override(sources: Any, test_only: Any, leave_one_out: Any, unions: Any = None) -> str:
    """The `train_on` sweep, as the resolver `${benchmark_rows:...}` gives it to Hydra's sweeper."""
    s = benchmark_settings(
        {
            "sources": sources,
            "test_only": test_only,
            "leave_one_out": leave_one_out,
            "unions": unions,
            "device": "auto",
            "recalibrate": False,
        }
    )
    return ",".join(rows(s.sources or {}, s.test_only or [], s.leave_one_out, s.unions)) or "none"


# configs/hydra/benchmark.yaml sweeps `train_on=${benchmark_rows:...}`: registered here, where the rows are known
# (every process that composes the benchmark's config imports this module first).
OmegaConf.register_new_resolver("benchmark_rows", rows_override, replace=True)


def trained_sources(train_on: str, roots: Roots, test_only: list[str]) -> list[str]:
    trainable = [name for name in roots if name not in test_only]
    if train_on in trainable:
        return [train_on]
    if train_on.startswith(LEAVE_OUT) and train_on.removeprefix(LEAVE_OUT) in trainable:
        return [name for name in trainable if name != train_on.removeprefix(LEAVE_OUT)]
    names = train_on.split(UNION)
    if len(names) >= 2 and set(names) <= set(trainable):
        return [name for name in trainable if name in names]
    raise ConfigError(
        f"train_on={train_on!r}: use one of {', '.join(rows(roots, test_only, True))}, or sources joined by +"
    )


def benchmark_row(cfg: DictConfig) -> dict[str, Any]:
    """One row: train on `cfg.train_on`'s sources, score the best checkpoint on every source. With `folds=k`, train
    k times (k-fold cross-validation of the row's sources): the in-source cells pool the k out-of-fold test parts
    (every image of the source, scored by the one model that never saw it), the other cells average the k models."""
    roots, test_only = benchmark_sources(cfg)
    trained = trained_sources(str(cfg.train_on), roots, test_only)
    out = Path(cfg.paths.output_dir)
    train_cfg = copy.deepcopy(cfg)  # DictConfig.copy() is shallow: the row must not change the sweep's config
    with open_dict(train_cfg):
        train_cfg.data.root = {name: str(roots[name]) for name in trained}
        train_cfg.data.download = False
        if train_cfg.data.get("pair_augment") and not any(read_pairs(roots[name]) for name in trained):
            log.info("Row %s trains on no aligned set: data.pair_augment does not apply to it", cfg.train_on)
            train_cfg.data.pair_augment = False
    folds = cfg.get("folds")
    scored = []
    for fold in range(folds or 1):
        job_cfg, run = train_cfg, out
        if folds:
            job_cfg, run = copy.deepcopy(train_cfg), out / f"fold{fold}"
            with open_dict(job_cfg):
                job_cfg.data.folds, job_cfg.data.fold, job_cfg.paths.output_dir = folds, fold, str(run)
        train(job_cfg)
        if rank_zero_only.rank == 0:  # under DDP every rank trains; rank 0 alone reads, scores and writes
            scored.append(_score_run(cfg, run, roots, trained, test_only, fold if folds else None))
    if rank_zero_only.rank != 0:
        return {}
    cells, predictions = scored[0][0], scored[0][1]
    if folds:
        cells = pool_folds([c for c, _, _ in scored], [p for _, p, _ in scored], trained, folds, cfg.seed)
        predictions = [p for _, fold_predictions, _ in scored for p in fold_predictions]
    decision = scored[0][2]
    row = {
        "train_on": str(cfg.train_on),
        "trained_sources": trained,
        "checkpoint": decision["checkpoint"],
        "checkpoints": [d["checkpoint"] for _, _, d in scored],
        "folds": folds,
        "threshold": decision["threshold"],
        "threshold_source": decision["origin"],
        "model": cfg.model.backbone,
        "cells": cells,
    }
    write_predictions(out / PREDICTIONS_FILE, predictions)
    atomic_write_text(out / ROW_FILE, json.dumps(row, indent=2) + "\n")
    return row


def _score_run(cfg: DictConfig, run: Path, roots: Roots, trained: list[str], test_only: list[str], fold: int | None):
    """Score one training run's best checkpoint on every source: (cells, predictions, its decision)."""
    report = json.loads((run / "metrics.json").read_text())
    checkpoint = report["best_checkpoint"] or report["last_checkpoint"]
    if checkpoint is None:
        raise ConfigError("the training kept no checkpoint (fast_dev_run?): the benchmark scores a checkpoint")
    log.info("Scoring %s on every source", Path(checkpoint).name)
    detector = load_detector(checkpoint)
    workers, device = resolve_num_workers(cfg.data.num_workers), resolve_device(cfg.get("device", "auto"))
    decision = detector.decision(None, cfg.get("abstain"))  # the checkpoint's calibration record
    threshold = decision.value
    context = {} if fold is None else {"fold": str(fold)}
    cells, predictions, familiarity = {}, [], {}
    for name, folder in roots.items():
        subset = _test_set(cfg, name, folder, trained, test_only, run / "split.csv", detector)
        scores = score_set(detector, subset, cfg.data.batch_size, workers, device, detector.min_image_side)
        logits, familiarity[name] = scores.logits, scores.familiarity
        predictions += subset.predictions(scores, decision, **context, tested_on=name)
        m = measured(subset.labels, logits, threshold=threshold, seed=cfg.seed)
        cells[name] = {
            **{f"auroc{end}": m[f"auroc{end}"] for end in ("", "_lo", "_hi")},
            **{f"acc{end}": m[f"acc_at_threshold{end}"] for end in ("", "_lo", "_hi")},
            "images": len(subset.labels),
            "in_source": name in trained,
            "test_set": "all images (test only)" if name in test_only else "test split",
        }
        if decision.abstains:  # what abstaining costs and gains here (NaN-free: counts from this cell)
            abstain = abstention_with_intervals(subset.labels, scores, decision)
            cells[name] |= {k.removeprefix("abstain/"): v for k, v in abstain.items()}
        if name in trained and detector.calibration is not None:  # the promise, on the row's own test split
            familiar = scores.familiarity if detector.familiarity is not None else None
            promise = check(detector.calibration, subset.labels, logits, familiar)
            cells[name]["promise"] = {c: promise[c] for c in ("AI", "Real")}
        if cfg.get("recalibrate") and name not in trained:
            abstain, near_duplicates = to_plain(cfg.get("abstain")) or {}, to_plain(cfg.data.near_duplicates)
            cells[name]["recalibrated"] = recalibrated(detector, subset, scores, abstain, cfg.seed, near_duplicates)
    _familiarity_auroc(cells, familiarity, trained, cfg.seed)
    return cells, predictions, {"checkpoint": checkpoint, "threshold": threshold, "origin": decision.origin}


def recalibrated(detector, subset: EvalSet, scores, abstain, seed: int, near_duplicates) -> dict[str, Any]:
    """calibrate.py's steps on one out-of-source cell: the row's detector recalibrated on one half of it
    (`calibration_halves`, `fit_record`) and checked on the other, beside its own record checked on that half:
    coverage, accuracy on answered and confident errors per class."""
    cell = LabelledScores.of(subset.paths, subset.labels, scores)
    try:
        fit, _ = calibration_halves(subset.samples, subset.records, near_duplicates, seed)
        chosen = {s.path for s in fit}
        in_fit = np.array([p in chosen for p in subset.paths])
        record = fit_record(
            detector, cell.subset(in_fit), abstain, [subset.name], f"half of {subset.name}", strict=True
        )
    except UserError as err:  # too few images of a class (for the halves, or for alpha)
        return {"note": f"not recalibrated: {err}"}
    rest = cell.subset(~in_fit)
    return {
        "images": len(rest.labels),
        "before": check_record(detector.calibration, detector, rest),
        "after": check_record(record, detector, rest),
    }


def _familiarity_auroc(cells: dict[str, dict], familiarity: dict[str, np.ndarray], trained: list[str], seed: int):
    """Per out-of-source cell: how well familiarity tells that source's images from the row's own test images
    (AUROC with its 95% interval, unfamiliar as the positive class)."""
    own = np.concatenate([familiarity[name] for name in trained])
    if not np.isfinite(own).all():
        return  # no familiarity score
    for name, cell in cells.items():
        if name in trained:
            continue
        other = familiarity[name]
        labels = np.r_[np.zeros(len(own), int), np.ones(len(other), int)]
        unfamiliar = -np.r_[own, other]  # lower familiarity: more likely from elsewhere
        cell["familiarity_auroc"] = core_metrics(labels, unfamiliar)["auroc"]
        bands = metric_intervals(labels, unfamiliar, seed=seed)
        cell["familiarity_auroc_lo"], cell["familiarity_auroc_hi"] = bands["auroc_lo"], bands["auroc_hi"]


def _test_set(cfg, name, folder, trained, test_only, split_csv: Path, detector) -> EvalSet:
    if name in trained:  # its part of this row's own test split
        return EvalSet.from_split(name, detector, read_split_csv(split_csv, source=name)["test"])
    if name in test_only:
        return EvalSet.from_folder(folder, detector.min_image_side, cfg.data.cache_dir, name=name)
    # The source's own test split, exactly as a row trained on it cuts it (same seed and data settings).
    plan = plan_split({name: Path(folder)}, validated(DataSettings, to_plain(cfg.data), "data."))
    return EvalSet.from_samples(name, plan.parts["test"], folder, plan.scan.records)
