"""The benchmark scripts in bench/ run (tiny settings): their code is tested even where their figures come from
other machines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO, write_image_folder


def bench(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_bench_gpu_smoke_measures_every_path_side_by_side(tmp_path):
    """Model alone, the pipeline from the pixel cache and from JPEG files, and timm's own benchmark.py, in one
    table with the ratios (on this CPU: the same code a GPU run uses)."""
    data = write_image_folder(tmp_path / "data", per_class=16, size=48)
    result = bench(str(REPO / "bench" / "bench_gpu.py"), "--smoke", f"--data={data}", f"--cache-dir={tmp_path / 'c'}",
                   "--threads=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    alone_row, pipeline_row = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in result.stdout.splitlines()
        if line.startswith("| resnet18 |")
    ]
    assert float(alone_row[5]) > 0 and float(alone_row[6]) == 1.0  # the one setting is the model's best
    alone, cached, ratio, first, jpeg, jpeg_ratio, jpeg_first, timm, timm_ratio = (float(c) for c in pipeline_row[5:14])
    assert alone == float(alone_row[5])
    assert alone > 0 and cached > 0 and jpeg > 0 and timm > 0 and first >= 0 and jpeg_first >= 0
    # Each ratio is of the unrounded figures (4 significant digits printed, ratios 2 decimals).
    assert ratio == pytest.approx(cached / alone, rel=0.01, abs=0.006)
    assert jpeg_ratio == pytest.approx(jpeg / alone, rel=0.01, abs=0.006)
    assert timm_ratio == pytest.approx(alone / timm, rel=0.01, abs=0.006)
    assert "loader, 1 workers" in result.stdout  # JPEG decoding alone (nvJPEG too on a GPU)


@pytest.mark.slow
def test_bench_familiarity_compares_feature_choices(trained_checkpoint, tmp_path):
    other = write_image_folder(tmp_path / "other", per_class=6, size=40)
    result = bench(str(REPO / "bench" / "bench_familiarity.py"), str(trained_checkpoint), str(other), "--limit=12",
                   "--threads=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"last stage (before the head)", "all", "last (classifier's)"} <= set(rows)
    for row in rows.values():
        if row.split("|")[1].strip() != "features":
            auroc = float(row.split("|")[2])
            assert 0 <= auroc <= 1


@pytest.mark.slow
def test_bench_train_compares_the_plain_loop_and_the_pipeline(shared_dir, tmp_path):
    """bench_train.py reads the pipeline's rate from EpochSummary (it once read attributes that no longer existed)."""
    result = bench(str(REPO / "bench" / "bench_train.py"), "--batches=2", "--trials=1", "--image-size=64",
                   "--threads=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rates = {name: float(line.split()[-2]) for name in ("plain PyTorch loop", "Lightning pipeline")
             for line in result.stdout.splitlines() if line.startswith(name)}  # fmt: skip
    assert all(rate > 0 for rate in rates.values()) and len(rates) == 2
    assert "Lightning / plain, best of 1 each:" in result.stdout
