"""`train(cfg)`: fit, test the best checkpoint, calibrate it on the calibration part, and write `metrics.json`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from trustthepixels.callbacks import StepSeed
from trustthepixels.config import to_plain
from trustthepixels.data.ingest.roots import check_data_roots
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.ddp import ddp_session
from trustthepixels.detector.calibrate import fit_record, score_labelled
from trustthepixels.detector.checkpoint import (
    DATAMODULE_KEY,
    Detector,
    detector_of,
    read_checkpoint,
    store_in_checkpoint,
)
from trustthepixels.detector.predictions import Threshold, write_predictions
from trustthepixels.detector.scoring import Scores
from trustthepixels.errors import ConfigError, UserError
from trustthepixels.evaluation.sets import EvalSet
from trustthepixels.metrics.calibration import check
from trustthepixels.metrics.intervals import metric_intervals
from trustthepixels.model.gather import source_masks
from trustthepixels.tables import markdown_table, text_table, with_interval

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a config group; an entry set to null is switched off."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]


def key_choices(cfg: DictConfig, datamodule: LightningDataModule | None = None) -> dict[str, Any]:
    """The settings that tell runs apart: `metrics.json`, TensorBoard's hparams tab and sweep summaries."""
    choices = {
        "model": cfg.model.backbone,
        "seed": cfg.seed,
        "lr": OmegaConf.select(cfg, "model.optimizer.lr"),
        "batch_size": cfg.data.batch_size,
        "precision": str(cfg.trainer.get("precision")),
        "weight_decay": OmegaConf.select(cfg, "model.optimizer.weight_decay"),
        "image_size": getattr(datamodule, "data_config", {}).get("input_size", [None])[-1],
        "max_epochs": cfg.trainer.get("max_epochs"),
        "weights": str(cfg.model.get("weights") or ("hub" if cfg.model.get("pretrained") else "none")),
        "data_root": str(cfg.data.root),
    }
    if HydraConfig.initialized():
        choices["overrides"] = " ".join(HydraConfig.get().overrides.task)
    return choices


def _prefixed(metrics: dict[str, float], stage: str) -> dict[str, float]:
    return {f"{stage}/{k}": v for k, v in metrics.items()}


def _stage_metrics(metrics: dict[str, Any], stage: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(f"{stage}/")}


def train(cfg: DictConfig) -> dict[str, float]:
    """Train a detector as `cfg` says. Returns the final val and test metrics (`val/auroc`, `test/acc`, ...)."""
    # A path that cannot work fails now, before weights load or images are read (cli.run has checked the settings).
    check_data_roots(to_plain(cfg.data.root), cfg.data.download)
    if cfg.get("ckpt_path"):  # resuming: a file that is no checkpoint of this project is refused before anything
        read_checkpoint(cfg.ckpt_path, hint="resume from a run's <run dir>/checkpoints/last.ckpt")
    seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    log.info("Run directory: %s", Path(cfg.paths.output_dir).resolve())
    model: LightningModule = instantiate(cfg.model)
    start = cfg.model.get("weights") or ("pretrained (hub)" if cfg.model.get("pretrained") else "random init")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = (model.parameter_count / 1e6, trainable / 1e6)
    log.info("Backbone %s (%s), %.1fM parameters, %.1fM trained", cfg.model.backbone, start, *sizes)
    datamodule: LightningDataModule = instantiate(cfg.data, data_config=model.data_config)
    model.paired_batches = bool(cfg.data.get("pair_augment", False))
    callbacks: list[Callback] = [*_instantiate_group(cfg.get("callbacks")), StepSeed(cfg.seed)]
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    if not loggers:  # the LR monitor only writes to a logger, and refuses to run without one
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    with ddp_session(trainer):  # DDP ranks re-run this job, in this job's directory (see ddp.py)
        return _fit_and_test(cfg, model, datamodule, trainer)


def _fit_and_test(
    cfg: DictConfig, model: LightningModule, datamodule: LightningDataModule, trainer: Trainer
) -> dict[str, float]:
    output_dir = Path(cfg.paths.output_dir)
    if cfg.data.get("feature_cache", False):
        if not cfg.model.get("freeze_backbone"):
            raise ConfigError(
                "data.feature_cache=true needs model.freeze_backbone=true: features change as a backbone learns"
            )
        datamodule.setup("fit")
        datamodule.use_cached_features(model.to(trainer.strategy.root_device))

    # Building caches draws random numbers (DataLoader seeds): re-seed, so that a run does not depend on
    # whether its caches were warm.
    seed_everything(cfg.seed, workers=True, verbose=False)
    # weights_only: the checkpoint's plain data alone is unpickled, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)

    # Report the best checkpoint's numbers, not the last epoch's; fast_dev_run keeps no checkpoint.
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor is not None), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    # Read before `test`, which restores the callbacks' states as the best checkpoint saved them.
    last = next(
        (c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor is None and c.best_model_path), None
    )
    if best:
        saved = torch.load(best, map_location="cpu", weights_only=True)
        val, val_predictions = saved.get("val_metrics", {}), saved.get("val_predictions")
    else:
        log.warning("No checkpoint was saved; testing the weights in memory")
        val = model.last_metrics.get("val") or _stage_metrics(trainer.callback_metrics, "val")
        predictions = model.last_predictions.get("val")
        val_predictions = {"logits": predictions[1], "labels": predictions[2]} if predictions else None
    logged = _stage_metrics(
        trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)[0], "test"
    )
    test = dict(sorted(model.last_metrics.get("test", logged).items()))  # full precision, as eval.py computes
    # Every number from a sample of images gets its 95% interval (see evaluation/intervals.py).
    if val_predictions is not None:
        val |= _intervals(
            "val", datamodule, val_predictions.get("indices"), val_predictions["logits"], val_predictions["labels"], cfg
        )
    test_predictions = model.last_predictions.get("test")
    if test_predictions is not None:
        test |= _intervals("test", datamodule, *test_predictions, cfg)
    metrics = {**val, **test}

    choices = key_choices(cfg, datamodule)
    report = {
        "optimized_metric": cfg.get("optimized_metric"),
        "val": val,
        "test": test,
        "best_checkpoint": best,
        "last_checkpoint": last,
        "epochs_completed": trainer.current_epoch,
        "global_step": trainer.global_step,
        "data": datamodule.summary(),
        "config": choices,
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        detector = _calibrate(cfg, model, datamodule, best, last, str(trainer.strategy.root_device))
        rule = detector.decision(None, cfg.get("abstain"))
        report["calibration"] = detector.calibration.summary() if detector.calibration else None
        test_familiarity = None
        if test_predictions is not None:
            test_familiarity = _test_familiarity(detector, datamodule, test_predictions[0], cfg)
            indices, logits, labels = test_predictions
            if rule.abstains and detector.calibration is not None:  # the promise, on the test split
                familiarity = None if test_familiarity is None else test_familiarity[np.asarray(indices, dtype=int)]
                report["abstention"] = {"test": check(detector.calibration, labels, logits, familiarity)}
        (output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        if test_predictions is not None:
            write_test_predictions(
                output_dir / "predictions.csv", datamodule, *test_predictions, rule, test_familiarity
            )
        table = final_table(val, test)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                _log_to_tensorboard(logger, choices, metrics, table)
        log.info("Best checkpoint: %s (95%% intervals in brackets)\n%s", best, table)
    return metrics


# TensorBoard's HPARAMS tab shows 5 columns of each kind at first: hparams sorted by name (those that differ between
# runs first), metrics in the order given. These names sort model, seed, lr, batch and precision into the first 5;
# every setting is in the TEXT tab.
HPARAMS = ("model", "seed", "lr", "batch_size", "precision", "weight_decay", "weights")
FIRST_METRICS = ("val/auroc", "test/auroc", "test/acc", "test/ap", "val/loss")


def _log_to_tensorboard(logger: TensorBoardLogger, choices: dict[str, Any], metrics: dict[str, float], table: str):
    """HPARAMS: the settings that tell runs apart (integers as integers: TensorBoard shows numbers with 4 decimals)
    and the final point metrics. TEXT: every setting, and the final table with its intervals (not one-point scalar
    charts)."""
    shown = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in choices.items()}
    points = {k: v for k, v in metrics.items() if not k.endswith(("_lo", "_hi"))}
    ordered = [k for k in FIRST_METRICS if k in points] + [k for k in points if k not in FIRST_METRICS]
    logger.log_hyperparams(
        {k: shown[k] for k in HPARAMS if k in shown}, metrics={f"hparams/{k}": points[k] for k in ordered}
    )
    settings = markdown_table(["setting", "value"], ([k, f"`{v}`"] for k, v in choices.items()))
    logger.experiment.add_text("settings", "\n".join(settings))
    logger.experiment.add_text("final metrics", "```\n" + table + "\n```")
    logger.finalize("success")


def _calibrate(cfg: DictConfig, model, datamodule, best: str | None, last: str | None, device: str) -> Detector:
    """One calibration pass over the weights in memory (the best checkpoint's, which `test` loaded): familiarity
    statistics from the training part's features, then the calibration part's logits and distances, fitted into
    one record, stored in the best checkpoint and in `last.ckpt` (fitted on its own weights when they differ)."""
    abstain = cfg.get("abstain") or {}
    workers = resolve_num_workers(cfg.data.num_workers)
    saved = {DATAMODULE_KEY: datamodule.state_dict()}
    if best:
        chosen = torch.load(best, map_location="cpu", weights_only=True)
        saved |= {k: chosen[k] for k in ("val_metrics", "val_predictions") if k in chosen}
    detector = detector_of(model, saved, Path(best or cfg.paths.output_dir))
    part, files = "calibration part", datamodule.datasets["calibration"].samples
    if not files:
        log.warning(
            "No calibration part (data.calibration_share=0): calibrating on the validation split, which also "
            "chose this checkpoint, so the coverage promise is approximate"
        )
        part, files = "validation split", datamodule.datasets["val"].samples
    sources = sorted({s.source for s in files})

    def fit(detector: Detector) -> dict:
        return _fit_entries(detector, datamodule, files, abstain, sources, part, cfg, workers, device)

    try:
        entries = fit(detector)
    except (UserError, ValueError) as err:  # a diverged run, say: its numbers stand, its checkpoints stay uncalibrated
        log.warning("Not calibrated: %s. Its checkpoints decide nothing until python calibrate.py is run on them", err)
        detector.familiarity = None
        return detector
    if best:
        store_in_checkpoint(best, **entries)
        if last and Path(last).is_file() and Path(last).resolve() != Path(best).resolve():
            _calibrate_last(Path(last), Path(best), model, fit)
    return detector


def _fit_entries(detector, datamodule, files, abstain, sources, part, cfg, workers, device) -> dict:
    """The familiarity statistics (training part) and the calibration record (`files`), attached to `detector`,
    as checkpoint entries."""
    entries = {}
    if abstain.get("enabled", True) and abstain.get("familiar_quantile", 0) is not None:
        train = [(s.path, s.label) for s in datamodule.datasets["train"].samples]
        layers = str(abstain.get("familiarity_layers", "last_stage"))
        entries["familiarity"] = detector.fit_familiarity(train, layers, cfg.data.batch_size, workers, device)
    labelled = [(s.path, s.label) for s in files]
    scores = score_labelled(detector, labelled, cfg.data.batch_size, workers, device, f"Calibrating on the {part}")
    record = fit_record(detector, scores, abstain, sources, part)
    detector.attach(record)
    fitted = (len(scores.labels), record.threshold, record.temperature)
    log.info("Calibrated on the %s (%d images): threshold %.4f, temperature %.3f", part, *fitted)
    return entries | {"calibration": record.state()}


def _calibrate_last(last: Path, best: Path, model, fit) -> None:
    """`last.ckpt` gets its own record: the same one when it holds the best checkpoint's step, else one fitted on
    its own weights (then the best weights are put back)."""
    saved_last = torch.load(last, map_location="cpu", weights_only=True)
    saved_best = torch.load(best, map_location="cpu", weights_only=True)
    if saved_last.get("global_step") == saved_best.get("global_step"):
        store_in_checkpoint(last, **{k: saved_best[k] for k in ("familiarity", "calibration") if k in saved_best})
        return
    model.load_state_dict(saved_last["state_dict"])
    detector = detector_of(model, saved_last, last)
    store_in_checkpoint(last, **fit(detector))
    model.load_state_dict(saved_best["state_dict"])


def _test_familiarity(detector: Detector, datamodule, indices, cfg: DictConfig) -> np.ndarray | None:
    """The test images' familiarity (by test index), read from the files as every later command reads an image."""
    if detector.familiarity is None:
        return None
    samples = datamodule.datasets["test"].samples
    test = np.full(len(samples), np.nan)
    indices = np.asarray(indices, dtype=int)
    workers = resolve_num_workers(cfg.data.num_workers)
    test[indices] = detector.score_files(
        [samples[i].path for i in indices],
        cfg.data.batch_size,
        workers,
        str(detector.model.device),
        description="Familiarity of the test images",
    ).familiarity
    return test


def _intervals(stage: str, datamodule, indices, logits, labels, cfg: DictConfig) -> dict[str, float]:
    """95% intervals of the stage's metrics (`test/auroc_lo`), and of each source's (`test/auroc/<source>_lo`)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    out = _prefixed(metric_intervals(labels, logits, seed=cfg.seed), stage)
    sources = datamodule.sources(stage) if hasattr(datamodule, "sources") and indices is not None else None
    for source, chosen in source_masks(sources, indices).items():
        for key, value in metric_intervals(labels[chosen], logits[chosen], seed=cfg.seed).items():
            name, end = (key[:-3], key[-3:]) if key.endswith(("_lo", "_hi")) else (key, "")  # "auroc", "_lo"
            out[f"{stage}/{name}/{source}{end}"] = value
    return out


def write_test_predictions(
    path: Path, datamodule: LightningDataModule, indices, logits, labels, rule: Threshold, familiarity=None
) -> None:
    """The test split's predictions, in the one format and by the one code path eval.py writes them with, decided by
    the checkpoint's calibration record: every test number in metrics.json can be recomputed from this file."""
    samples, indices = datamodule.datasets["test"].samples, np.asarray(indices, dtype=int)
    scored = EvalSet.from_samples("test", [samples[i] for i in indices], datamodule.root)
    scored.labels = np.asarray(labels, dtype=int)
    familiarity = np.full(len(indices), np.nan) if familiarity is None else np.asarray(familiarity)[indices]
    write_predictions(path, scored.predictions(Scores(np.asarray(logits, dtype=float), familiarity, {}), rule))


FIRST = ("images", "auroc", "ap", "loss", "acc", "acc_at_threshold", "balanced_acc_at_threshold", "ece")


def final_table(val: dict[str, float], test: dict[str, float]) -> str:
    """Val and test side by side, one metric a row, each value with its 95% interval: how a run ends."""
    stages = {"val": val, "test": test}
    names = {k.split("/", 1)[1] for m in stages.values() for k in m if not k.endswith(("_lo", "_hi"))}
    order = sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))

    def cell(metrics: dict[str, float], key: str) -> str:
        return with_interval(metrics, key, "{:.0f}" if key.split("/")[1] == "images" else "{:.4f}")

    rows = [[name, *(cell(m, f"{stage}/{name}") for stage, m in stages.items())] for name in order]
    return "\n".join(text_table([["metric", *stages], *rows]))
