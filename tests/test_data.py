"""Scanning, decoding, splitting and transforms."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trustthepixels.data.ingest.decode import ImageDecodeError, open_rgb
from trustthepixels.data.ingest.scan import DatasetLayoutError, Sample, scan_dataset
from trustthepixels.data.loading.datamodule import ImageFolderDataModule
from trustthepixels.data.loading.dataset import EpochAheadLoader, EpochSampler
from trustthepixels.data.loading.split import SPLITS, split_counts, stratified_split
from trustthepixels.data.loading.transforms import build_transform

from .conftest import write_image_folder

# What ../shared/data/bad-inputs holds: files that must be skipped, and odd but usable images.
UNUSABLE = {
    "truncated_half.jpg": "cannot be decoded",
    "truncated_header_only.jpg": "cannot be decoded",
    "empty_zero_bytes.jpg": "empty file",
    "text_file_named_as.jpg": "not an image",
    "macos_DS_Store_from_image_folder": "not an image",
    "decompression_bomb_20000x20000.png": "decompression bomb",
    "one_pixel_1x1.jpg": "too small",
}
USABLE = {
    "cmyk_mode.jpg",
    "grayscale_16bit_I16.png",
    "rgba_with_transparency.png",
    "palette_mode_P.png",
    "grayscale_mode_L.jpg",
    "png_content_with_jpg_extension.jpg",
    "jpeg_content_with_png_extension.png",
    "jpeg_content_without_extension",
}


def samples(n_ai: int, n_real: int) -> list[Sample]:
    return [Sample(Path(f"/x/AI/a{i}.jpg"), f"AI/a{i}.jpg", 1) for i in range(n_ai)] + [
        Sample(Path(f"/x/Real/r{i}.jpg"), f"Real/r{i}.jpg", 0) for i in range(n_real)
    ]


def relpaths(parts: dict[str, list[Sample]]) -> dict[str, set[str]]:
    return {name: {s.relpath for s in part} for name, part in parts.items()}


class TestSplit:
    def test_stratified_disjoint_and_complete(self):
        items = samples(400, 300)
        parts = stratified_split(items, (0.8, 0.1, 0.1), seed=42)
        sets = relpaths(parts)
        assert set.union(*sets.values()) == {s.relpath for s in items}
        assert sum(len(s) for s in sets.values()) == len(items)
        for name, expected in {"train": (320, 240), "val": (40, 30), "test": (40, 30)}.items():
            assert (sum(s.label == 1 for s in parts[name]), sum(s.label == 0 for s in parts[name])) == expected

    def test_deterministic_and_independent_of_listing_order(self):
        items = samples(50, 50)
        reference = relpaths(stratified_split(items, (0.8, 0.1, 0.1), seed=7))
        for trial in range(5):
            shuffled = items[:]
            random.Random(trial).shuffle(shuffled)
            assert relpaths(stratified_split(shuffled, (0.8, 0.1, 0.1), seed=7)) == reference

    def test_seed_changes_the_split_and_files_keep_their_part_when_moved(self):
        items = samples(50, 50)
        assert relpaths(stratified_split(items, (0.8, 0.1, 0.1), seed=1)) != relpaths(
            stratified_split(items, (0.8, 0.1, 0.1), seed=2)
        )
        moved = [Sample(Path("/elsewhere") / s.relpath, s.relpath, s.label) for s in items]
        assert relpaths(stratified_split(moved, (0.8, 0.1, 0.1), 1)) == relpaths(
            stratified_split(items, (0.8, 0.1, 0.1), 1)
        )

    def test_every_prefix_mixes_the_classes(self):
        for seed in range(5):
            val = stratified_split(samples(200, 100), (0.5, 0.25, 0.25), seed=seed)["val"]
            assert {s.label for s in val[:2]} == {0, 1}
            assert sum(s.label for s in val[:30]) == 20  # the 2:1 ratio holds in any prefix

    def test_groups_move_as_one_and_singletons_are_unchanged(self):
        items = samples(100, 100)
        groups = [[f"AI/a{i}.jpg", f"AI/a{i + 1}.jpg", f"Real/r{i}.jpg"] for i in range(0, 60, 6)]
        parts = stratified_split(items, (0.8, 0.1, 0.1), seed=3, groups=groups)
        where = {s.relpath: name for name, part in parts.items() for s in part}
        for group in groups:
            assert len({where[p] for p in group}) == 1
        assert {n: len(p) for n, p in parts.items()} == {"train": 160, "val": 20, "test": 20}
        plain = relpaths(stratified_split(items, (0.8, 0.1, 0.1), seed=3))
        assert relpaths(stratified_split(items, (0.8, 0.1, 0.1), seed=3, groups=[])) == plain

    def test_small_classes_still_fill_val_and_test(self):
        assert split_counts(5, (0.8, 0.1, 0.1)) == (3, 1, 1)
        with pytest.raises(ValueError, match="too few"):
            split_counts(2, (0.8, 0.1, 0.1))

    @pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
    def test_bad_fractions_are_refused(self, fractions):
        with pytest.raises(ValueError, match=r"data\.split"):
            stratified_split(samples(10, 10), fractions, seed=0)


class TestLayout:
    def test_missing_root_says_how_to_get_data(self, tmp_path):
        with pytest.raises(DatasetLayoutError, match="does not exist") as err:
            scan_dataset(tmp_path / "nowhere")
        assert str(tmp_path / "nowhere") in str(err.value) and "dataset.zip" in str(err.value)

    def test_missing_class(self, tmp_path):
        write_image_folder(tmp_path, per_class=2)
        shutil.rmtree(tmp_path / "Real")
        with pytest.raises(DatasetLayoutError, match="no Real/ or RealArt/"):
            scan_dataset(tmp_path)

    def test_empty_root_and_empty_classes(self, tmp_path):
        with pytest.raises(DatasetLayoutError, match="no AI/ or Real/"):
            scan_dataset(tmp_path)
        (tmp_path / "AI").mkdir()
        (tmp_path / "Real").mkdir()
        with pytest.raises(DatasetLayoutError, match="no files"):
            scan_dataset(tmp_path)

    def test_original_folder_names(self, tmp_path):
        write_image_folder(tmp_path, per_class=3)
        (tmp_path / "AI").rename(tmp_path / "AiArtData")
        (tmp_path / "Real").rename(tmp_path / "RealArt")
        result = scan_dataset(tmp_path)
        assert result.counts() == {"Real": 3, "AI": 3}
        assert {s.label for s in result.samples if s.relpath.startswith("AiArtData/")} == {1}


class TestBadInputs:
    def test_each_bad_file_is_skipped_with_its_reason(self, bad_image_folder):
        result = scan_dataset(bad_image_folder)
        skipped = {Path(relpath).name: reason for relpath, _, reason in result.skipped}
        assert set(skipped) == set(UNUSABLE)
        for name, expected in UNUSABLE.items():
            assert expected in skipped[name], (name, skipped[name])
        kept = {s.path.name for s in result.samples}
        assert kept >= USABLE
        assert len(result.samples) == 2 * 12 + len(USABLE)

    def test_odd_modes_become_sensible_rgb(self, shared_dir):
        bad = shared_dir / "data" / "bad-inputs"
        for name in USABLE:
            assert open_rgb(bad / name).mode == "RGB"
        # 16-bit greyscale is scaled, not clipped to white as Image.convert("RGB") would.
        assert np.asarray(open_rgb(bad / "grayscale_16bit_I16.png")).mean() < 250
        with pytest.raises(ImageDecodeError, match="truncated"):
            open_rgb(bad / "truncated_half.jpg")

    def test_datamodule_writes_skipped_and_split_csv(self, bad_image_folder, tmp_path):
        dm = ImageFolderDataModule(
            bad_image_folder, {"input_size": (3, 32, 32)}, num_workers=0, output_dir=tmp_path / "run"
        )
        dm.setup("fit")
        skipped = (tmp_path / "run" / "skipped.csv").read_text().splitlines()
        assert len(skipped) == 1 + len(UNUSABLE)
        split_rows = (tmp_path / "run" / "split.csv").read_text().splitlines()
        assert len(split_rows) == 1 + 2 * 12 + len(USABLE)
        assert dm.summary()["skipped_files"] == len(UNUSABLE)


def test_transforms_give_uint8_at_the_model_size():
    config = {"input_size": (3, 40, 40), "interpolation": "bicubic", "crop_pct": 0.875}
    image = Image.new("RGB", (120, 90), (10, 200, 30))
    for train in (True, False):
        out = build_transform(config, train=train)(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 40, 40)
    for train in (True, False):  # a non-square model input, as timm does it
        out = build_transform({**config, "input_size": (3, 32, 48)}, train=train)(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 48)
    for train in (True, False):
        out = build_transform(config, train=train)(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 40, 40)


def test_datamodule_batches(image_folder):
    dm = ImageFolderDataModule(image_folder, {"input_size": (3, 224, 224)}, image_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    images, labels, indices = next(iter(dm.train_dataloader()))
    assert sorted(labels.tolist()) == sorted(dm.datasets["train"].samples[i].label for i in indices.tolist())
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert set(labels.tolist()) <= {0, 1}
    assert {name: len(dm.datasets[name]) for name in SPLITS} == {"train": 20, "val": 2, "calibration": 0, "test": 2}
    assert dm.state_dict()["labels"] == {"0": "Real", "1": "AI"}


def test_native_resolution_crops_never_resample(tmp_path):
    """data.resize=none: the model sees a window of the file's own pixels, in training and in evaluation."""
    from trustthepixels.data.loading.transforms import Preprocessing, load_pixels

    rng = np.random.default_rng(0)
    original = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(original).save(tmp_path / "x.png")
    config = {"input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 0.875, "resize": "none"}
    pre = Preprocessing.from_data_config(config)
    base = load_pixels(tmp_path / "x.png", pre)
    assert torch.equal(base, torch.from_numpy(original).permute(2, 0, 1)) and pre.key == "native"
    full = torch.from_numpy(original).permute(2, 0, 1)
    windows = {tuple(full[:, y : y + 32, x : x + 32].flatten().tolist()) for y in range(59) for x in range(89)}
    for train in (True, False):
        out = build_transform(config, train=train)(base)
        assert out.shape == (3, 32, 32) and tuple(out.flatten().tolist()) in windows
    small = build_transform({**config, "input_size": (3, 128, 128)}, train=True)(base)
    assert small.shape == (3, 128, 128)  # smaller than the crop: padded, not upscaled


def test_resize_setting_is_checked_and_stored(image_folder):
    from trustthepixels.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.resize"):
        ImageFolderDataModule(image_folder, {"input_size": (3, 32, 32)}, resize="native")
    dm = ImageFolderDataModule(image_folder, {"input_size": (3, 32, 32)}, resize="none", num_workers=0)
    assert dm.state_dict()["data_config"]["resize"] == "none"
    dm.setup("fit")
    images, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 32, 32)


def test_interpolation_and_crop_pct_override_the_backbone_and_travel_with_the_model(tmp_path):
    """data.interpolation=nearest, data.crop_pct=1: a 32 px image reaches a 128 px model as exact 4x4 copies of
    its pixels, all of it; the choice is in the data config every checkpoint stores (and names the cache entry)."""
    from trustthepixels.data.loading.transforms import Preprocessing, load_pixels
    from trustthepixels.errors import ConfigError

    rng = np.random.default_rng(0)
    for label in ("AI", "Real"):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    backbone = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875}
    dm = ImageFolderDataModule(
        tmp_path, backbone, image_size=128, interpolation="nearest", crop_pct=1.0, num_workers=0, cache=False
    )
    config = dm.state_dict()["data_config"]
    assert (config["interpolation"], config["crop_pct"], config["input_size"]) == ("nearest", 1.0, [3, 128, 128])
    pixels = load_pixels(tmp_path / "AI" / "0.png", dm.preprocessing)
    out = build_transform(config, train=False)(pixels)
    assert torch.equal(out, pixels.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2))
    assert dm.preprocessing.key != Preprocessing.from_data_config({**config, "interpolation": "bicubic"}).key
    # null keeps the backbone's own
    assert ImageFolderDataModule(tmp_path, backbone, num_workers=0).data_config["interpolation"] == "bicubic"
    with pytest.raises(ConfigError, match=r"data\.interpolation='lanczos'"):
        ImageFolderDataModule(tmp_path, backbone, interpolation="lanczos")
    for wrong in (1.5, True):
        with pytest.raises(ConfigError, match=rf"data\.crop_pct={wrong}"):
            ImageFolderDataModule(tmp_path, backbone, crop_pct=wrong)


class _Draws(torch.utils.data.Dataset):
    """Each item is what EpochSampler addressed: (index, seed)."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, item):
        index, seed = item
        return torch.tensor([index, seed % 1_000_003])


def test_the_training_loader_starts_the_next_epoch_as_the_last_batch_arrives():
    """Consumed as Lightning does (exactly len(loader) batches, nothing asked past the last), EpochAheadLoader has
    the next epoch under way when an epoch's last batch is handed out, and every epoch's batches are the ones a
    plain DataLoader gives for that epoch, also after an epoch cut short."""
    import itertools

    from torch.utils.data import DataLoader

    epoch = [0]

    def loader(kind):
        sampler = EpochSampler(20, seed=7, shuffle=True, epoch_of=lambda: epoch[0])
        return kind(_Draws(), batch_size=4, sampler=sampler, num_workers=2, persistent_workers=True, drop_last=True)

    ahead, plain = loader(EpochAheadLoader), loader(DataLoader)
    for e, taken in [(0, 5), (1, 5), (2, 2), (3, 5), (4, 5)]:  # epoch 2 stops after 2 batches (limit_train_batches)
        epoch[0] = e
        got = list(itertools.islice(iter(ahead), taken))
        want = list(itertools.islice(iter(plain), taken))
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), f"epoch {e}"
        assert (ahead._next is not None) == (taken == len(ahead)), f"epoch {e}"  # the next epoch already started
