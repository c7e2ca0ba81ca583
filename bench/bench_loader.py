"""Benchmark: torchvision ImageFolder + PIL + the usual transforms against the project's DataModule.

    python bench/bench_loader.py [--images 300] [--batches 0]

One process, one thread, no worker processes: images per second per core, the figure that scales with
workers. Both produce normalised float batches at 224 px (the project's on-device normalisation is timed
here on the CPU). The project is timed cold (first run: fingerprints and pixel cache built) and warm (a new
run reading the caches), on ../shared/data/real-vs-ai (512 px JPEGs) and on the same images enlarged to
2048 px on the long side (written to a temporary folder).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

from trustthepixels.data.loading.datamodule import ImageFolderDataModule

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-vs-ai"
CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}


def rate(loader, normalise=None) -> float:
    n, start = 0, time.perf_counter()
    for images, *_ in loader:
        if normalise is not None:
            images = normalise(images)
        n += len(images)
    return n / (time.perf_counter() - start)


def baseline(root: Path) -> float:
    transform = T.Compose(
        [
            T.RandomResizedCrop(224, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CONFIG["mean"], CONFIG["std"]),
        ]
    )
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(root, transform=transform), batch_size=32, shuffle=True)
    return rate(loader)


def project(root: Path, cache_dir: Path, normalise_on_cpu: bool = True) -> float:
    std = torch.tensor(CONFIG["std"]).view(1, 3, 1, 1)
    scale, shift = 1 / (255 * std), -torch.tensor(CONFIG["mean"]).view(1, 3, 1, 1) / std
    start = time.perf_counter()
    dm = ImageFolderDataModule(root, CONFIG, batch_size=32, num_workers=0, cache_dir=cache_dir, near_duplicates=None)
    dm.setup("fit")
    loader = dm.train_dataloader()
    n = 0
    for images, *_ in loader:
        if normalise_on_cpu:  # what DetectorModule.forward does on its device (free on a GPU, not on a CPU)
            images = torch.addcmul(shift, images.float(), scale)
        n += len(images)
    return n / (time.perf_counter() - start)  # setup (scan, cache build or read) included


def enlarge(source: Path, target: Path, limit: int) -> None:
    for name in ("AI", "Real"):
        (target / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[: limit // 2]:
            image = Image.open(path).convert("RGB")
            scale = 2048 / max(image.size)
            image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC).save(
                target / name / path.name, quality=90
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="images of the 2048 px folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        enlarge(SHARED, work / "large", args.images)
        print("images/s on 1 core; cold = first run (scan + cache build included), warm = later runs;")
        print("'+norm' normalises the uint8 batch on the CPU as a CPU-only training step would; without it, the")
        print("loader's own output (uint8, normalised on the accelerator)")
        print(
            f"{'folder':28}{'baseline':>9}{'cold+norm':>10}{'warm+norm':>10}{'warm':>9}"
            f"{'cold+norm':>11}{'warm+norm':>11}{'warm':>8}"
        )
        print(f"{'':28}{'':>9}{'':>10}{'':>10}{'':>9}{'/ baseline':>11}{'/ baseline':>11}{'/ base':>8}")
        for name, root in (("real-vs-ai (512 px)", SHARED), (f"enlarged ({args.images} x 2048 px)", work / "large")):
            base = baseline(root)
            cold = project(root, work / f"cache-{root.name}")
            warm = project(root, work / f"cache-{root.name}")
            raw = project(root, work / f"cache-{root.name}", normalise_on_cpu=False)
            print(
                f"{name:28}{base:9.1f}{cold:10.1f}{warm:10.1f}{raw:9.1f}"
                f"{cold / base:10.2f}x{warm / base:10.2f}x{raw / base:7.2f}x"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
