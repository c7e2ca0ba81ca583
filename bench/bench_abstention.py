"""What each familiarity cutoff costs and buys, on a finished benchmark sweep (no model is run again).

Every row of `python benchmark.py ...` wrote every cell's images with P(AI) and familiarity
(`benchmark_predictions.csv`); with the row's checkpoint (its threshold and prediction sets), the verdicts at any
`abstain.familiar_quantile` follow exactly. For each quantile: mean in-source coverage and accuracy on answered
images (over the rows' in-source cells), and the pooled out-of-source confident-error rate and coverage.

    python bench/bench_abstention.py outputs/benchmark/multiruns/<sweep> [--quantiles 0.99 0.95 0.9 0.8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.predictions import read_predictions
from trustthepixels.metrics.selective import abstention_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.99, 0.95, 0.9, 0.8])
    args = parser.parse_args()
    rows = []
    for row_file in sorted(args.sweep.glob("*/benchmark_row.json")):
        row = json.loads(row_file.read_text())
        detector = load_detector(row["checkpoint"])
        rows.append((row, detector, read_predictions(row_file.parent / "benchmark_predictions.csv")))
    print(f"{args.sweep.name}: {len(rows)} rows ({', '.join(r['train_on'] for r, _, _ in rows)})")
    header = ["familiar_quantile", "in-source coverage", "in-source accuracy on answered", "out-of-source coverage",
              "out-of-source confident errors (pooled)", "out-of-source unfamiliar"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for quantile in args.quantiles:
        inside, outside = [], {"labels": [], "verdicts": []}
        for row, detector, predictions in rows:
            # The record's rule with another familiarity cutoff (the rank against its calibration images).
            rule = dataclasses.replace(detector.decision(None, True), familiar_min=1 - quantile)
            for name, cell in row["cells"].items():
                chosen = [p for p in predictions if p.context["tested_on"] == name and p.scored]
                labels = np.array([p.label for p in chosen])
                verdicts = rule.verdicts(np.array([p.p_ai for p in chosen]), np.array([p.familiarity for p in chosen]))
                if cell["in_source"]:
                    inside.append(abstention_metrics(labels, verdicts))
                else:
                    outside["labels"].append(labels)
                    outside["verdicts"].append(verdicts)
        pooled = abstention_metrics(np.concatenate(outside["labels"]), np.concatenate(outside["verdicts"]))
        unfamiliar = float(np.mean(np.concatenate(outside["verdicts"]) == "unfamiliar"))
        print(f"| {quantile:g} | {np.mean([c['coverage'] for c in inside]):.2f} | "
              f"{np.nanmean([c['accuracy_answered'] for c in inside]):.2f} | {pooled['coverage']:.2f} | "
              f"{pooled['confident_errors']:.3f} | {unfamiliar:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
