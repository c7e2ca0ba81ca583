"""The LightningDataModule over an `AI/` + `Real/` image folder."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from trustthepixels.config import to_plain, validated
from trustthepixels.data.ingest.prepare import prepare_from_release
from trustthepixels.data.ingest.roots import Roots, is_union, parse_roots, roots_state
from trustthepixels.data.ingest.scan import (
    GET_DATA_HINT,
    LABELS,
    DatasetLayoutError,
    Sample,
    ScanResult,
)
from trustthepixels.data.loading.dataset import EpochAheadLoader, EpochSampler, FeatureDataset, ImageFileDataset
from trustthepixels.data.loading.feature_cache import cached_features, feature_key
from trustthepixels.data.loading.pixel_cache import PixelCache, build_pixel_cache
from trustthepixels.data.loading.planner import SplitPlan, plan_split, write_manifests
from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.data.loading.split import SPLITS
from trustthepixels.data.loading.transforms import Preprocessing, build_transform
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.errors import ConfigError

log = logging.getLogger(__name__)


class ImageFolderDataModule(LightningDataModule):
    """Scans `root` once, splits it (stratified, seeded) and serves uint8 batches.

    `root` is one `AI/` + `Real/` folder, or several sources (a list of folders, or a mapping name -> folder):
    their union is split per source and class, and validation and test report each source's metrics too.

    `data_config` is the backbone's timm data config (size, interpolation, crop_pct), which the settings'
    `image_size`, `interpolation` and `crop_pct` override; `settings` are the `data` group's (`DataSettings`
    declares each one, its default and what it does). The resolved data config and the label mapping go into
    every checkpoint through `state_dict`.
    """

    def __init__(
        self,
        root: str | Path | Sequence[str] | Mapping[str, str],
        data_config: dict[str, Any],
        pin_memory: bool | None = None,
        **settings: Any,
    ):
        super().__init__()
        self.settings = s = validated(DataSettings, {"root": to_plain(root), **settings}, "data.")
        self.roots: Roots = parse_roots(s.root)
        self.root = next(iter(self.roots.values()))  # the one folder (or the first source)
        self.data_config = dict(to_plain(data_config))
        if s.image_size:
            self.data_config["input_size"] = (3, s.image_size, s.image_size)
        if s.interpolation:
            self.data_config["interpolation"] = s.interpolation
        if s.crop_pct:
            self.data_config["crop_pct"] = s.crop_pct
        # Part of what the model sees (see transforms.Preprocessing): saved in every checkpoint with the rest.
        self.data_config["jpeg_draft"] = s.jpeg_draft
        self.data_config["resize"] = s.resize
        self.preprocessing = Preprocessing.from_data_config(self.data_config)
        self.num_workers = resolve_num_workers(s.num_workers)
        self.cache_dir = Path(s.cache_dir) if s.cache_dir else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.scan: ScanResult | None = None
        self.plan: SplitPlan | None = None
        self.datasets: dict[str, ImageFileDataset | FeatureDataset] = {}
        # The epoch a resumed run starts at. Lightning creates (and starts prefetching from) the first training
        # iterator before it restores the trainer's epoch, but after this module's `load_state_dict`.
        self.start_epoch = 0

    def prepare_data(self) -> None:
        """Download the published dataset on first use (Lightning calls this on one process per machine)."""
        if is_union(self.roots):
            return  # a union of sources is made of folders the user has; the scan says which one is missing
        if self.root.exists():
            return
        if not self.settings.download:
            raise DatasetLayoutError(
                f"data.root={self.root} does not exist (and data.download=false). Set data.root to a folder with "
                "AI/ and Real/ subfolders, or data.download=true to fetch the published dataset."
            )
        log.info("%s does not exist: downloading the dataset from %s", self.root, self.settings.url)
        try:
            prepare_from_release(self.root, url=self.settings.url)
        except FileExistsError:
            pass  # another job prepared it while this one waited for the lock
        except (OSError, ValueError) as err:
            hint = "" if "prepare_data.py" in str(err) else f" {GET_DATA_HINT}"
            raise DatasetLayoutError(
                f"Dataset root {self.root} does not exist and the download failed: {err}.{hint}"
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if self.scan is not None:  # fit, validate and test share one scan and one split
            return
        parts = self.split()
        s = self.settings
        pixels = self._pixel_cache() if s.cache and self.cache_dir else None
        augment = {"augment": s.augment, "blur_prob": s.blur_prob, "jpeg_prob": s.jpeg_prob}
        for name in SPLITS:
            transform = build_transform(self.data_config, name == "train", tuple(s.crop_scale), **augment)
            sha256 = [self.scan.records[sample.relpath].sha256 for sample in parts[name]]
            self.datasets[name] = ImageFileDataset(
                parts[name], transform, self.preprocessing, s.min_image_side, pixels, sha256
            )
        log.info("Split (seed %d): %s", s.seed, ", ".join(f"{n} {len(self.datasets[n])}" for n in SPLITS))
        if s.pair_augment and not self.train_pairs():
            raise ConfigError(
                "data.pair_augment=true, but the training part holds no pair of a photo and its reconstruction "
                "(no source of data.root has an aligned set's manifest.csv): make one with python prepare_data.py "
                "source=aligned real=FOLDER, or set data.pair_augment=false"
            )
        self._write_manifests(parts)

    def split(self) -> dict[str, list[Sample]]:
        """Scan the sources and split them (or cut this job's fold): the samples of each split, no pixels read
        beyond the scan (`planner.plan_split`, which the benchmark uses alone)."""
        plan = plan_split(self.roots, self.settings)
        self.scan, self.plan = plan.scan, plan
        return plan.parts

    def train_pairs(self) -> list[tuple[int, int]]:
        """(Real, AI) positions in the training dataset of the aligned pairs whose two images are both in it."""
        index = {s.relpath: i for i, s in enumerate(self.datasets["train"].samples)}
        return [(index[real], index[ai]) for real, ai in self.plan.pairs if real in index and ai in index]

    def use_cached_features(self, model: torch.nn.Module) -> None:
        """Replace every split's images by the frozen backbone's features, from the feature cache."""
        if self.cache_dir is None:
            raise ValueError("data.feature_cache=true needs data.cache_dir")
        key = feature_key(model, self.data_config)
        eval_transform = build_transform(self.data_config, train=False)
        for name, dataset in self.datasets.items():
            images = ImageFileDataset(
                dataset.samples,
                eval_transform,
                self.preprocessing,
                self.settings.min_image_side,
                dataset.cache,
                dataset.sha256,
            )
            features = cached_features(
                model, images, dataset.sha256, self.cache_dir, key, self.settings.batch_size, self.num_workers
            )
            self.datasets[name] = FeatureDataset(features, [s.label for s in dataset.samples], dataset.samples)
        self.num_workers = 0  # tensors in memory: worker processes would only add start-up time

    def _pixel_cache(self) -> PixelCache:
        """Every usable image decoded once into its base image (see `transforms`), one index per source folder."""
        entries = {}
        for name, folder in self.scan.roots.items():
            files = [
                (s.path.relative_to(folder).as_posix(), self.scan.records[s.relpath].sha256)
                for s in self.scan.samples
                if s.source == name
            ]
            entries |= build_pixel_cache(folder, files, self.cache_dir, self.preprocessing).entries
        return PixelCache(self.cache_dir, entries)

    def sources(self, name: str) -> list[str] | None:
        """The source of each image of split `name`, in dataset order; None for a single folder."""
        if not is_union(self.roots) or name not in self.datasets:
            return None
        return [s.source for s in self.datasets[name].samples]

    @rank_zero_only
    def _write_manifests(self, parts: dict) -> None:
        if self.settings.output_dir is not None:
            write_manifests(self.plan, Path(self.settings.output_dir))

    def _loader(self, name: str) -> DataLoader:
        dataset = self.datasets[name]
        train = name == "train"
        trainer = self.trainer
        rank, replicas = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EpochSampler(
            len(dataset),
            self.settings.seed,
            shuffle=train,
            rank=rank,
            num_replicas=replicas,
            pad=train,
            epoch_of=(lambda: max(trainer.current_epoch, self.start_epoch)) if trainer is not None else None,
            pairs=self.train_pairs() if train and self.settings.pair_augment else (),
        )
        return (EpochAheadLoader if train else DataLoader)(
            dataset,
            batch_size=self.settings.batch_size,
            sampler=sampler,
            drop_last=train and len(sampler) > self.settings.batch_size,  # no 1-image batch for BatchNorm
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def summary(self) -> dict[str, Any]:
        """Sizes of each split and the number of skipped files, for `metrics.json`."""
        assert self.scan is not None, "call setup() first"
        return {
            "root": roots_state(self.scan.roots),
            "images": {name: len(ds) for name, ds in self.datasets.items()},
            "images_per_source": {
                name: dict(Counter(s.source for s in ds.samples)) for name, ds in self.datasets.items()
            },
            "skipped_files": len(self.scan.skipped),
            "near_duplicate_groups": len(self.plan.duplicate_groups),
            "near_duplicate_groups_across_sources": len(self.plan.cross_source_duplicates),
            "aligned_pairs": len(self.plan.pairs),
            "folds": self.settings.folds,
            "fold": self.settings.fold if self.settings.folds else None,
        }

    def state_dict(self) -> dict[str, Any]:
        # Saved in every checkpoint: what evaluation and prediction need to see images as training did.
        return {
            "labels": {str(k): v for k, v in LABELS.items()},
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "root": roots_state(self.roots),
            "min_image_side": self.settings.min_image_side,
            "split": list(self.settings.split),
            "seed": self.settings.seed,
            # Checkpoints are written at the end of an epoch's validation: a resumed run starts at the next one.
            "next_epoch": self.trainer.current_epoch + 1 if self.trainer is not None else 0,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_epoch = int(state_dict.get("next_epoch", 0))
        saved = tuple(state_dict.get("data_config", {}).get("input_size", ()))
        if saved and saved != tuple(self.data_config["input_size"]):
            log.warning(
                "Resuming at input size %s, but the checkpoint was trained at %s", self.data_config["input_size"], saved
            )
