"""Benchmark: the original reduction script against `prepare_data.py source=hf`, in one run, same data.

    python bench/bench_prepare.py [--rows 20000] [--per-class N] [--workdir DIR]

Builds a local dataset in the Hub dataset's schema (Image + ClassLabel AiArtData/RealArt, parquet) of `--rows`
photo-like 512x512 JPEGs, then times both on it and checks their outputs are byte-identical. `--per-class`
defaults to the real job's sampling fraction: 4000 per class out of 152,710 rows.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FULL_ROWS, FULL_PER_CLASS = 152_710, 4000


def photo_like(seed: int, size: int = 512) -> bytes:
    """Smooth colour fields, shapes with soft edges and sensor-like noise, saved as a quality-90 JPEG."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.integers(0, size, 2)
        x1, y1 = x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    base = base.filter(ImageFilter.GaussianBlur(1.5))
    pixels = np.asarray(base, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def build_dataset(folder: Path, rows: int) -> None:
    import datasets

    with Pool(os.cpu_count()) as pool:
        encoded = pool.map(photo_like, range(rows), chunksize=64)
    labels = np.random.default_rng(0).integers(0, 2, rows).tolist()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["AiArtData", "RealArt"])}
    )
    (folder / "data").mkdir(parents=True)
    shard = 2000
    for k, start in enumerate(range(0, rows, shard)):  # shards of 2000 rows, as the Hub stores them
        part = {
            "image": [{"bytes": b, "path": None} for b in encoded[start : start + shard]],
            "label": labels[start : start + shard],
        }
        datasets.Dataset.from_dict(part, features=features).to_parquet(str(folder / "data" / f"train-{k:05d}.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    per_class = args.per_class or round(FULL_PER_CLASS * args.rows / FULL_ROWS)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prepare-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")  # keep the Arrow cache with the benchmark data

    import datasets
    from baselines import original_reduction

    from trustthepixels.data.ingest.prepare import prepare_from_hf

    source = work / "source"
    if not (source / "data").is_dir():
        t0 = time.perf_counter()
        build_dataset(source, args.rows)
        print(f"built {args.rows} rows of 512x512 JPEGs in {time.perf_counter() - t0:.0f} s: {source}")
    datasets.load_dataset(str(source), split="train")  # parquet -> Arrow conversion once, outside both timings
    print(f"rows {args.rows}, per_class {per_class} ({2 * per_class} images written), {os.cpu_count()} cores")

    for out in (work / "original", work / "project"):
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    original_reduction(datasets.load_dataset(str(source), split="train"), work / "original", per_class, seed=42)
    original = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare_from_hf(work / "project", dataset=str(source), per_class=per_class, seed=42)
    project = time.perf_counter() - t0

    files = sorted(p.relative_to(work / "original") for p in (work / "original").rglob("*.jpg"))
    same = all((work / "original" / f).read_bytes() == (work / "project" / f).read_bytes() for f in files)
    print(f"{'':24}{'seconds':>10}{'images/s':>10}")
    print(f"{'original script':24}{original:10.1f}{2 * per_class / original:10.1f}")
    print(f"{'prepare_data source=hf':24}{project:10.1f}{2 * per_class / project:10.1f}")
    print(f"speed-up: {original / project:.1f}x; outputs byte-identical: {same} ({len(files)} files)")
    if args.workdir is None:
        shutil.rmtree(work)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
