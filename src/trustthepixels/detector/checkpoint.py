"""Load a trained detector for evaluation, prediction and export: weights, preprocessing and labels."""

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
from trustthepixels.detector.predictions import Threshold, decision_threshold
from trustthepixels.detector.scoring import InferenceDataset, Scores, predict_logits
from trustthepixels.errors import UserError
from trustthepixels.metrics.conformal import ConformalSets, validation_conformal
from trustthepixels.metrics.core import core_metrics, validation_threshold
from trustthepixels.metrics.intervals import metric_intervals
from trustthepixels.metrics.settings import DEFAULT_ALPHA, DEFAULT_QUANTILE
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
    val_threshold: float | None = None  # the P(AI) threshold its validation split chose (eval.py's rule)
    conformal: ConformalSets | None = None  # its validation split's prediction sets, at the default level
    val_predictions: dict[str, Any] | None = None  # {"logits", "labels"}: to fit the sets at another level
    familiarity: Familiarity | None = None  # how unlike its training images an image is (model/familiarity.py)

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

    def decision(self, configured: float | None = None, abstain: Mapping[str, Any] | None = None) -> Threshold:
        """The rule it decides by (`validation_decision`, from what the checkpoint carries)."""
        return validation_decision(
            self.val_predictions, abstain, configured, self.val_threshold, self.conformal,
            self.familiarity.quantile if self.familiarity is not None else None, self.checkpoint.name,
        )  # fmt: skip

    def weakness(self, at_most: float = WEAK_AUROC) -> str:
        """A plain warning when the detector itself is weak (its validation AUROC's 95% interval reaches `at_most`
        or lower), else "": computed from the validation predictions saved with the weights."""
        if not self.val_predictions:
            return ""
        labels = np.asarray(self.val_predictions["labels"]).astype(int)
        logits = np.asarray(self.val_predictions["logits"], dtype=np.float64)
        if len(set(labels.tolist())) < 2 or not np.isfinite(logits).all():
            return ""
        auroc = core_metrics(labels, logits)["auroc"]
        low, high = (metric_intervals(labels, logits, n_resamples=1000, seed=0)[k] for k in ("auroc_lo", "auroc_hi"))
        if low > at_most:
            return ""
        return (
            f"This detector is weak: its validation AUROC is {auroc:.2f} (95% interval {low:.2f} to {high:.2f}, "
            f"reaching {at_most:g} or lower, with {len(labels)} validation images). Treat its verdicts as weak "
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
        val: Sequence[Path],
        abstain: Mapping[str, Any] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Fit its familiarity score on training files (path, label) and validation files, attach it, and return
        its state (for the checkpoint)."""
        abstain = abstain or {}
        layers = str(abstain.get("familiarity_layers", "last_stage"))
        fitted = []
        for part, paths in (("training", [p for p, _ in train]), ("validation", list(val))):
            scores = self.score_files(
                paths, batch_size, num_workers, device, description=f"Familiarity: scoring the {part} images",
                keep_blocks=partial(familiarity_blocks, layers=layers),
            )  # fmt: skip
            if not scores.features:
                raise ValueError(f"no usable {part} image to fit the familiarity score on")
            fitted.append((scores.features, [i for i in range(len(paths)) if i not in scores.errors]))
        (train_blocks, kept), (val_blocks, _) = fitted
        state = fit_familiarity(
            train_blocks,
            np.array([train[i][1] for i in kept]),
            val_blocks,
            float(abstain.get("familiar_quantile") or DEFAULT_QUANTILE),
            layers,
        )
        self.familiarity = Familiarity(state)
        return state

    def fit_missing_familiarity(
        self, abstain: Mapping[str, Any] | None, batch_size: int = 64, num_workers: int = 0, device: str = "cpu"
    ) -> None:
        """A checkpoint without a familiarity score (`last.ckpt`, the best one of a run stopped before its end, one
        of an older version) gets one as train.py fits it, on its run's own training and validation split: in
        memory (no command rewrites a checkpoint), and in every command, so each gives its images the same verdicts."""
        split_csv = self.run_dir / "split.csv" if self.run_dir else None
        wanted = abstain and abstain.get("enabled", True) and abstain.get("familiar_quantile", 0) is not None
        if self.familiarity is not None or not wanted or not self.data_roots or not (split_csv and split_csv.is_file()):
            return
        parts = read_split_csv(split_csv)
        log.info("Fitting a familiarity score on the run's %d training images (%s has none)", len(parts["train"]),
                 self.checkpoint.name)  # fmt: skip
        try:
            self.fit_familiarity(
                [(self.locate(p), y) for p, y in parts["train"]], [self.locate(p) for p, _ in parts["val"]], abstain,
                batch_size, num_workers, device,
            )  # fmt: skip
        except ValueError as error:  # the training images moved, say: the other verdicts still stand
            log.warning("No familiarity score for %s: %s", self.checkpoint.name, error)

    def _min_side(self, min_side: int | None) -> int:
        return self.min_image_side if min_side is None else int(min_side)


def validation_decision(
    val_predictions: Mapping[str, Any] | None,
    abstain: Mapping[str, Any] | None = None,
    configured: float | None = None,
    val_threshold: float | None = None,
    conformal: ConformalSets | None = None,
    familiarity_quantile: float | None = None,
    what: str = "the run",
) -> Threshold:
    """The rule every command decides by: `threshold=` when set, else the validation threshold (`val_threshold`, or
    chosen here on `val_predictions`; 0.5 without them); with `abstain.enabled`, the validation prediction sets at
    `abstain.alpha` say when the detector cannot tell, and the familiarity score (cut at `abstain.familiar_quantile`
    of the validation split; `familiarity_quantile`, its fitted cut, is None without a score) when an image is unlike
    anything it learned from. train.py's test predictions and serve.py's ONNX backend decide here too."""
    if val_threshold is None:
        val_threshold = validation_threshold(val_predictions, what)
    if not abstain or not abstain.get("enabled", True):
        return decision_threshold(configured, val_threshold)
    sets, familiar_min = None, None
    alpha = float(abstain.get("alpha", DEFAULT_ALPHA))
    if conformal is not None and conformal.alpha == alpha:
        sets = conformal
    elif (state := validation_conformal(val_predictions, alpha)) is not None:
        sets = ConformalSets.from_state(state)
    else:
        log.warning("No prediction sets for %s (no usable validation predictions): no abstention", what)
    if "familiar_quantile" in abstain and abstain["familiar_quantile"] is None:
        pass  # the prediction sets alone
    elif familiarity_quantile is None:
        log.warning("%s has no familiarity score, and no run split to fit one on: no `unfamiliar` verdicts", what)
    else:
        familiar_min = 1.0 - float(abstain.get("familiar_quantile", familiarity_quantile))
    return decision_threshold(configured, val_threshold, sets, familiar_min)


def resolve_device(name: str) -> str:
    """device=auto: CUDA when there is one, else the CPU; any other value is torch's own device name."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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


def load_detector(ckpt_path: str | Path) -> Detector:
    """Rebuild the model from its checkpoint alone: no hub download, no weight file, no pickled code."""
    checkpoint = read_checkpoint(ckpt_path)
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    hparams = dict(checkpoint["hyper_parameters"], pretrained=False, weights=None, compile=False)
    name = hparams["backbone"]
    if "architecture" in hparams:  # rebuild hf-hub: / local-dir: backbones from the registry, offline
        hparams["backbone"], hparams["model_kwargs"] = hparams.pop("architecture"), hparams.pop("architecture_kwargs")
    model = DetectorModule(**hparams)
    model.hparams["backbone"] = name
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    log.info("Loaded %s from %s (epoch %s)", name, ckpt_path, checkpoint.get("epoch"))
    state = checkpoint.get(DATAMODULE_KEY, {})
    data_config = dict(state.get("data_config") or model.data_config)
    model.set_normalisation(data_config["mean"], data_config["std"])  # the training run's, whatever the source
    labels = {int(k): v for k, v in state.get("labels", {"0": "Real", "1": "AI"}).items()}
    roots = roots_from_state(state.get("root"))
    # Chosen when the checkpoint was saved; a checkpoint from before that: on the predictions saved with it.
    threshold = checkpoint.get("val_threshold")
    if threshold is None:
        threshold = validation_threshold(checkpoint.get("val_predictions"), ckpt_path.name)
    conformal = checkpoint.get("conformal")
    if conformal is None:  # likewise
        conformal = validation_conformal(checkpoint.get("val_predictions"))
    familiarity = checkpoint.get("familiarity")  # fitted at the end of train.py
    return Detector(
        model,
        data_config,
        labels,
        roots,
        ckpt_path,
        int(state.get("min_image_side", 8)),
        dict(checkpoint.get("val_metrics") or {}),
        threshold,
        ConformalSets.from_state(conformal) if conformal else None,
        checkpoint.get("val_predictions"),
        Familiarity(familiarity) if familiarity else None,
    )


def store_in_checkpoint(ckpt_path: str | Path, **entries: Any) -> None:
    """Add entries to a saved checkpoint, atomically (a reader never sees half a file)."""
    path = Path(ckpt_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint.update(entries)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
