"""The LightningModule: a timm backbone fine-tuned as a binary AI-vs-real classifier (label 1 = AI)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryAveragePrecision, BinaryF1Score

from trustthepixels.config import to_plain
from trustthepixels.model.backbone import backbone_data_config, create_backbone


def binary_metrics(prefix: str) -> MetricCollection:
    """Accuracy and F1 at threshold 0.5, plus the threshold-free AUROC and average precision."""
    return MetricCollection(
        {"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "ap": BinaryAveragePrecision(), "f1": BinaryF1Score()},
        prefix=prefix,
    )


class DetectorModule(LightningModule):
    """Takes uint8 (or [0, 1] float) NCHW images, normalises them on the device, returns one logit each.

    `optimizer` and `scheduler` are `_partial_` Hydra configs, instantiated in `configure_optimizers` with the
    parameter groups (optimizer) and the optimizer plus the run's total steps (scheduler). They are kept as
    plain dicts, so a checkpoint holds data only and loads with `torch.load(weights_only=True)`.
    """

    def __init__(
        self,
        backbone: str,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        pretrained: bool = True,
        weights: str | Path | None = None,
        model_kwargs: dict[str, Any] | None = None,
        channels_last: bool = False,
        flip: bool = True,
        compile: bool = False,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "optimizer": to_plain(optimizer),
                "scheduler": to_plain(scheduler),
                "pretrained": pretrained,
                "weights": str(weights) if weights else None,
                "model_kwargs": to_plain(model_kwargs) or {},
                "channels_last": channels_last,
                "flip": flip,
                "compile": compile,
                "freeze_backbone": freeze_backbone,
            },
            logger=False,
        )
        self.backbone = create_backbone(backbone, pretrained, weights, num_classes=1, **(model_kwargs or {}))
        self.data_config = backbone_data_config(self.backbone)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone.to(memory_format=self.memory_format)
        # (x / 255 - mean) / std as one scale and shift of the uint8 values; not persistent: they follow from
        # the backbone name.
        mean, std = torch.tensor(self.data_config["mean"]), torch.tensor(self.data_config["std"])
        self.register_buffer("scale", (1 / (255 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1), persistent=False)
        self.head = self.backbone.get_classifier()
        if freeze_backbone:  # a linear probe: only the classifier learns; norms and dropout stay in eval mode
            self.backbone.requires_grad_(False)
            self.head.requires_grad_(True)
            self.backbone.eval()
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.train_metrics = binary_metrics("train/")
        self.val_metrics = binary_metrics("val/")
        self.test_metrics = binary_metrics("test/")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) to logits (N,); pooled backbone features (N, D) go through the head alone."""
        if images.dim() == 2:
            return self.head(images).squeeze(-1)
        return self.backbone(self._normalise(images)).squeeze(-1)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() if images.dtype == torch.uint8 else images * 255
        return torch.addcmul(self.shift, x, self.scale).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier sees (timm's pre-logits), for the feature cache."""
        return self.backbone.forward_head(self.backbone.forward_features(self._normalise(images)), pre_logits=True)

    def train(self, mode: bool = True) -> DetectorModule:
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.backbone.eval()
            self.head.train(mode)
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's own mode flag after validation and never calls .train() at the
        # start of fit: keep a frozen backbone's BatchNorm statistics and dropout off explicitly.
        if self.hparams.freeze_backbone:
            self.train()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Random horizontal flips of training batches, on the device (one uint8 op for the whole batch)."""
        trainer = self._trainer  # None outside a Trainer (prediction, export)
        if trainer is not None and trainer.training and self.hparams.flip and batch[0].dim() == 4:
            images, labels = batch
            flip = torch.rand(len(images), device=images.device) < 0.5
            batch = (torch.where(flip[:, None, None, None], images.flip(-1), images), labels)
        return batch

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.backbone.compile()  # in place: state_dict keys, and so checkpoints, stay the same
            self._compiled = True

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss_fn(logits, labels.float())
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach().float().sigmoid(), labels)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=len(labels),
            sync_dist=stage != "train",
        )  # epoch means across ranks; torchmetrics syncs its own states
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        # No weight decay on biases and norm parameters (timm's convention); named groups name the LR curves.
        weight_decay = self.hparams.optimizer.get("weight_decay", 0.0)
        groups = param_groups_weight_decay(self.backbone, weight_decay)
        for group in groups:
            group["name"] = "decay" if group["weight_decay"] else "no_decay"
        optimizer = instantiate(self.hparams.optimizer)(params=groups)
        if not self.hparams.scheduler:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Each checkpoint carries the validation metrics of the epoch it was saved at.
        checkpoint["val_metrics"] = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
