"""Every metric the project reports, declared once: its name, which way is better, how its 95% interval is computed
and how it is printed. Checkpointing, early stopping, Optuna and sweep summaries read the direction; `intervals`
the interval; report.md, eval.py's table, the model card and a cross-validation's pooled table the rest.

A new metric is one entry here plus its formula (`metrics.core`, and `metrics.intervals.resample_metrics` when it
is bootstrapped: the tests hold the two equal)."""

from __future__ import annotations

from dataclasses import dataclass

AT_THRESHOLD = "_at_threshold"  # a decision metric at the run's threshold instead of 0.5


@dataclass(frozen=True)
class Metric:
    key: str  # the name in metrics.json and the logs (val/<key>, test/<key>)
    label: str  # the row's name in tables (a decision metric's gets "@ 0.5" or "@ threshold")
    interval: str | None = "bootstrap"  # "binomial" (exact Clopper-Pearson), "bootstrap" (stratified) or None
    counts: int | None = None  # a binomial metric's images: the class it counts (None: all of them)
    decision: bool = False  # decided at a threshold: reported at 0.5 and at the threshold (key + AT_THRESHOLD)
    lower_is_better: bool = False
    fmt: str = "{:.3f}"
    summary: bool = True  # in the model card's table and the pooled out-of-fold table
    temperature_scaled: bool = False  # the metric it names (minus "_temperature_scaled") on logits / temperature

    def at(self, threshold: bool) -> tuple[str, str]:
        """(key, label) of a decision metric at the threshold or at 0.5."""
        if threshold:
            return self.key + AT_THRESHOLD, f"{self.label} @ threshold"
        return self.key, f"{self.label} @ 0.5" if self.decision else self.label


# The order of report.md's rows.
METRICS = (
    Metric("images", "images", interval=None, fmt="{:.0f}", summary=False),
    Metric("auroc", "AUROC"),
    Metric("loss", "log loss", lower_is_better=True),
    Metric("ap", "average precision"),
    Metric("acc", "accuracy", "binomial", decision=True),
    Metric("balanced_acc", "balanced accuracy", decision=True),
    Metric("f1", "F1", decision=True),
    Metric("acc_real", "accuracy on real", "binomial", counts=0, decision=True),
    Metric("acc_ai", "accuracy on AI", "binomial", counts=1, decision=True),
    Metric("ece", "ECE", lower_is_better=True),
    Metric(
        "ece_temperature_scaled",
        "ECE after temperature scaling",
        lower_is_better=True,
        summary=False,
        temperature_scaled=True,
    ),
)
# The verdict rule's figures (metrics.json: abstain/<key>), where it abstains.
ABSTENTION = (
    Metric("coverage", "coverage (share answered)", "binomial"),
    Metric("accuracy_answered", "accuracy on answered", "binomial"),
    Metric("confident_errors", "confident errors", "binomial", lower_is_better=True),
    Metric("unfamiliar", "unfamiliar", "binomial", summary=False),
    Metric("aurc", "AURC (risk-coverage)", None, lower_is_better=True, fmt="{:.4f}", summary=False),
)
BY_KEY = {m.key: m for m in (*METRICS, *ABSTENTION)}
BINOMIAL = {m.key: m.counts for m in METRICS if m.interval == "binomial"}
BOOTSTRAPPED = tuple(m.key for m in METRICS if m.interval == "bootstrap" and not m.temperature_scaled)
BOOTSTRAPPED_DECISIONS = tuple(m.key for m in METRICS if m.interval == "bootstrap" and m.decision)
SUMMARY = tuple(m.key for m in METRICS if m.summary)


def report_rows() -> list[tuple[str, str, str]]:
    """(label, key, format) of every metric in registry order, each decision metric at 0.5 then at the threshold."""
    rows = []
    for m in METRICS:
        rows += [(label, key, m.fmt) for key, label in [m.at(False), *([m.at(True)] if m.decision else [])]]
    return rows


def metric_name(metric: str) -> str:
    """The metric itself in a logged name: val/auroc -> auroc, val/loss/cifake (one source's) -> loss."""
    parts = metric.split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def metric_mode(metric: str) -> str:
    """ "min" or "max" for a logged name such as val/loss, val/auroc or val/loss/<source>: the checkpoint, early
    stopping, the sweep summary and the Optuna direction all follow it. A name the registry does not hold
    (train/loss_epoch) takes the direction of the metric it starts with."""
    name = metric_name(metric).removesuffix(AT_THRESHOLD)
    found = BY_KEY.get(name) or next((m for m in BY_KEY.values() if name.startswith(m.key)), None)
    return "min" if found is not None and found.lower_is_better else "max"


def metric_direction(metric: str) -> str:
    return {"min": "minimize", "max": "maximize"}[metric_mode(metric)]


def metric_slug(metric: str) -> str:
    """The name a checkpoint file carries its score under: val/auroc -> auroc, val/loss/cifake -> loss_cifake."""
    return "_".join(metric.split("/")[1:]) or metric
