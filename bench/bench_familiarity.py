"""Which features should the familiarity score read? Measured on a trained checkpoint, on real sources.

For a checkpoint of a run (its `split.csv` names the training, validation and test images), the pooled feature
blocks of every image are computed once (the detector's own forward pass); then the familiarity score is fitted
for each choice of blocks (each block alone, the classifier's features alone, the early half, all of them) and
scored by how well it tells the run's own test images from each other source's images (AUROC, 1 is perfect,
0.5 is chance). Also the share of the run's own test images it flags (the cutoff keeps 99% of validation).

    python bench/bench_familiarity.py CKPT OTHER_FOLDER [OTHER_FOLDER ...] [--limit 400] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from trustthepixels.data.ingest.scan import scan_dataset
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.settings import DEFAULT_QUANTILE
from trustthepixels.model.familiarity import Familiarity, fit_familiarity


class WithStd(torch.nn.Module):
    """The detector's forward pass, pooling each stage by its channels' means and standard deviations (texture and
    noise level), to measure against the means alone."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward_with_features(self, images):
        backbone = self.model.backbone
        final, stages = backbone.forward_intermediates(self.model._normalise(images))
        pre_logits = backbone.forward_head(final, pre_logits=True)
        pooled = [torch.cat([s.float().mean(dim=(2, 3)), s.float().std(dim=(2, 3))], dim=1) for s in stages]
        return self.model.head(pre_logits).squeeze(-1), [*pooled, pre_logits.float()]

    def parameters(self, recurse: bool = True):
        return self.model.parameters(recurse)


def features(detector, paths: list[Path], pooling: str) -> list[np.ndarray]:
    model = detector.model
    if pooling == "mean+std":
        detector.model = WithStd(model)
    try:
        scores = detector.score_files(paths, batch_size=32, keep_blocks=lambda n: range(n))  # every block
    finally:
        detector.model = model
    assert not scores.errors, list(scores.errors.values())[:3]
    return scores.features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("others", type=Path, nargs="+", help="folders with AI/ and Real/ (or any images)")
    parser.add_argument("--limit", type=int, default=400, help="at most this many images of each other source")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pooling", choices=("mean", "mean+std"), default="mean", help="how each stage is pooled")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = load_detector(args.checkpoint)
    detector.familiarity = None  # the features alone: each choice is fitted here
    parts = read_split_csv(detector.run_dir / "split.csv")
    train = features(detector, [detector.locate(p) for p, _ in parts["train"]], args.pooling)
    labels = np.array([y for _, y in parts["train"]])
    val = features(detector, [detector.locate(p) for p, _ in parts["val"]], args.pooling)
    test = features(detector, [detector.locate(p) for p, _ in parts["test"]], args.pooling)
    others = {}
    for folder in args.others:
        paths = [s.path for s in scan_dataset(folder).samples]
        others[folder.name] = features(
            detector, random.Random(0).sample(paths, min(args.limit, len(paths))), args.pooling
        )
    n = len(train)
    choices = {f"block {b}": [b] for b in range(n)}
    choices |= {
        "last (classifier's)": [n - 1],
        "last stage (before the head)": [n - 2],
        "last two stages": [n - 3, n - 2],
        "early half": list(range(n // 2)),
        "all stages (not the classifier's)": list(range(n - 1)),
        "all": list(range(n)),
    }
    sizes = f"{len(labels)} train / {len(val[0])} val / {len(test[0])} test images"
    print(
        f"{detector.model.hparams.backbone} ({args.pooling} pooling), {sizes}; blocks of {[f.shape[1] for f in train]}"
    )
    header = ["features", *others, "mean", "own test flagged"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, blocks in choices.items():
        state = fit_familiarity(
            train, labels, blocks=blocks
        )  # training statistics; the validation split is the reference
        with torch.no_grad():
            familiarity = Familiarity(state, Familiarity(state).distance([torch.from_numpy(f) for f in val]).numpy())
            own = familiarity([torch.from_numpy(f) for f in test]).numpy()
            aurocs = []
            for other in others.values():
                theirs = familiarity([torch.from_numpy(f) for f in other]).numpy()
                y = np.r_[np.zeros(len(own), int), np.ones(len(theirs), int)]
                aurocs.append(core_metrics(y, -np.r_[own, theirs])["auroc"])
        flagged = float(np.mean(own < 1 - DEFAULT_QUANTILE))
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in aurocs) + f" | {np.mean(aurocs):.3f} | {flagged:.3f} |")


if __name__ == "__main__":
    main()
