"""`report.md`: the numbers of an evaluation, laid out for a reader."""

from __future__ import annotations

from typing import Any

from trustthepixels.metric_registry import ABSTENTION, report_rows
from trustthepixels.metrics.intervals import too_small_to_rank
from trustthepixels.tables import markdown_table, text_table, with_interval

ROWS = report_rows()
ABSTENTION_ROWS = [(m.label, f"abstain/{m.key}", m.fmt) for m in ABSTENTION]


def render_report(result: dict[str, Any], figures: list[str]) -> str:
    sets = result["sets"]
    names = list(sets)
    cal = result["calibration"]
    lines = [
        "# Evaluation",
        "",
        f"- checkpoint: `{result['checkpoint']}`",
        f"- model: `{result['model']}` at {result['input_size']} px; trained on {_sources(result['trained_on'])}",
        f"- threshold on P(AI): **{cal['threshold']:.3f}**"
        + (f" ({cal['threshold_source']})" if cal.get("threshold_source") else ""),
        f"- temperature: **{cal['temperature']:.3f}**"
        + (f" (not fitted: {cal['temperature_note']})" if cal.get("temperature_note") else ""),
        "",
        "## Metrics",
        "",
        *_table(sets, ROWS),
    ]
    if any("abstain/coverage" in sets[n] for n in names):
        lines += [
            "",
            "## Abstention",
            "",
            "The verdict rule of the calibration record: `uncertain` where its prediction set holds both classes, "
            "`unfamiliar` where the image is unlike the calibration images. Confident errors are wrong verdicts "
            "among all images; accuracy on answered counts the `AI` and `Real` verdicts only.",
            "",
            *_table(sets, ABSTENTION_ROWS),
        ]
    skipped = {n: s for n, s in result["skipped"].items() if s}
    if skipped:
        lines += ["", "Unreadable files left out: " + ", ".join(f"{n}: {len(s)}" for n, s in skipped.items())]
    if result.get("robustness"):
        lines += [
            "",
            f"## Robustness ({result['robustness_set']}; the same perturbation applied to both classes)",
            "",
        ]
        keys = ("auroc", "acc", "acc_at_threshold", "balanced_acc_at_threshold")
        header = "perturbation|strength|AUROC|accuracy @ 0.5|accuracy @ threshold|balanced accuracy @ threshold"
        rows = ([r["perturbation"], r["strength"], *(with_interval(r, k) for k in keys)] for r in result["robustness"])
        lines += markdown_table(header.split("|"), rows)
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}]({f})" for f in figures]
    lines += [
        "",
        "Brackets hold 95% intervals: exact binomial (Clopper-Pearson) for accuracies, a stratified bootstrap over "
        f"images ({result['bootstrap_resamples']} resamples) for the rest. Two models whose intervals overlap may not "
        "differ at all: `python compare.py` tests the difference on the same images.",
    ]
    for name, metrics in sets.items():
        warning = too_small_to_rank(
            int(metrics["images"]),
            metrics.get("auroc_lo", 0.0),
            metrics.get("auroc_hi", 0.0),
            bool(metrics.get("auroc_separated")),
        )
        if warning:
            lines += ["", f"**{name}**: {warning}"]
    return "\n".join([*lines, ""])


def terminal_table(result: dict[str, Any], out_dir: str) -> str:
    """What eval.py prints: one row per metric, one column per set, each value with its 95% interval; the
    abstention figures when the rule abstains, one line of robustness AUROCs, and where the rest is."""
    sets = result["sets"]
    names = list(sets)
    rows = list(ROWS)
    if any("abstain/coverage" in sets[n] for n in names):
        rows += list(ABSTENTION_ROWS)
    cal = result["calibration"]
    lines = [
        f"Evaluation of {result['model']} at threshold {cal['threshold']:.3f}, temperature {cal['temperature']:.3f}"
        " (95% intervals in brackets)",
        *text_table(
            [["", *names], *([label, *(with_interval(sets[n], key, fmt) for n in names)] for label, key, fmt in rows)]
        ),
    ]
    if result.get("robustness"):
        shifted = [r for r in result["robustness"] if r["perturbation"] != "none"]
        lines.append(
            f"AUROC under perturbation ({result['robustness_set']}): "
            + ", ".join(f"{r['perturbation']} {r['strength']} {r['auroc']:.3f}" for r in shifted)
        )
    skipped = {n: len(s) for n, s in result["skipped"].items() if s}
    if skipped:
        lines.append("Unreadable files left out: " + ", ".join(f"{n}: {k}" for n, k in skipped.items()))
    lines.append(f"Written to {out_dir}: metrics.json, report.md, predictions.csv, figures")
    return "\n".join(lines)


def _table(sets: dict[str, dict[str, Any]], rows) -> list[str]:
    """One row per (label, key, format), one column per set, each value with its interval."""
    return markdown_table(
        ["", *sets], ([label, *(with_interval(m, key, fmt) for m in sets.values())] for label, key, fmt in rows)
    )


def _sources(trained_on: str | dict | None) -> str:
    if isinstance(trained_on, dict):
        return ", ".join(f"{name} (`{folder}`)" for name, folder in trained_on.items())
    return f"`{trained_on}`"
