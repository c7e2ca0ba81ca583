"""Training speed, the model alone against the whole pipeline, against timm's own benchmark: one run, one device.

    python bench/bench_gpu.py --jpeg resnet50 --decode           # on a GPU: the four models, the settings grid
    python bench/bench_gpu.py --models resnet50 --batches 256 --precisions bf16-mixed --compile off on
    python bench/bench_gpu.py --smoke                            # on a CPU: every path, tiny settings (CI runs it)

For each model, precision (32-true, which is TF32 matmuls on a GPU, or bf16-mixed), memory layout (channels_last
on and off), batch size and `model.compile`:

  (a) the model alone: uint8 batches already on the device, the module's own training step (flips and
      normalisation on the device, forward, BCE loss, backward, AdamW step), every step synchronised;

and, at each model's fastest setting of (a) (or at every setting, --pipeline all):

  (b) the whole pipeline: `train.py`'s DataModule, Lightning loop, validation, default callbacks and logger on a
      real folder, from the uint8 pixel cache and, for the models named by --jpeg, from the JPEG files (decoded by
      the loader workers); the second epoch's images/s, as its per-epoch summary line gives them;
  (c) timm's own `benchmark.py --bench train` (../shared/peers/timm) for the same model, batch, precision and layout.

It prints (b)/(a), the share of (a) the pipeline keeps, and timm's figure beside them. With --decode it also
measures JPEG decoding alone: the DataModule's workers (decode, random resized crop, pinned batches copied to the
device) against nvJPEG on the device (`torchvision.io.decode_jpeg(device="cuda")` and a resize there). Warm-up
steps are run and discarded first in each measurement (CUDA context, kernel loading, cuDNN's autotuner, the
allocator, torch.compile).
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


def model_alone(
    model_name, image_size, batch, precision, channels_last, compile_model, steps, warmup, device, cudnn_benchmark=True
) -> tuple[float, float]:
    """Images/s of the module's training step on uint8 batches already on the device, and the peak memory (GiB)."""
    from trustthepixels.model.module import DetectorModule

    torch.backends.cudnn.benchmark = cudnn_benchmark  # train.py's trainer.benchmark
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

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
    rate = steps * batch / (time.perf_counter() - start)
    return rate, (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"))


def pipeline(
    args, model_name, batch, precision, channels_last, compile_model, cache: bool, device
) -> tuple[float, float]:
    """Images/s of `train.py`'s loop (DataModule, Lightning, the project's default callbacks) over the second
    epoch of --steps batches (the first warms up), as its per-epoch summary measures them (validation excluded),
    and that epoch's wait for its first batch (s)."""
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
        f"trainer.benchmark={'true' if args.cudnn_benchmark == 'on' else 'false'}",
        "trainer.max_epochs=2",  # epoch 0 warms up (workers, CUDA, cuDNN, compile); epoch 1 is measured
        f"+trainer.limit_train_batches={args.steps}",  # a whole epoch when --steps is at least its length
        "+trainer.limit_test_batches=1",  # train() tests the model at the end: not what is measured
        "abstain.enabled=false",  # (validation, checkpoints and the logger run as in train.py, between epochs)
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
        rates.append((self.last_rate, self.last_first_wait))

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


def decode_rates(args, device, workers: list[int]) -> list[tuple[str, float]]:
    """Images/s of JPEG decoding alone, at the pipeline's batch and crop: the DataModule's loader workers
    (decode, random resized crop, pinned uint8 batches copied to the device) against nvJPEG on the device."""
    from torchvision.io import decode_jpeg, read_file

    from trustthepixels.data.loading.datamodule import ImageFolderDataModule

    batch, rates = max(args.batches), []
    data_config = {"input_size": (3, args.image_size, args.image_size), "crop_pct": 0.875, "interpolation": "bilinear"}
    files = None
    for count in workers:
        dm = ImageFolderDataModule(args.data, data_config, batch_size=batch, num_workers=count, cache=False,
                                   cache_dir=args.cache_dir, near_duplicates=None)  # fmt: skip
        dm.setup("fit")
        files = [s.path for s in dm.datasets["train"].samples]
        loader = iter(dm.train_dataloader())
        next(loader)  # workers started
        seen, start = 0, time.perf_counter()
        for images, *_ in itertools.islice(loader, args.steps):
            images.to(device, non_blocking=True)
            seen += len(images)
        synchronize(device)
        rates.append((f"loader, {count} workers", seen / (time.perf_counter() - start)))
        del loader
    if device.type != "cuda" or not files:
        return rates
    size = [args.image_size, args.image_size]

    def on_device(chunk) -> None:
        decoded = decode_jpeg([read_file(str(f)) for f in chunk], device=device)
        for image in decoded:  # the random resized crop's resampling, one image at a time as the workers do
            torch.nn.functional.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)

    chunks = [files[i : i + batch] for i in range(0, len(files) - batch + 1, batch)]
    on_device(chunks[0])
    synchronize(device)
    seen, start = 0, time.perf_counter()
    for chunk in itertools.islice(itertools.cycle(chunks), args.steps):
        on_device(chunk)
        seen += len(chunk)
    synchronize(device)
    rates.append(("nvJPEG on the device (one process)", seen / (time.perf_counter() - start)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256], help="batch sizes")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--compile", nargs="+", choices=("on", "off"), default=["off"])
    parser.add_argument("--cudnn-benchmark", choices=("on", "off"), default="on", help="trainer.benchmark")
    parser.add_argument("--steps", type=int, default=30, help="measured training steps per figure")
    parser.add_argument("--warmup", type=int, default=5, help="discarded steps before the model-alone clock")
    where = "each model's fastest model-alone setting (best), every setting (all), or none"
    parser.add_argument("--pipeline", choices=("best", "all", "none"), default="best", help=f"pipeline at {where}")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "diffusiondb-coco", help="AI/ + Real/ folder")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "cache")
    jpeg = "also the pipeline from JPEG files (no pixel cache), for these models (none named: all)"
    parser.add_argument("--jpeg", nargs="*", default=None, metavar="MODEL", help=jpeg)
    parser.add_argument("--decode", action="store_true", help="JPEG decoding alone: loader workers against nvJPEG")
    parser.add_argument("--decode-workers", nargs="+", type=int, default=None, help="(default: the project's rule)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the project's rule)")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's benchmark.py")
    parser.add_argument("--timm-models", nargs="+", default=None, help="timm's benchmark.py for these only")
    parser.add_argument("--timm-timeout", type=int, default=600)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on whatever device: every path, quickly")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.image_size, args.batches, args.steps, args.warmup = ["resnet18"], 64, [4], 2, 1
        args.precisions, args.channels_last, args.jpeg, args.decode = ["32-true"], ["on"], [], True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")  # 32-true is TF32 on a GPU, as train.py sets it
    print(f"{device_name(device)}, {args.image_size} px, {args.steps} measured steps, data {args.data.name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")  # fmt: skip

    alone, peak = {}, {}  # (model, precision, layout, batch, compile) -> images/s, peak GiB
    for setting in itertools.product(args.models, args.precisions, args.channels_last, args.batches, args.compile):
        model_name, precision, layout, batch, compiled = setting
        alone[setting], peak[setting] = model_alone(
            model_name, args.image_size, batch, precision, layout == "on", compiled == "on", args.steps, args.warmup,
            device, args.cudnn_benchmark == "on",
        )  # fmt: skip
        print("model alone:", " | ".join(map(str, setting)), f"| {alone[setting]:.4g} img/s", flush=True)
    print(
        "\n| model | precision | channels_last | batch | compile | alone img/s | share of the model's best | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    best = {m: max((r, s) for s, r in alone.items() if s[0] == m)[1] for m in args.models}
    for setting, rate in alone.items():
        share = rate / alone[best[setting[0]]]
        print("| " + " | ".join(map(str, setting)) + f" | {rate:.4g} | {share:.2f} | {peak[setting]:.1f} |")

    jpeg_models = args.models if args.jpeg == [] else (args.jpeg or [])
    chosen = {"best": list(best.values()), "all": list(alone), "none": []}[args.pipeline]
    header = ["model", "precision", "channels_last", "batch", "compile", "alone img/s", "pipeline (cache)", "ratio"]
    header += ["first batch s"]
    header += ["pipeline (JPEG)", "ratio", "first batch s"] if jpeg_models else []
    header += [] if args.no_timm else ["timm benchmark.py", "alone / timm"]
    rows = []
    for setting in chosen:
        model_name, precision, layout, batch, compiled = setting
        channels_last, compile_model = layout == "on", compiled == "on"
        rate = alone[setting]
        cached, first = pipeline(args, model_name, batch, precision, channels_last, compile_model, True, device)
        row = [*setting, f"{rate:.4g}", f"{cached:.4g}", f"{cached / rate:.2f}", f"{first:.2f}"]
        if jpeg_models:
            if model_name in jpeg_models:
                jpeg, first = pipeline(args, model_name, batch, precision, channels_last, compile_model, False, device)
                row += [f"{jpeg:.4g}", f"{jpeg / rate:.2f}", f"{first:.2f}"]
            else:
                row += ["-", "-", "-"]
        if not args.no_timm and (args.timm_models is None or model_name in args.timm_models):
            peer = timm_benchmark(model_name, args.image_size, batch, precision, channels_last, compile_model, args,
                                  device)  # fmt: skip
            row += ["-", "-"] if peer is None else [f"{peer:.4g}", f"{rate / peer:.2f}"]
        elif not args.no_timm:
            row += ["-", "-"]
        rows.append(row)
        print("pipeline:", " | ".join(str(c) for c in row), flush=True)
    if rows:
        print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(str(c) for c in row) + " |")
    if args.decode:
        from trustthepixels.data.loading.workers import resolve_num_workers

        print(f"\nJPEG decoding alone, batch {max(args.batches)}, {args.image_size} px:")
        for name, rate in decode_rates(args, device, args.decode_workers or [resolve_num_workers(None)]):
            print(f"  {name:40} {rate:8.1f} img/s")


if __name__ == "__main__":
    main()
