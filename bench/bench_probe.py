"""Benchmark: one fine-tuning epoch against one linear-probe trial on cached backbone features.

    python bench/bench_probe.py [--model tf_efficientnet_lite0] [--probe-epochs 30]

Both are whole `train()` calls on ../shared/data/real-vs-ai (634 train, 80 val, 80 test images) with the
shared ImageNet weights and warm pixel caches: what a sweep job costs. The probe's features are computed
once beforehand (timed separately); every later trial, of any head hyperparameters, reuses them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from trustthepixels.training import train

REPO = Path(__file__).resolve().parents[1]


def timed(overrides: list[str], tmp: Path) -> tuple[float, dict]:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / f"run-{time.monotonic_ns()}")
        cfg.paths.data_dir = str(REPO / "data")
        cfg.paths.shared_dir = str(REPO.parent / "shared")
    start = time.perf_counter()
    metrics = train(cfg)
    return time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    common = ["experiment=real_vs_ai_lite0", f"model={args.model}", "logger=none", "callbacks.progress_bar=null"]
    probe = [
        *common,
        "model.freeze_backbone=true",
        "data.feature_cache=true",
        "model.optimizer.lr=1e-3",
        f"trainer.max_epochs={args.probe_epochs}",
        "callbacks.early_stopping=null",
    ]
    finetune_s, finetune = timed([*common, "trainer.max_epochs=1"], tmp)
    features_s, _ = timed([*probe, "trainer.max_epochs=1"], tmp)  # computes and caches the features
    probe_s, probed = timed(probe, tmp)
    print(f"{args.model} on real-vs-ai, {args.threads} threads; whole train() calls (setup, fit, val, test)")
    print(f"{'':52}{'seconds':>9}{'val AUROC':>11}")
    print(f"{'fine-tuning, 1 epoch':52}{finetune_s:9.1f}{finetune['val/auroc']:11.3f}")
    print(f"{'linear probe, first run (features computed)':52}{features_s:9.1f}")
    trial = f"linear probe trial, {args.probe_epochs} epochs on cached features"
    print(f"{trial:52}{probe_s:9.1f}{probed['val/auroc']:11.3f}")
    print(f"probe trial / fine-tuning epoch: {probe_s / finetune_s:.2f}")


if __name__ == "__main__":
    main()
