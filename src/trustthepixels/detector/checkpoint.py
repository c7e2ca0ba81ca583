"""Load a trained detector for evaluation, prediction and export: weights, preprocessing, labels and the
calibration record that turns its scores into verdicts (metrics/calibration.py)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustthepixels.data.ingest.decode import ImageDecodeError
from trustthepixels.data.ingest.roots import Roots, locate, roots_from_state
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.detector.predictions import Threshold, verdict_rule
from trustthepixels.detector.scoring import InferenceDataset, Scores, predict_logits
from trustthepixels.errors import UserError
from trustthepixels.metrics.calibration import KEY as CALIBRATION_KEY
from trustthepixels.metrics.calibration import Calibration
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.intervals import metric_intervals
from trustthepixels.model.familiarity import Familiarity, familiarity_blocks, fit_familiarity
from trustthepixels.model.module import DetectorModule

log = logging.getLogger(__name__)
DATAMODULE_KEY = "ImageFolderDataModule"
WEAK_AUROC = 0.6  # a validation AUROC interval reaching this or lower: the page and /v1/model warn


@dataclass
class Detector:
    model: DetectorModule  # in eval mode, on the CPU
    data_config: dict[str, Any]  # input_size, interpolation, crop_pct, mean, std: as in training
    labels: dict[int, str]  # 0 -> "Real", 1 -> "AI"
    data_roots: Roots | None  # the folder(s) it was trained on: source name -> folder
    checkpoint: Path
    min_image_side: int = 8  # the training run's rule for a usable image, applied to every new image too
    val_metrics: dict[str, float] = field(default_factory=dict)  # of the epoch the checkpoint was saved at
    val_predictions: dict[str, Any] | None = None  # {"logits", "labels"}: the validation metrics' intervals
    familiarity: Familiarity | None = None  # how unlike its training images an image is (model/familiarity.py)
    calibration: Calibration | None = None  # what turns its scores into verdicts (metrics/calibration.py)
    seed: int = 0  # its run's: the split, and the bootstrap of train.py's validation intervals

    def __post_init__(self) -> None:
        if self.calibration is not None:
            self.attach(self.calibration)

    def attach(self, calibration: Calibration) -> None:
        """Decide by this record from now on (its familiarity reference included)."""
        self.calibration = calibration
        if self.familiarity is not None:
            self.familiarity.set_reference(calibration.reference)

    @property
    def first_source_folder(self) -> Path | None:
        """The folder of its first (often only) training source."""
        return next(iter(self.data_roots.values())) if self.data_roots else None

    def locate(self, relpath: str) -> Path:
        """The file behind a path of the run's `split.csv`."""
        return locate(self.data_roots, relpath)

    @property
    def run_dir(self) -> Path | None:
        """`<run>` for `<run>/checkpoints/x.ckpt`: where `split.csv` lives."""
        return self.checkpoint.parent.parent if self.checkpoint.parent.name == "checkpoints" else None

    def decision(self, configured: float | None = None, abstain: Mapping[str, Any] | bool | None = None) -> Threshold:
        """The rule it decides by: its calibration record (`threshold=` overrides the threshold; `abstain.enabled`
        false drops the prediction sets and the familiarity cutoff)."""
        return verdict_rule(self.calibration, configured, abstain)

    def val_auroc(self) -> tuple[float, float, float] | None:
        """The validation AUROC and its 95% interval, from the validation predictions saved with the weights, as
        train.py computed them for metrics.json (NaN bounds: too few images to resample); None without them."""
        if not self.val_predictions:
            return None
        labels = np.asarray(self.val_predictions["labels"]).astype(int)
        logits = np.asarray(self.val_predictions["logits"], dtype=np.float64)
        if len(set(labels.tolist())) < 2 or not np.isfinite(logits).all():
            return None
        bands = metric_intervals(labels, logits, seed=self.seed)
        return core_metrics(labels, logits)["auroc"], bands["auroc_lo"], bands["auroc_hi"]

    def weakness(self, at_most: float = WEAK_AUROC) -> str:
        """A plain warning when the detector itself is weak (its validation AUROC's 95% interval reaches `at_most`
        or lower), else ""."""
        measured = self.val_auroc()
        if measured is None:
            return ""
        auroc, low, high = measured
        images = len(self.val_predictions["labels"])
        if not np.isfinite([low, high]).all():  # too few images to resample: no interval at all
            return (
                f"This detector is weak: its validation AUROC of {auroc:.2f} comes from only {images} validation "
                "images, too few to bound it. Treat its verdicts as weak evidence."
            )
        if low > at_most:
            return ""
        return (
            f"This detector is weak: its validation AUROC is {auroc:.2f} (95% interval {low:.2f} to {high:.2f}, "
            f"reaching {at_most:g} or lower, with {images} validation images). Treat its verdicts as weak "
            "evidence."
        )

    def preprocess(
        self, path: Path, min_side: int | None = None
    ) -> tuple[torch.Tensor | None, ImageDecodeError | None]:
        """The model input for one file (uint8 CHW, as training's evaluation sees it), or None and why the file
        cannot be used (the training run's usable-image rule unless `min_side` says otherwise)."""
        tensor, _, error = InferenceDataset([path], self.data_config, self._min_side(min_side))[0]
        return tensor, error

    def score_files(
        self,
        paths: Sequence[Path],
        batch_size: int = 64,
        num_workers: int = 0,
        device: str = "cpu",
        perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
        min_side: int | None = None,
        description: str | None = None,
        keep_blocks: Callable[[int], Sequence[int]] | None = None,
    ) -> Scores:
        """One logit and one familiarity per file in batches (NaN for a file that cannot be used), and each
        failure by index: every command scores through this."""
        dataset = InferenceDataset(paths, self.data_config, self._min_side(min_side), perturb)
        model = self.model.to(device)
        return predict_logits(model, dataset, batch_size, num_workers, description, self.familiarity, keep_blocks)

    def fit_familiarity(
        self,
        train: Sequence[tuple[Path, int]],
        layers: str = "last_stage",
        batch_size: int = 64,
        num_workers: int = 0,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Fit its familiarity statistics on training files (path, label), attach them, and return their state
        (for the checkpoint). The cutoff is the calibration's."""
        paths = [p for p, _ in train]
        blocks = partial(familiarity_blocks, layers=layers)
        what = "Familiarity: scoring the training images"
        scores = self.score_files(paths, batch_size, num_workers, device, description=what, keep_blocks=blocks)
        if not scores.features:
            raise ValueError("no usable training image to fit the familiarity score on")
        kept = [i for i in range(len(paths)) if i not in scores.errors]
        finite = np.isfinite(next(f for f in scores.features if f is not None)).all(axis=1)
        if not finite.all():  # a diverged run's features: what is left, or the reason there is nothing
            message = "%d of %d training images have non-finite features: left out of the familiarity fit"
            log.warning(message, int((~finite).sum()), len(finite))
        features = [None if f is None else f[finite] for f in scores.features]
        labels = np.array([train[i][1] for i in kept])[finite]
        state = fit_familiarity(features, labels, layers)
        self.familiarity = Familiarity(state)
        return state

    def fit_familiarity_on_run(self, layers: str, batch_size: int = 64, num_workers: int = 0, device: str = "cpu"):
        """Familiarity statistics from its own run's training split (`split.csv`), for a checkpoint saved without
        them (a run stopped before its end); None, with the reason logged, when that split cannot be read."""
        split_csv = self.run_dir / "split.csv" if self.run_dir else None
        if not self.data_roots or not (split_csv and split_csv.is_file()):
            log.warning("No familiarity score for %s: no split.csv of its run beside it", self.checkpoint.name)
            return None
        train = [(self.locate(p), y) for p, y in read_split_csv(split_csv)["train"]]
        log.info("Fitting the familiarity score on its run's %d training images", len(train))
        try:
            return self.fit_familiarity(train, layers, batch_size, num_workers, device)
        except ValueError as error:  # the training images moved, say: the other verdicts still stand
            log.warning("No familiarity score for %s: %s", self.checkpoint.name, error)
            return None

    def _min_side(self, min_side: int | None) -> int:
        return self.min_image_side if min_side is None else int(min_side)


class CheckpointError(UserError, ValueError):
    pass


def read_checkpoint(
    ckpt_path: str | Path, hint: str = "give a .ckpt that train.py wrote (a run keeps them in <run dir>/checkpoints/)"
) -> dict[str, Any]:
    """The checkpoint's data, or one line naming the file and what is wrong with it (missing, a folder, unreadable,
    truncated, holding code, not a checkpoint of this project). Only plain data is ever unpickled
    (`weights_only=True`, which `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot override when it is passed)."""
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"ckpt_path={ckpt_path}: a folder, not a checkpoint file: {hint}")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file: {hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as err:
        raise CheckpointError(f"ckpt_path={ckpt_path}: cannot be read ({err.strerror})") from err
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # a class or function: the unpickler would call it
            raise CheckpointError(
                f"ckpt_path={ckpt_path}: refused: it holds pickled objects other than tensors and plain data (code "
                "that loading would run); a checkpoint of this project never does"
            ) from err
        raise CheckpointError(f"ckpt_path={ckpt_path}: not a PyTorch checkpoint: {hint}") from err
    except Exception as err:  # torch.load raises whatever its unpickler or zip reader meets
        damaged = "truncated or damaged" if _zip_magic(path) else "not a PyTorch checkpoint"
        raise CheckpointError(f"ckpt_path={ckpt_path}: {damaged}: {hint}") from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        raise CheckpointError(f"ckpt_path={ckpt_path}: a PyTorch file, but not a detector checkpoint: {hint}")
    return checkpoint


def _zip_magic(path: Path) -> bool:
    """A torch.save file starts as a zip archive: a truncated one keeps its first bytes, not its directory."""
    with path.open("rb") as file:
        return file.read(4) == b"PK\x03\x04"


class UncalibratedError(CheckpointError):
    pass


def load_detector(ckpt_path: str | Path, calibrated: bool = True) -> Detector:
    """Rebuild the model from its checkpoint alone: no hub download, no weight file, no pickled code. A checkpoint
    without a calibration record (a run stopped before its end, an older version) is refused in one line naming
    calibrate.py, unless `calibrated` is false (calibrate.py itself)."""
    checkpoint = read_checkpoint(ckpt_path)
    if calibrated and CALIBRATION_KEY not in checkpoint:
        raise UncalibratedError(
            f"ckpt_path={ckpt_path}: no calibration record (a run stopped before its end, or a checkpoint older than "
            f"calibration records): run python calibrate.py ckpt_path={ckpt_path} data.root=FOLDER (a labelled AI/ + "
            "Real/ folder of the images it will judge)"
        )
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    hparams = dict(checkpoint["hyper_parameters"], pretrained=False, weights=None, compile=False)
    name = hparams["backbone"]
    if "architecture" in hparams:  # rebuild hf-hub: / local-dir: backbones from the registry, offline
        hparams["backbone"], hparams["model_kwargs"] = hparams.pop("architecture"), hparams.pop("architecture_kwargs")
    model = DetectorModule(**hparams)
    model.hparams["backbone"] = name
    model.load_state_dict(checkpoint["state_dict"])
    epoch = checkpoint.get("epoch")  # Lightning's count from 0; the log and file names count from 1
    log.info("Loaded %s from %s (after epoch %s)", name, ckpt_path, "?" if epoch is None else epoch + 1)
    return detector_of(model, checkpoint, ckpt_path)


def detector_of(model: DetectorModule, checkpoint: Mapping[str, Any], path: Path) -> Detector:
    """A Detector around a model and what its checkpoint (or what train.py is about to write) holds beside the
    weights: load_detector's and train.py's one way to it. In float32, as every command scores (a `16-true` run's
    weights included)."""
    model.float().eval()
    state = checkpoint.get(DATAMODULE_KEY, {})
    data_config = dict(state.get("data_config") or model.data_config)
    model.set_normalisation(data_config["mean"], data_config["std"])  # the training run's, whatever the source
    labels = {int(k): v for k, v in state.get("labels", {"0": "Real", "1": "AI"}).items()}
    familiarity, calibration = checkpoint.get("familiarity"), checkpoint.get(CALIBRATION_KEY)
    return Detector(
        model,
        data_config,
        labels,
        roots_from_state(state.get("root")),
        Path(path),
        int(state.get("min_image_side", 8)),
        dict(checkpoint.get("val_metrics") or {}),
        checkpoint.get("val_predictions"),
        Familiarity(familiarity) if familiarity else None,
        Calibration.from_state(calibration) if calibration else None,
        int(state.get("seed", 0)),
    )


def store_in_checkpoint(ckpt_path: str | Path, **entries: Any) -> None:
    """Add entries to a saved checkpoint."""
    save_checkpoint(torch.load(ckpt_path, map_location="cpu", weights_only=True) | entries, Path(ckpt_path))


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
