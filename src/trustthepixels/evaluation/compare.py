"""`compare.py`: is detector A better than detector B on the same images, or is the difference noise?

For each pair of models scored on the same images: the AUROC difference with DeLong's paired 95% interval and
p-value (DeLong, DeLong & Clarke-Pearson 1988, in Sun & Xu's 2014 fast form), a paired stratified bootstrap of
the same difference, and McNemar's exact test on the accuracy at each model's own threshold; a markdown table,
the ROC curves overlaid (PNG and TensorBoard) and one plain sentence.

Inputs are prediction files (`predictions.csv` of a run or of eval.py, `oof_predictions.csv` of a
cross-validation sweep, or the folders holding them) or checkpoints, scored here on the same images.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import DictConfig
from sklearn.metrics import roc_curve
from torch.utils.tensorboard import SummaryWriter

from trustthepixels.detector.predictions import Prediction, labelled, read_predictions
from trustthepixels.errors import UserError
from trustthepixels.evaluation.figures import ROC_AXES, new_figure
from trustthepixels.metrics.core import core_metrics, sigmoid
from trustthepixels.metrics.paired_tests import ALPHA, delong, holm, mcnemar, paired_bootstrap
from trustthepixels.tables import markdown_table, render

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("compare_report.md")  # report.md's text, a Jinja template


Key = tuple[str, str]  # (source, path inside it): how every predictions file names an image


@dataclass
class ModelScores:
    """One model's scores, keyed by image, and its decision rule (each image's threshold: a cross-validation
    file holds each fold's own)."""

    name: str
    logits: dict[Key, float]
    labels: dict[Key, int]
    thresholds: dict[Key, float]

    @classmethod
    def of(cls, name: str, predictions: list[Prediction]) -> ModelScores:
        rows = labelled(predictions)
        return cls(
            name,
            {p.key: p.logit for p in rows},
            {p.key: int(p.label) for p in rows},
            {p.key: p.threshold for p in rows},
        )


def verdict(name_a: str, name_b: str, test: dict[str, float], images: int, corrected: int = 1) -> str:
    """One plain sentence a reader can act on (`corrected`: the number of pairs its p-value was adjusted for)."""
    holm_note = f" (Holm-adjusted for {corrected} pairs)" if corrected > 1 else ""
    shown = f"AUROC {test['difference']:+.3f} [{test['low']:+.3f}, {test['high']:+.3f}], p = {test['p']:.2g}{holm_note}"
    if test["p"] < ALPHA:
        better, worse = (name_a, name_b) if test["difference"] > 0 else (name_b, name_a)
        return f"{better} is better than {worse} on this data ({images} images): {shown}."
    return f"No detectable difference between {name_a} and {name_b} on this data ({images} images): {shown}."


# ------------------------------------------------------------------------------------------------- inputs


def load_predictions(path: Path, name: str | None = None) -> ModelScores:
    """A predictions file, or the run / sweep folder that holds one (oof_predictions.csv first)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in ("oof_predictions.csv", "predictions.csv"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise UserError(f"{path} holds no predictions.csv or oof_predictions.csv")
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a predictions file, a run or sweep folder, or a checkpoint")
    predictions = read_predictions(path)
    if predictions and "set" in predictions[0].context:  # eval.py's file holds several sets: its main one first
        main = predictions[0].context["set"]
        predictions = [p for p in predictions if p.context["set"] == main]
    if not labelled(predictions):
        raise UserError(f"{path}: no scored image with a label (predict.py's files have no labels to compare on)")
    label = name or (path.parent.name if path.parent.name not in ("", ".") else path.stem)
    return ModelScores.of(label, predictions)


def score_checkpoint(path: Path, cfg: DictConfig, name: str | None = None) -> ModelScores:
    """Score a checkpoint on `cfg.data.root` (or its run's test split), at its own decision threshold."""
    from trustthepixels.config import resolve_device
    from trustthepixels.data.loading.workers import resolve_num_workers
    from trustthepixels.detector.checkpoint import load_detector
    from trustthepixels.evaluation.sets import eval_set, min_side, score_set

    detector = load_detector(path)
    device = resolve_device(cfg.device)
    workers = resolve_num_workers(cfg.data.num_workers)
    main = eval_set(cfg, detector)
    threshold = detector.decision(None, False)  # its calibrated threshold; compare.py ranks, it does not abstain
    name = name or f"{detector.model.hparams.backbone} ({path.parent.parent.name})"
    scores = score_set(detector, main, cfg.data.batch_size, workers, device, min_side(cfg, detector))
    return ModelScores.of(name, main.predictions(scores, threshold))


def aligned(models: list[ModelScores]) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """The images every model scored, with their labels, in one order."""
    common = sorted(set.intersection(*(set(m.logits) for m in models)))
    if not common:
        raise UserError("The inputs share no image: compare models scored on the same images")
    for m in models:
        if len(m.logits) != len(common):
            log.warning(
                "%s: %d of its %d images are scored by every model; only those are compared",
                m.name,
                len(common),
                len(m.logits),
            )
    labels = np.array([models[0].labels[k] for k in common])
    for m in models[1:]:
        if any(m.labels[k] != models[0].labels[k] for k in common):
            raise UserError(f"{m.name} and {models[0].name} disagree on some labels: not the same images")
    return common, labels, [np.array([m.logits[k] for k in common]) for m in models]


# --------------------------------------------------------------------------------------------------- report


def compare(cfg: DictConfig) -> dict[str, Any]:
    inputs = [Path(str(p)) for p in cfg.inputs]
    names = list(cfg.names) if cfg.names else [None] * len(inputs)
    models = [
        score_checkpoint(p, cfg, n) if p.suffix == ".ckpt" else load_predictions(p, n)
        for p, n in zip(inputs, names, strict=True)
    ]
    seen: dict[str, int] = {}
    for m in models:  # unique names, as eval.py's sets
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name}-{seen[m.name]}"
    common, labels, logits = aligned(models)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    single = {m.name: core_metrics(labels, z) for m, z in zip(models, logits, strict=True)}
    decisions = [sigmoid(z) > np.array([m.thresholds[k] for k in common]) for m, z in zip(models, logits, strict=True)]
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(models), 2):
        pairs.append(
            {
                "a": a.name,
                "b": b.name,
                "delong": delong(labels, logits[i], logits[j]),
                "bootstrap": paired_bootstrap(labels, logits[i], logits[j], cfg.bootstrap, cfg.seed),
                "mcnemar": mcnemar(labels, decisions[i], decisions[j]),
            }
        )
    # More than one pair: every verdict is judged on Holm-adjusted p-values (DeLong's, and McNemar's).
    for test in ("delong", "mcnemar"):
        adjusted = holm([pair[test]["p"] for pair in pairs]) if len(pairs) > 1 else [pair[test]["p"] for pair in pairs]
        for pair, p in zip(pairs, adjusted, strict=True):
            pair[test]["p_holm"] = p
    for pair in pairs:
        judged = pair["delong"] | {"p": pair["delong"]["p_holm"]}
        pair["sentence"] = verdict(pair["a"], pair["b"], judged, len(labels), corrected=len(pairs))
    figure = _roc_figure(labels, {m.name: z for m, z in zip(models, logits, strict=True)}, single)
    figure.savefig(out / "roc.png", dpi=110)
    writer = SummaryWriter(str(out))
    writer.add_figure("compare/roc", figure)
    writer.close()
    plt.close(figure)
    result = {"images": len(labels), "inputs": [str(p) for p in inputs], "models": single, "pairs": pairs}
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(result))
    for pair in pairs:
        log.info("%s", pair["sentence"])
    log.info("Comparison written to %s", out)
    return result


def _roc_figure(labels: np.ndarray, logits: dict[str, np.ndarray], single: dict[str, dict[str, float]]):
    fig, ax = new_figure((4.8, 4.2), f"ROC on the same {len(labels)} images", **ROC_AXES)
    for name, z in logits.items():
        fpr, tpr, _ = roc_curve(labels, sigmoid(z))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {single[name]['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _markdown(result: dict[str, Any]) -> str:
    """report.md: `compare_report.md` filled in from comparison.json."""
    models = [
        [name, f"{m['auroc']:.3f}", f"{m['acc']:.3f}", f"{m['loss']:.3f}"] for name, m in result["models"].items()
    ]
    several = len(result["pairs"]) > 1
    holm = lambda t: f" (Holm {t['p_holm']:.3g})" if several else ""  # noqa: E731
    header = (
        "A | B | AUROC A - B | DeLong 95% interval | DeLong p | bootstrap 95% interval | bootstrap p "
        "| McNemar: only A right / only B right | McNemar p"
    )
    rows = []
    for pair in result["pairs"]:
        d, b, mc = pair["delong"], pair["bootstrap"], pair["mcnemar"]
        delong = [f"{d['difference']:+.3f}", f"[{d['low']:+.3f}, {d['high']:+.3f}]", f"{d['p']:.3g}{holm(d)}"]
        bootstrap = [f"[{b['low']:+.3f}, {b['high']:+.3f}]", f"{b['p']:.3g}"]
        mcnemar = [f"{mc['only_a_right']} / {mc['only_b_right']}", f"{mc['p']:.3g}{holm(mc)}"]
        rows.append([pair["a"], pair["b"], *delong, *bootstrap, *mcnemar])
    return render(
        TEMPLATE,
        images=result["images"],
        pairs=result["pairs"],
        models="\n".join(markdown_table(["model", "AUROC", "accuracy @ 0.5", "log loss"], models)),
        tests="\n".join(markdown_table(header.split(" | "), rows)),
    )
