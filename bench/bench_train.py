"""Benchmark: a plain PyTorch training loop against the project's Lightning pipeline.

    python bench/bench_train.py [--batches 12] [--threads 2] [--model tf_efficientnet_lite0]

Same model (the shared ImageNet weights), data (../shared/data/real-vs-ai through the project's DataModule,
warm caches), batch size, optimizer, schedule and threads; images per second over the same number of
training batches, and the share of step time spent waiting for data. Run --trials times each, alternating.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]


def config(args, tmp: Path):
    overrides = [
        "experiment=real_vs_ai_lite0",
        f"model={args.model}",
        f"+trainer.limit_train_batches={args.batches}",
        "+trainer.limit_val_batches=0",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
        "callbacks.progress_bar=null",
        "callbacks.lr_monitor=null",
        f"paths.output_dir={tmp}",
        f"paths.data_dir={REPO / 'data'}",
    ]
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.shared_dir = str(REPO.parent / "shared")
    return cfg


def plain_loop(cfg, batches: int) -> tuple[float, float]:
    seed_everything(cfg.seed)
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data, data_config=model.data_config)
    dm.setup("fit")
    loader = dm.train_dataloader()
    model.train()
    optimizer = instantiate(model.hparams.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    scheduler = instantiate(model.hparams.scheduler)(optimizer=optimizer, total_steps=batches)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    waited = images_seen = 0
    start = last = time.perf_counter()
    for i, (images, labels, _) in enumerate(loader):
        if i == batches:
            break
        if i:
            waited += time.perf_counter() - last
        flip = torch.rand(len(images)) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        loss = loss_fn(model(images), labels.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        images_seen += len(labels)
        last = time.perf_counter()
    return images_seen / (last - start), waited / (last - start)


def lightning(cfg) -> tuple[float, float]:
    from trustthepixels.callbacks import EpochSummary
    from trustthepixels.training import train

    rates = {}
    original = EpochSummary.on_train_epoch_end

    def capture(self, trainer, pl_module):
        original(self, trainer, pl_module)
        rates["rate"] = self._epoch_images / (self._last_end - self._epoch_start)  # validation excluded
        rates["wait"] = self._waited / self._stepped if self._stepped else 0.0

    EpochSummary.on_train_epoch_end = capture
    try:
        train(cfg)
    finally:
        EpochSummary.on_train_epoch_end = original
    return rates["rate"], rates["wait"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cfg = config(args, tmp)
    instantiate(cfg.data, data_config={"input_size": (3, 224, 224), "crop_pct": 0.875}).setup("fit")  # warm caches
    rows = []
    for trial in range(1, args.trials + 1):
        rows.append(("plain PyTorch loop", trial, *plain_loop(cfg, args.batches)))
        rows.append(("Lightning pipeline", trial, *lightning(cfg)))
    print(
        f"{args.model}, batch {cfg.data.batch_size}, {args.batches} batches, {args.threads} threads, "
        f"{cfg.data.num_workers if cfg.data.num_workers is not None else 'auto'} loader workers"
    )
    print(f"{'':22}{'trial':>6}{'images/s':>10}{'data wait':>11}")
    for name, trial, rate, wait in rows:
        print(f"{name:22}{trial:6d}{rate:10.1f}{100 * wait:10.1f}%")
    best = {name: max(r for n, _, r, _ in rows if n == name) for name, *_ in rows}
    print(
        f"Lightning / plain, best of {args.trials} each: {best['Lightning pipeline'] / best['plain PyTorch loop']:.3f}"
    )


if __name__ == "__main__":
    main()
