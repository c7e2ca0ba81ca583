"""The pre-resized pixel cache: same pixels as decoding, invalidation, and builds that die midway."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from trustthepixels.data.ingest.fingerprint import fingerprint_files
from trustthepixels.data.ingest.scan import scan_dataset
from trustthepixels.data.loading import pixel_cache
from trustthepixels.data.loading.dataset import ImageFileDataset
from trustthepixels.data.loading.pixel_cache import build_pixel_cache
from trustthepixels.data.loading.transforms import Preprocessing, build_transform

CONFIG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875}  # eval resize: 256
PRE = Preprocessing(224, 224, 0.875, "bicubic", jpeg_draft=False)  # base side 256


@pytest.fixture(scope="module")
def mixed_folder(shared_dir, tmp_path_factory):
    """Real images (512 px) plus large JPEGs made from them (x4, 2048 px): draft() only acts on the latter."""
    root = tmp_path_factory.mktemp("mixed")
    for name in ("AI", "Real"):
        (root / name).mkdir()
        sources = sorted((shared_dir / "data" / "real-vs-ai" / name).glob("*.jpg"))[:6]
        for i, src in enumerate(sources):
            image = Image.open(src).convert("RGB")
            if i % 2:
                image = image.resize((image.width * 4, image.height * 4), Image.BICUBIC)
            image.save(root / name / f"{i}.jpg", quality=90)
    return root


def datasets_for(root, cache_dir, draft, train=False):
    """draft: True / False (JPEG draft decoding), or "native" (data.resize=none)."""
    scan = scan_dataset(root, cache_dir=cache_dir)
    shas = [scan.records[s.relpath].sha256 for s in scan.samples]
    config = {**CONFIG, "jpeg_draft": draft is True, "resize": "none" if draft == "native" else "shorter"}
    pre = Preprocessing.from_data_config(config)
    cache = build_pixel_cache(
        scan.root, [(s.relpath, h) for s, h in zip(scan.samples, shas, strict=True)], cache_dir, pre
    )
    transform = build_transform(config, train=train, augment="robust" if train else "none")
    return (
        ImageFileDataset(scan.samples, transform, pre),
        ImageFileDataset(scan.samples, transform, pre, 1, cache, shas),
    )


@pytest.mark.parametrize("draft", [False, True, "native"])
def test_the_cache_changes_no_pixel_in_training_or_evaluation(mixed_folder, tmp_path, draft):
    """A speed setting: with draft decoding or without, cached and uncached datasets give the same tensors,
    for evaluation and for training's random crops and robust augmentation (same per-image seed)."""
    for train in (False, True):
        plain, cached = datasets_for(mixed_folder, tmp_path, draft, train)
        for i in range(len(plain)):
            item = (i, 1234 + i) if train else i
            assert torch.equal(plain[item][0], cached[item][0]), plain.samples[i].relpath  # exactly


def test_draft_stays_within_half_a_level_on_average(mixed_folder, tmp_path):
    plain, _ = datasets_for(mixed_folder, tmp_path, draft=False)
    _, cached = datasets_for(mixed_folder, tmp_path, draft=True)
    for i in range(len(plain)):
        diff = (plain[i][0].int() - cached[i][0].int()).abs().float()
        if Image.open(plain.samples[i].path).width > 1024:
            assert diff.mean() < 1.0 and diff.quantile(0.99) <= 8  # DCT-domain scaling, then the same resize
        else:
            assert diff.max() == 0  # draft() is not used below 2x the needed size


def _files(root):
    relpaths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    return [(r.relpath, r.sha256) for r in fingerprint_files(root, relpaths)]


def test_changed_file_or_parameter_invalidates(mixed_folder, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(mixed_folder, root)
    spec = PRE
    first = build_pixel_cache(root, _files(root), tmp_path / "cache", spec)
    decoded = []
    real = pixel_cache.load_base_image
    monkeypatch.setattr(pixel_cache, "load_base_image", lambda path, s: decoded.append(path.name) or real(path, s))
    assert build_pixel_cache(root, _files(root), tmp_path / "cache", spec).entries == first.entries
    assert decoded == []

    changed = root / "AI" / "0.jpg"
    Image.new("RGB", (300, 300), (200, 10, 10)).save(changed)
    again = build_pixel_cache(root, _files(root), tmp_path / "cache", spec)
    assert decoded == ["0.jpg"]
    sha = dict(_files(root))["AI/0.jpg"]
    assert again.get(sha).shape == (256, 256, 3)
    assert np.abs(again.get(sha)[0, 0].astype(int) - (200, 10, 10)).max() <= 3  # JPEG rounding

    decoded.clear()
    build_pixel_cache(root, _files(root), tmp_path / "cache", Preprocessing(140, 140))  # another size: its own
    assert len(decoded) == len(_files(root))
    decoded.clear()
    build_pixel_cache(root, _files(root), tmp_path / "cache", Preprocessing(224, 224, 0.875, jpeg_draft=True))
    assert len(decoded) == len(_files(root))  # draft decoding gives other pixels: other entries


def test_a_killed_build_is_never_trusted(mixed_folder, tmp_path, monkeypatch):
    files = _files(mixed_folder)
    calls = []
    real = pixel_cache.load_base_image

    def dies_midway(path, spec):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the process is stopped mid-build
        return real(path, spec)

    monkeypatch.setattr(pixel_cache, "load_base_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_pixel_cache(mixed_folder, files, tmp_path, PRE, workers=1)
    assert not list(tmp_path.glob("pixels-*.json"))  # no index: nothing to trust
    monkeypatch.setattr(pixel_cache, "load_base_image", real)
    cache = build_pixel_cache(mixed_folder, files, tmp_path, PRE)
    assert len(cache.entries) == len(files)

    # A segment cut short (disk full, copied half) no longer matches its index: rebuilt, not read.
    (segment,) = {entry[0] for entry in cache.entries.values()}
    with open(tmp_path / segment, "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / segment) // 2)
    rebuilt = build_pixel_cache(mixed_folder, files, tmp_path, PRE)
    assert {entry[0] for entry in rebuilt.entries.values()} != {segment}
    sha = files[0][1]
    assert np.array_equal(rebuilt.get(sha), pixel_cache.load_base_image(mixed_folder / files[0][0], PRE))


def test_a_rebuild_never_deletes_what_another_job_may_still_read(mixed_folder, tmp_path):
    """Job A holds a cache whose workers have not opened their segment yet; job B adds images. A's reads
    still work, and every segment ever written is still there."""
    files = _files(mixed_folder)
    job_a = build_pixel_cache(mixed_folder, files[:4], tmp_path, PRE)
    import pickle

    worker_copy = pickle.loads(pickle.dumps(job_a))  # what a DataLoader worker of job A holds, unopened
    job_b = build_pixel_cache(mixed_folder, files, tmp_path, PRE)
    assert len(job_b.entries) == len(files)
    for _, sha in files[:4]:
        assert np.array_equal(worker_copy.get(sha), job_b.get(sha))
    segments = {entry[0] for entry in job_b.entries.values()}
    assert len(segments) == 2 and all((tmp_path / s).is_file() for s in segments)


def test_cache_reads_survive_pickling_into_workers(mixed_folder, tmp_path):
    import pickle

    files = _files(mixed_folder)
    cache = build_pixel_cache(mixed_folder, files, tmp_path, Preprocessing(112, 112))
    cache.get(files[0][1])  # opens the memory map in this process
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._maps == {} and np.array_equal(clone.get(files[1][1]), cache.get(files[1][1]))


def test_feature_cache_trains_the_same_head_as_live_features(make_cfg, image_folder, tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch import Trainer, seed_everything

    from trustthepixels.data.loading.datamodule import ImageFolderDataModule

    cfg = make_cfg("model=resnet18", "model.pretrained=false", "model.freeze_backbone=true", "model.flip=none")

    def fitted(use_cache: bool):
        seed_everything(0)
        model = instantiate(cfg.model)
        dm = ImageFolderDataModule(
            image_folder, model.data_config, image_size=32, batch_size=4, num_workers=0, cache_dir=tmp_path / "cache"
        )
        dm.setup("fit")
        if use_cache:
            dm.use_cached_features(model)
        else:  # live: the frozen backbone sees the same (evaluation-transformed) images every step
            live = build_transform(dm.data_config, train=False)
            for name, ds in dm.datasets.items():
                dm.datasets[name] = ImageFileDataset(ds.samples, live, ds.pre, 1, ds.cache, ds.sha256)
        backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items() if not k.startswith("fc.")}
        seed_everything(1)
        Trainer(
            accelerator="cpu",
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(model, datamodule=dm)
        after = model.backbone.state_dict()
        assert all(torch.equal(after[k], v) for k, v in backbone_before.items())  # weights and BN statistics
        return model.head.weight.detach(), model.head.bias.detach()

    (w_live, b_live), (w_cached, b_cached) = fitted(False), fitted(True)
    assert w_live.abs().sum() > 0  # the head did learn
    assert torch.allclose(w_live, w_cached, atol=1e-5) and torch.allclose(b_live, b_cached, atol=1e-5)


def test_feature_cache_key_follows_every_pixel_setting(make_cfg):
    """Draft decoding changes pixels, so features computed with it are not those computed without."""
    from hydra.utils import instantiate

    from trustthepixels.data.loading.feature_cache import feature_key

    model = instantiate(make_cfg("model=resnet18", "model.pretrained=false").model)
    config = {**model.data_config, "input_size": (3, 32, 32)}
    keys = {
        feature_key(model, {**config, "jpeg_draft": True}),
        feature_key(model, {**config, "jpeg_draft": False}),
        feature_key(model, {**config, "jpeg_draft": False, "input_size": (3, 48, 48)}),
        feature_key(model, {**config, "jpeg_draft": False, "crop_pct": 1.0}),
    }
    assert len(keys) == 4


def test_a_file_rewritten_with_the_same_size_and_mtime_is_read_again(tmp_path):
    """(size, mtime) alone kept the old SHA-256, so the pixel cache served the old pixels."""
    from .conftest import make_image

    root = tmp_path / "images"
    root.mkdir()
    path = root / "a.png"
    make_image(1, 0).save(path)
    before = path.stat()
    (first,) = fingerprint_files(root, ["a.png"], cache_dir=tmp_path / "cache")
    make_image(1, 1).save(path)  # other pixels...
    data = path.read_bytes()
    path.write_bytes(data[: before.st_size].ljust(before.st_size, b"\0"))  # ...in exactly as many bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old modification time
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    (second,) = fingerprint_files(root, ["a.png"], cache_dir=tmp_path / "cache")
    assert second.sha256 != first.sha256


def test_the_preprocessing_is_described_as_evaluation_does_it():
    """The ONNX metadata and the model card say these steps: a data.resize=none detector is never resized."""
    image = torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8)
    assert PRE.describe() == "resize the shorter side to 256 (bicubic), then center-crop 224 x 224"
    assert build_transform(CONFIG, train=False)(image).shape == (3, 224, 224)
    native = {**CONFIG, "resize": "none"}
    assert Preprocessing.from_data_config(native).describe().startswith("no resize: center-crop 224 x 224")
    assert torch.equal(build_transform(native, train=False)(image), image[:, 38:262, 18:242])
