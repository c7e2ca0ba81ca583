"""Training speed, the model alone against the whole pipeline, against timm's own benchmark: one run, one device.

    python bench/bench_gpu.py                                    # on a GPU: the four models, the settings grid
    python bench/bench_gpu.py --models resnet50 --batches 256 --precisions bf16-mixed --compile off on
    python bench/bench_gpu.py --smoke                            # on a CPU: every path, tiny settings (CI runs it)

For each model, precision (32-true, which is TF32 matmuls on a GPU, or bf16-mixed), memory layout (channels_last
on and off), batch size and `model.compile`, training images/s of:

  (a) the model alone: uint8 batches already on the device, the module's own training step (flips and
      normalisation on the device, forward, BCE loss, backward, AdamW step), every step synchronised;
  (b) the whole pipeline: `train.py`'s DataModule and Lightning loop on a real folder, from the uint8 pixel cache
      and, with --jpeg, from the JPEG files (decoded by the loader workers), over the same number of batches;
  (c) timm's own `benchmark.py --bench train` (../shared/peers/timm) for the same model, batch, precision and layout.

It prints (b)/(a), the share of (a) the pipeline keeps, and timm's figure beside them. Warm-up steps are run and
discarded first in each measurement (CUDA context, kernel loading, the allocator, torch.compile).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = ("resnet50", "convnext_tiny", "tf_efficientnet_lite0", "vit_small_patch16_224")
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_alone(model_name, image_size, batch, precision, channels_last, compile_model, steps, warmup, device) -> float:
    """Images/s of the module's training step on uint8 batches already on the device."""
    from trustthepixels.model.module import DetectorModule

    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 0.05}
    module = DetectorModule(model_name, optimizer, pretrained=False, channels_last=channels_last, compile=compile_model)
    module.configure_model()  # torch.compile, as Lightning calls it
    module = module.to(device).train()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    dtype = AUTOCAST.get(precision)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = module(module.random_flip(images))
        loss = module.loss_fn(logits.float(), labels.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def pipeline(args, model_name, batch, precision, channels_last, compile_model, cache: bool, device) -> float:
    """Images/s of `train.py`'s loop (DataModule, Lightning, the project's callbacks) over --steps batches after
    --warmup discarded ones, as its per-epoch summary measures them (validation excluded)."""
    from trustthepixels.callbacks import EpochSummary
    from trustthepixels.training import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    overrides = [
        f"model={model_name}" if (REPO / "configs" / "model" / f"{model_name}.yaml").is_file() else "model=resnet18",
        f"model.backbone={model_name}",
        "model.pretrained=false",
        "model.weights=null",
        f"model.channels_last={str(channels_last).lower()}",
        f"model.compile={str(compile_model).lower()}",
        f"data.root={args.data}",
        f"data.batch_size={batch}",
        f"data.image_size={args.image_size}",
        f"data.cache={str(cache).lower()}",
        f"data.cache_dir={args.cache_dir}",
        f"trainer.precision={precision}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.max_epochs=2",  # epoch 0 warms up (workers, CUDA, compile); epoch 1 is measured
        f"+trainer.limit_train_batches={args.steps}",
        "+trainer.limit_val_batches=0",
        "+trainer.limit_test_batches=1",  # train() tests the model at the end: not what is measured
        "logger=none",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
        "callbacks.progress_bar=null",
        "callbacks.lr_monitor=null",
        "abstain.enabled=false",
        f"paths.output_dir={tmp}",
        *([f"data.num_workers={args.workers}"] if args.workers is not None else []),
    ]
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.shared_dir = str(SHARED)
    rates = []
    original = EpochSummary.on_train_epoch_end

    def capture(self, trainer, pl_module):
        original(self, trainer, pl_module)
        rates.append(self.last_rate)

    EpochSummary.on_train_epoch_end = capture
    try:
        train(cfg)
    finally:
        EpochSummary.on_train_epoch_end = original
    return rates[-1]


def timm_benchmark(
    model_name, image_size, batch, precision, channels_last, compile_model, args, device
) -> float | None:
    """timm's own `benchmark.py --bench train` figure (train_samples_per_sec), or None when it cannot run."""
    script = SHARED / "peers" / "timm" / "benchmark.py"
    if not script.is_file():
        return None
    command = [
        sys.executable, str(script), "--bench", "train", "--model", model_name, "--batch-size", str(batch),
        "--img-size", str(image_size), "--num-classes", "1", "--device", device.type,
        "--num-warm-iter", str(args.warmup), "--num-bench-iter", str(max(5, args.steps)), "--opt", "adamw",
        *(["--amp", "--amp-dtype", "bfloat16"] if precision == "bf16-mixed" else ["--precision", "float32"]),
        *(["--channels-last"] if channels_last else []), *(["--torchcompile"] if compile_model else []),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timm_timeout)
    found = re.search(r"--result\s*(\{.*\})", result.stdout, flags=re.DOTALL)
    if result.returncode != 0 or not found:
        print(f"  timm benchmark.py failed for {model_name}: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return float(json.loads(found.group(1))["train_samples_per_sec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256], help="batch sizes")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--compile", nargs="+", choices=("on", "off"), default=["off"])
    parser.add_argument("--steps", type=int, default=30, help="measured training steps per figure")
    parser.add_argument("--warmup", type=int, default=5, help="discarded steps before the model-alone clock")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "diffusiondb-coco", help="AI/ + Real/ folder")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "cache")
    parser.add_argument("--jpeg", action="store_true", help="also the pipeline from JPEG files (no pixel cache)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the project's rule)")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's benchmark.py")
    parser.add_argument("--timm-timeout", type=int, default=600)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on whatever device: every path, quickly")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.image_size, args.batches, args.steps, args.warmup = ["resnet18"], 64, [4], 2, 1
        args.precisions, args.channels_last, args.jpeg = ["32-true"], ["on"], True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")  # 32-true is TF32 on a GPU, as train.py sets it
    grid = list(itertools.product(args.models, args.precisions, args.channels_last, args.batches, args.compile))
    print(f"{device_name(device)}, {args.image_size} px, {args.steps} measured steps, data {args.data.name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")  # fmt: skip
    header = ["model", "precision", "channels_last", "batch", "compile", "alone img/s", "pipeline (cache)", "ratio"]
    header += ["pipeline (JPEG)", "ratio"] if args.jpeg else []
    header += [] if args.no_timm else ["timm benchmark.py", "alone / timm"]
    rows = []
    for model_name, precision, layout, batch, compiled in grid:
        channels_last, compile_model = layout == "on", compiled == "on"
        setting = (model_name, args.image_size, batch, precision, channels_last, compile_model)
        alone = model_alone(*setting, args.steps, args.warmup, device)
        cached = pipeline(args, model_name, batch, precision, channels_last, compile_model, True, device)
        row = [model_name, precision, layout, batch, compiled, f"{alone:.4g}", f"{cached:.4g}", f"{cached / alone:.2f}"]
        if args.jpeg:
            jpeg = pipeline(args, model_name, batch, precision, channels_last, compile_model, False, device)
            row += [f"{jpeg:.4g}", f"{jpeg / alone:.2f}"]
        if not args.no_timm:
            peer = timm_benchmark(*setting, args, device)
            row += ["-", "-"] if peer is None else [f"{peer:.4g}", f"{alone / peer:.2f}"]
        rows.append(row)
        print(" | ".join(str(c) for c in row), flush=True)
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
