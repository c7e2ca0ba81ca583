"""`report.md`: the numbers of an evaluation, laid out for a reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustthepixels.metric_registry import ABSTENTION, report_rows
from trustthepixels.metrics.intervals import too_small_to_rank
from trustthepixels.tables import markdown_table, render, text_table, with_interval

ROWS = report_rows()
TEMPLATE = Path(__file__).with_name("eval_report.md")  # report.md's text, a Jinja template
ABSTENTION_ROWS = [(m.label, f"abstain/{m.key}", m.fmt) for m in ABSTENTION]


def render_report(result: dict[str, Any], figures: list[str]) -> str:
    """report.md: `eval_report.md` filled in from metrics.json and the figures' file names."""
    sets = result["sets"]
    robustness = ""
    if result.get("robustness"):
        keys = ("auroc", "acc", "acc_at_threshold", "balanced_acc_at_threshold")
        header = "perturbation|strength|AUROC|accuracy @ 0.5|accuracy @ threshold|balanced accuracy @ threshold"
        rows = ([r["perturbation"], r["strength"], *(with_interval(r, k) for k in keys)] for r in result["robustness"])
        robustness = "\n".join(markdown_table(header.split("|"), rows))
    warnings = []
    for name, m in sets.items():
        low, high, separated = m.get("auroc_lo", 0.0), m.get("auroc_hi", 0.0), bool(m.get("auroc_separated"))
        if warning := too_small_to_rank(int(m["images"]), low, high, separated):
            warnings.append(f"**{name}**: {warning}")
    abstains = any("abstain/coverage" in m for m in sets.values())
    return render(
        TEMPLATE,
        **{k: result[k] for k in ("checkpoint", "model", "input_size", "robustness_set", "bootstrap_resamples")},
        trained_on=_sources(result["trained_on"]),
        cal=result["calibration"],
        metrics="\n".join(_table(sets, ROWS)),
        abstention="\n".join(_table(sets, ABSTENTION_ROWS)) if abstains else "",
        skipped=", ".join(f"{n}: {len(s)}" for n, s in result["skipped"].items() if s),
        robustness=robustness,
        figures=figures,
        warnings=warnings,
    )


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
