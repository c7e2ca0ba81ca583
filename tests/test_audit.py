"""The dataset audit, the fingerprint cache and the duplicate-aware split."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image

from trustthepixels.data.audit.audit import audit_dataset
from trustthepixels.data.audit.jpeg_quality import jpeg_quality
from trustthepixels.data.ingest import fingerprint
from trustthepixels.data.ingest.fingerprint import cache_path, fingerprint_files
from trustthepixels.data.ingest.scan import scan_dataset
from trustthepixels.data.loading.datamodule import ImageFolderDataModule
from trustthepixels.data.loading.split import read_split_csv

from .conftest import make_image, write_image_folder


def test_audit_of_the_real_set(shared_dir, tmp_path):
    report = audit_dataset(shared_dir / "data" / "real-vs-ai", tmp_path / "audit", {"cache_dir": tmp_path / "cache"})
    for name in ("AI", "Real"):
        summary = report["classes"][name]
        assert summary["images"] == 397
        assert summary["formats"] == {"JPEG": 397} and summary["modes"] == {"RGB": 397}
        assert summary["width"]["p100"] == 512 and summary["height"]["p0"] > 100
        assert summary["jpeg_quality"]["p50"] == 95  # the shared set was saved at quality 95
    baseline = report["metadata_baseline"]
    assert 0.4 < baseline["balanced_accuracy"] < 0.7 and set(baseline["single_feature_accuracy"]) >= {
        "width",
        "is_square",
    }
    for name in ("audit.json", "report.md", "sizes.png", "formats.png"):
        assert (tmp_path / "audit" / name).stat().st_size > 0
    assert "Metadata-only baseline" in (tmp_path / "audit" / "report.md").read_text()


def test_audit_names_shortcuts_and_cross_class_duplicates(tmp_path):
    root = tmp_path / "cheat"
    (root / "AI").mkdir(parents=True)
    (root / "Real").mkdir()
    for i in range(20):  # AI: square PNGs; Real: wide JPEGs at quality 60
        make_image(1, i, size=64).save(root / "AI" / f"ai_{i}.png")
        make_image(0, i, size=64).resize((96, 64)).save(root / "Real" / f"real_{i}.jpg", quality=60)
    shutil.copy(root / "AI" / "ai_0.png", root / "Real" / "copy_of_ai_0.png")
    report = audit_dataset(root, tmp_path / "audit")
    assert report["metadata_baseline"]["balanced_accuracy"] > 0.9
    assert report["duplicates"]["cross_class_groups"] == 1
    assert report["classes"]["Real"]["jpeg_quality"]["p50"] == 60
    text = (tmp_path / "audit" / "report.md").read_text()
    assert "can cheat" in text and "labelled AI and Real" in text


def test_jpeg_quality_estimate(tmp_path):
    for quality in (30, 75, 95):
        make_image(0, 1, 64).save(tmp_path / f"q{quality}.jpg", quality=quality)
        assert jpeg_quality(tmp_path / f"q{quality}.jpg") == quality
    make_image(0, 1, 64).save(tmp_path / "x.png")
    assert jpeg_quality(tmp_path / "x.png") is None


def test_fingerprints_are_cached_and_invalidated(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", per_class=3)
    relpaths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))
    first = fingerprint_files(root, relpaths, tmp_path / "cache")
    computed = []
    real = fingerprint.fingerprint_file
    monkeypatch.setattr(fingerprint, "fingerprint_file", lambda r, rel: computed.append(rel) or real(r, rel))
    assert fingerprint_files(root, relpaths, tmp_path / "cache") == first and computed == []

    changed = root / relpaths[0]
    Image.new("RGB", (50, 50), "red").save(changed, format=Image.open(changed).format)
    os.utime(changed, ns=(1, 1))
    again = fingerprint_files(root, relpaths, tmp_path / "cache")
    assert computed == [relpaths[0]] and again[0].phash != first[0].phash

    cache_path(tmp_path / "cache", root).write_text("{ damaged")  # never trusted, rebuilt
    computed.clear()
    assert fingerprint_files(root, relpaths, tmp_path / "cache") == again and len(computed) == len(relpaths)


def _blob(seed: int) -> Image.Image:
    """A smooth, photo-like image: perceptual hashes behave on it as they do on real pictures."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC)


def test_near_duplicates_never_straddle_splits(tmp_path):
    root = tmp_path / "data"
    planted = []
    for label, name in ((1, "AI"), (0, "Real")):
        (root / name).mkdir(parents=True)
        for i in range(30):
            _blob(100 * label + i).save(root / name / f"{name.lower()}_{i:04d}.png")
        for i in range(0, 30, 3):  # 10 groups per class: an image, a JPEG re-encode and a downscaled copy
            image = _blob(100 * label + i)
            image.save(root / name / f"copy_{i}_jpeg.jpg", quality=70)
            image.resize((80, 80), Image.LANCZOS).save(root / name / f"copy_{i}_small.png")
            planted.append(
                [f"{name}/{name.lower()}_{i:04d}.png", f"{name}/copy_{i}_jpeg.jpg", f"{name}/copy_{i}_small.png"]
            )
    dm = ImageFolderDataModule(
        root,
        {"input_size": (3, 32, 32)},
        num_workers=0,
        output_dir=tmp_path / "run",
        near_duplicates={"phash": 4, "dhash": 6},
        cache_dir=tmp_path / "cache",
    )
    dm.setup("fit")
    assert sorted(dm.plan.duplicate_groups) == sorted(sorted(g) for g in planted)
    parts = read_split_csv(tmp_path / "run" / "split.csv")
    split_of = {path: name for name, rows in parts.items() for path, _ in rows}
    for group in planted:
        assert len({split_of[p] for p in group}) == 1, group
    sizes = dm.summary()["images"]
    assert sizes["val"] >= 2 and sizes["test"] >= 2 and sum(sizes.values()) == 100
    assert (
        json.loads(cache_path(tmp_path / "cache", root.resolve()).read_text())["version"] == fingerprint.CACHE_VERSION
    )


def test_scan_reads_the_cache_instead_of_decoding(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", per_class=3)
    scan_dataset(root, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(fingerprint, "decode_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert len(scan_dataset(root, cache_dir=tmp_path / "cache").samples) == 6


def test_multi_index_search_finds_exactly_the_all_pairs_answer():
    """Pigeonhole on pHash blocks misses no pair: the same pairs as comparing all of them, on random hashes,
    planted near-copies at every distance up to the limits and one beyond, chains and exact copies."""
    from bench.baselines import all_pairs
    from trustthepixels.data.audit.dedup import near_pairs

    rng = np.random.default_rng(11)
    n = 3000
    phash = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    dhash = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    for k in range(0, 1200, 3):  # chains: k ~ k+1 ~ k+2
        for step in (1, 2):
            p_bits = rng.choice(64, rng.integers(0, 6), replace=False)  # 0..5 bits: at and beyond the limit 4
            d_bits = rng.choice(64, rng.integers(0, 8), replace=False)  # 0..7 bits: limit 6
            phash[k + step] = phash[k + step - 1] ^ np.uint64(sum(1 << int(b) for b in p_bits))
            dhash[k + step] = dhash[k + step - 1] ^ np.uint64(sum(1 << int(b) for b in d_bits))
    for limits in ((4, 6), (0, 0), (2, 10), (7, 7)):
        expected = np.unique(np.sort(all_pairs(phash, dhash, *limits), axis=1), axis=0)
        assert np.array_equal(near_pairs(phash, dhash, *limits, budget=5000), expected), limits
        assert len(expected) > 0


def test_spectrum_baseline_sees_up_sampling_traces(tmp_path):
    """Real: noise at full resolution. AI: noise made at half size and up-sampled (nearest), the periodic trace
    Durall et al. describe. Same size and format (uncompressed BMP: same bytes), so metadata cannot tell them
    apart; the spectrum can."""
    from trustthepixels.data.audit.spectrum import BINS, azimuthal_spectrum

    rng = np.random.default_rng(0)
    for name in ("AI", "Real"):
        (tmp_path / "d" / name).mkdir(parents=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "d" / "Real" / f"{i}.bmp")
        small = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        small.resize((64, 64), Image.NEAREST).save(tmp_path / "d" / "AI" / f"{i}.bmp")
    spectrum = azimuthal_spectrum(tmp_path / "d" / "AI" / "0.bmp")
    assert spectrum.shape == (BINS,) and abs(spectrum.mean()) < 1e-9
    report = audit_dataset(tmp_path / "d", tmp_path / "audit", {"near_duplicates": None})
    assert report["spectral_baseline"]["balanced_accuracy"] > 0.9
    assert report["metadata_baseline"]["balanced_accuracy"] < 0.75
    assert any("power spectrum alone" in w for w in report["warnings"])
    assert "Spectrum baseline" in (tmp_path / "audit" / "report.md").read_text()
