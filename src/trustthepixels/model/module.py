"""The LightningModule: a timm backbone fine-tuned as a binary AI-vs-real classifier (label 1 = AI)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from trustthepixels.config import validated
from trustthepixels.metrics.core import core_metrics
from trustthepixels.model.backbone import (
    backbone_data_config,
    create_backbone,
    freeze_all_but_last,
    resolve_architecture,
)
from trustthepixels.model.familiarity import pool
from trustthepixels.model.gather import Predictions, source_masks
from trustthepixels.model.schedule import scaled_lr
from trustthepixels.model.settings import ModelSettings, flip_mode

log = logging.getLogger(__name__)


class DetectorModule(LightningModule):
    """Takes uint8 (or [0, 1] float) NCHW images, normalises them on the device, returns one logit each.

    `settings` are the `model` group's (`ModelSettings` declares each one, its default and what it does). The
    `_partial_` optimizer and scheduler configs are instantiated in `configure_optimizers` with the parameter groups
    (optimizer) and the optimizer plus the run's total steps (scheduler). They are kept as plain dicts, so a
    checkpoint holds data only and loads with `torch.load(weights_only=True)`.
    """

    def __init__(self, backbone: str, optimizer: Mapping[str, Any] | None = None, **settings: Any):
        super().__init__()
        settings = {"backbone": backbone, **settings} | ({"optimizer": optimizer} if optimizer is not None else {})
        if "flip" in settings:  # true and false, which older checkpoints hold
            settings["flip"] = flip_mode(settings["flip"])
        s = validated(ModelSettings, settings, "model.")  # typed and checked as the composed config is (or one line)
        # One linear probe, however it is asked for: the classifier alone learns (as the feature cache needs).
        freeze_backbone = s.freeze_backbone or s.trainable_blocks == 0
        hparams = {k: v for k, v in vars(s).items() if not k.startswith("_")} | {"freeze_backbone": freeze_backbone}
        self.save_hyperparameters(hparams, logger=False)  # plain data: checkpoints load with weights_only
        self.backbone = create_backbone(s.backbone, s.pretrained, s.weights, num_classes=1, **s.model_kwargs)
        # What rebuilds this network from a checkpoint alone, even for hf-hub: and local-dir: names.
        architecture, arch_kwargs = resolve_architecture(s.backbone, self.backbone, s.model_kwargs)
        self.hparams["architecture"], self.hparams["architecture_kwargs"] = architecture, arch_kwargs
        self.data_config = backbone_data_config(self.backbone)
        self.memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
        self.backbone.to(memory_format=self.memory_format)
        # Not persistent: they follow from the backbone name.
        self.register_buffer("scale", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.empty(1, 3, 1, 1), persistent=False)
        self.set_normalisation(self.data_config["mean"], self.data_config["std"])
        self.head = self.backbone.get_classifier()
        self.parameter_count = sum(p.numel() for p in self.backbone.parameters())
        # Set by train() from data.pair_augment: training batches come as pairs (a photo, its reconstruction) at
        # even positions, and each pair is flipped alike.
        self.paired_batches = False
        if freeze_backbone:  # a linear probe: only the classifier learns; norms and dropout stay in eval mode
            self.backbone.requires_grad_(False)
            self.head.requires_grad_(True)
            self.backbone.eval()
        # Partial fine-tuning: the modules of the frozen blocks, kept in eval mode (their norms' statistics too).
        self.frozen: list[nn.Module] = (
            freeze_all_but_last(self.backbone, s.trainable_blocks)
            if s.trainable_blocks is not None and not freeze_backbone
            else []
        )
        self.loss_fn = nn.BCEWithLogitsLoss()
        # A running figure while training (val and test use core_metrics). validate_args=False: its input checks
        # read values back from the GPU, which made every training step wait for the forward pass to finish.
        self.train_acc = BinaryAccuracy(validate_args=False)
        self._predictions: dict[str, Predictions] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}  # per stage, as computed (Lightning logs float32)
        # Per stage, the last pass over the whole split: (dataset indices, logits, labels); the test one
        # becomes predictions.csv, the val one travels in checkpoints for the val intervals.
        self.last_predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def set_normalisation(self, mean: Any, std: Any) -> None:
        """(x / 255 - mean) / std as one scale and shift of the uint8 values."""
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.scale = (1 / (255 * std)).view(1, 3, 1, 1).to(self.scale)
        self.shift = (-mean / std).view(1, 3, 1, 1).to(self.shift)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) to logits (N,); pooled backbone features (N, D) go through the head alone."""
        if images.dim() == 2:
            return self.head(images).squeeze(-1)
        return self.backbone(self._normalise(images)).squeeze(-1)

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and, from the same pass, the pooled feature blocks the familiarity score reads: each stage's
        output (timm's `forward_intermediates`, where the backbone has it) and the classifier's own features last."""
        x = self._normalise(images)
        if hasattr(self.backbone, "forward_intermediates"):
            final, stages = self.backbone.forward_intermediates(x)
        else:
            final, stages = self.backbone.forward_features(x), []
        pre_logits = self.backbone.forward_head(final, pre_logits=True)
        return self.head(pre_logits).squeeze(-1), [*(pool(s) for s in stages), pool(pre_logits)]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1]) images to the backbone's input, in its dtype (bf16-true and 16-true included)."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255
        x = torch.addcmul(self.shift.float(), x, self.scale.float())
        return x.to(self.scale.dtype).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier sees (timm's pre-logits), for the feature cache."""
        return self.backbone.forward_head(self.backbone.forward_features(self._normalise(images)), pre_logits=True)

    def train(self, mode: bool = True) -> DetectorModule:
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.backbone.eval()
            self.head.train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's own mode flag after validation and never calls .train() at the
        # start of fit: keep a frozen backbone's BatchNorm statistics and dropout off explicitly.
        if self.hparams.freeze_backbone or self.frozen:
            self.train()

    def random_flip(self, images: torch.Tensor) -> torch.Tensor:
        """Random flips of a training batch on the device, a few uint8 ops for the whole batch: horizontal, or
        any of the square's 8 symmetries (`dihedral`: flips and quarter turns, for square inputs). Drawn in the
        training step, after `StepSeed` has seeded it, so a resumed run flips the same images. With paired batches
        (data.pair_augment) one draw serves the two images at positions 2k and 2k+1."""
        mode = flip_mode(self.hparams.flip)
        if mode == "none" or images.dim() != 4:
            return images
        n = len(images)
        draws = (n + 1) // 2 if self.paired_batches else n

        def per_image(values: torch.Tensor) -> torch.Tensor:
            return (values.repeat_interleave(2)[:n] if self.paired_batches else values)[:, None, None, None]

        flip = per_image(torch.rand(draws, device=images.device) < 0.5)
        images = torch.where(flip, images.flip(-1), images)
        if mode == "dihedral" and images.shape[-1] == images.shape[-2]:
            turns = per_image(torch.randint(0, 4, (draws,), device=images.device))
            for k in (1, 2, 3):
                images = torch.where(turns == k, torch.rot90(images, k, dims=(-2, -1)), images)
        return images

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.backbone.compile()  # in place: state_dict keys, and so checkpoints, stay the same
            self._compiled = True

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        logits = self(self.random_flip(images))
        loss = self.loss_fn(logits.float(), labels.float())
        self.train_acc(logits.detach().float().sigmoid(), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    # Validation and test: every prediction is kept, gathered across processes at the end of the pass, and
    # the split's metrics computed once from all of them, by the same function eval.py uses.
    def _collect(self, batch, stage: str) -> None:
        images, labels, indices = batch
        # In full precision whatever the trainer's: mixed precision is a training speed-up, and eval.py,
        # predict.py, serve.py and the ONNX export all score in float32. A bf16 pass would report numbers
        # (and pick a checkpoint and a threshold) that no later command reproduces.
        with torch.autocast(self.device.type, enabled=False):
            logits = self(images).float()
        self._predictions.setdefault(stage, Predictions()).add(indices, logits, labels)

    def _report(self, stage: str) -> None:
        predictions = self._predictions.pop(stage, None)
        if predictions is None:
            return
        indices, logits, labels = predictions.gathered(self)
        metrics = core_metrics(labels, logits)
        self.last_metrics[stage] = {f"{stage}/{name}": value for name, value in metrics.items()}  # full precision
        self.last_predictions[stage] = (indices, logits, labels)
        for name, value in metrics.items():  # every rank holds the same values: nothing to reduce
            self.log(f"{stage}/{name}", value, prog_bar=name in ("auroc", "acc", "loss"), rank_zero_only=False)
        for source, chosen in source_masks(self._sources(stage), indices).items():  # a union of sources
            for name, value in core_metrics(labels[chosen], logits[chosen]).items():
                self.last_metrics[stage][f"{stage}/{name}/{source}"] = value
                self.log(f"{stage}/{name}/{source}", value, rank_zero_only=False)

    def _sources(self, stage: str) -> list[str] | None:
        """Each image's source in this stage's dataset, when the DataModule holds several sources."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        sources = getattr(datamodule, "sources", None)
        return sources(stage) if callable(sources) else None

    def validation_step(self, batch, batch_idx: int) -> None:
        self._collect(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._collect(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._report("val")

    def on_test_epoch_end(self) -> None:
        self._report("test")

    def configure_optimizers(self) -> Any:
        # No weight decay on biases, norms and what the backbone lists in no_weight_decay() (ViT position
        # embeddings, cls token): what timm.optim.create_optimizer_v2 does, kept as groups here so that any
        # `_partial_` torch optimizer config works. Named groups name the LR curves.
        weight_decay = self.hparams.optimizer.get("weight_decay", 0.0)
        skip = getattr(self.backbone, "no_weight_decay", set)()
        groups = param_groups_weight_decay(self.backbone, weight_decay, no_weight_decay_list=skip)
        for group in groups:
            group["name"] = "decay" if group["weight_decay"] else "no_decay"
        optimizer = instantiate(self.hparams.optimizer, **self._batch_scaled_lr())(params=groups)
        if not self.hparams.scheduler:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    def _batch_scaled_lr(self) -> dict[str, float]:
        """`lr` scaled from `lr_batch` to this run's images per optimizer step (all GPUs, gradient accumulation);
        nothing to change when lr_batch is null or the batch is the same."""
        lr, lr_batch = self.hparams.optimizer.get("lr"), self.hparams.get("lr_batch")
        data_settings = getattr(getattr(self._trainer, "datamodule", None), "settings", None)
        per_device = getattr(data_settings, "batch_size", None)
        if lr is None or not lr_batch or not per_device:
            return {}
        batch = per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches
        if batch == lr_batch:
            return {}
        scaled = scaled_lr(float(lr), batch, lr_batch, self.hparams.optimizer["_target_"])
        log.info("Learning rate %.3g (set for batch %d) scaled to %.3g for batch %d", lr, lr_batch, scaled, batch)
        return {"lr": scaled}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Each checkpoint carries the validation metrics of the epoch it was saved at. What decides verdicts is fitted
        # on the calibration part at the end of train.py (metrics/calibration.py), never on these images.
        checkpoint["val_metrics"] = self.last_metrics.get("val") or {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
        if "val" in self.last_predictions:  # what the val metrics' intervals are computed from
            indices, logits, labels = self.last_predictions["val"]
            checkpoint["val_predictions"] = {
                "indices": indices.tolist(),
                "logits": logits.tolist(),
                "labels": labels.tolist(),
            }
