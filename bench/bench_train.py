"""Benchmark: a plain PyTorch training loop against the project's Lightning pipeline.

    python bench/bench_train.py [--batches 12] [--threads 2] [--model tf_efficientnet_lite0]
    python bench/bench_train.py --trainer gpu --data ../shared/data/cifake-8000 --batches 100 --precision bf16-mixed

Same model (the shared ImageNet weights), data (../shared/data/real-vs-ai through the project's DataModule,
warm caches), batch size, optimizer, schedule, threads, device, precision and memory layout (the plain loop
uses the pipeline's: the trainer config's precision as torch.autocast, channels_last when the model config
sets it); images per second over the same number of training batches, and the share of step time spent
waiting for data. Run --trials times each, alternating. On a GPU every step is synchronised before the clock
is read, in both.
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
        *([f"trainer={args.trainer}"] if args.trainer else []),
        *([f"data.root={args.data}"] if args.data else []),
        *([f"trainer.precision={args.precision}"] if args.precision else []),
        *([f"data.image_size={args.image_size}"] if args.image_size else []),
    ]
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.shared_dir = str(REPO.parent / "shared")
    return cfg


AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def plain_loop(cfg, batches: int) -> tuple[float, float]:
    seed_everything(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    model = instantiate(cfg.model).to(device)
    dm = instantiate(cfg.data, data_config=model.data_config)
    dm.setup("fit")
    loader = dm.train_dataloader()
    model.train()
    dtype = AUTOCAST.get(str(cfg.trainer.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
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
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        flip = torch.rand(len(images), device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(images)
        loss = loss_fn(logits.float(), labels.float())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        images_seen += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        last = time.perf_counter()
    return images_seen / (last - start), waited / (last - start)


def lightning(cfg) -> tuple[float, float]:
    from trustthepixels.callbacks import EpochSummary
    from trustthepixels.training import train

    rates = {}
    original = EpochSummary.on_train_epoch_end

    def capture(self, trainer, pl_module):
        original(self, trainer, pl_module)
        rates["rate"], rates["wait"] = self.last_rate, self.last_wait_share  # validation excluded

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
    parser.add_argument("--data", default=None, help="an AI/ + Real/ folder (default: ../shared/data/real-vs-ai)")
    parser.add_argument("--trainer", default=None, help="a trainer config, e.g. gpu (default: the experiment's cpu)")
    parser.add_argument("--precision", default=None, help="32-true, bf16-mixed, 16-mixed (default: the config's)")
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cfg = config(args, tmp)
    instantiate(cfg.data, data_config={"input_size": (3, 224, 224), "crop_pct": 0.875}).setup("fit")  # warm caches
    # A discarded warm-up: CUDA's context, its lazily loaded kernels and the allocator's pool are made once per
    # process and would be charged to whichever loop runs first (without it, an H200 timed the first plain loop
    # of 60 batches at a tenth of the pipeline's rate).
    plain_loop(cfg, min(5, args.batches))
    rows = []
    for trial in range(1, args.trials + 1):
        rows.append(("plain PyTorch loop", trial, *plain_loop(cfg, args.batches)))
        rows.append(("Lightning pipeline", trial, *lightning(cfg)))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"{args.model}, batch {cfg.data.batch_size}, {args.batches} batches, {args.threads} threads, "
        f"{cfg.data.num_workers if cfg.data.num_workers is not None else 'auto'} loader workers, {device}, "
        f"precision {cfg.trainer.precision}, channels_last {cfg.model.channels_last}"
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
