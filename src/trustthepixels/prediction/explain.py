"""Grad-CAM overlays: where in the image the evidence for "AI" was found (the `grad-cam` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trustthepixels.model.module import DetectorModule


class _AILogit(torch.nn.Module):
    """The detector with a (N, 1) output, so Grad-CAM's class-0 target is the AI logit. Input: floats in [0, 1]."""

    def __init__(self, model: DetectorModule):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).unsqueeze(-1)


def _target_layer(model: DetectorModule) -> torch.nn.Module:
    """The last feature stage timm reports for the backbone (layer4, blocks.6, stages.3, blocks.11, ...)."""
    name = model.backbone.feature_info[-1]["module"]
    return model.backbone.get_submodule(name)


def _vit_reshape(model: DetectorModule):
    prefix = getattr(model.backbone, "num_prefix_tokens", None)
    if prefix is None:
        return None

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        side = round(patches.shape[1] ** 0.5)
        return patches.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)

    return reshape


class GradCamExplainer:
    def __init__(self, model: DetectorModule):
        from pytorch_grad_cam import GradCAM

        self.cam = GradCAM(
            model=_AILogit(model), target_layers=[_target_layer(model)], reshape_transform=_vit_reshape(model)
        )

    def overlay(self, image: torch.Tensor, out_path: Path) -> None:
        """Save the model's view of `image` (uint8 CHW, after the eval transform) with the AI heat map on it."""
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        rgb = image.float().div(255)
        heat = self.cam(input_tensor=rgb.unsqueeze(0), targets=[ClassifierOutputTarget(0)])[0]
        picture = rgb.permute(1, 2, 0).numpy().astype(np.float32)
        Image.fromarray(show_cam_on_image(picture, heat, use_rgb=True)).save(out_path)
