"""Grad-CAM overlays: where in the image the evidence for "AI" was found (the `grad-cam` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trustthepixels.errors import UserError
from trustthepixels.model.module import DetectorModule


class _AILogit(torch.nn.Module):
    """The detector with a (N, 1) output, so Grad-CAM's class-0 target is the AI logit. Input: floats in [0, 1].

    Remembers the input's height and width, so that a ViT's tokens can be laid back on their patch grid."""

    def __init__(self, model: DetectorModule):
        super().__init__()
        self.model = model
        self.input_hw: tuple[int, int] = (0, 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.input_hw = tuple(images.shape[-2:])
        return self.model(images).unsqueeze(-1)


def _target_layer(model: DetectorModule) -> torch.nn.Module:
    """The last feature stage timm reports for the backbone (layer4, blocks.6, stages.3, blocks.11, ...)."""
    info = getattr(model.backbone, "feature_info", None)
    if not info:
        raise UserError(
            f"explain=true: {model.hparams.backbone} has no spatial feature map for Grad-CAM to weigh (a spectrum "
            "model sees frequencies, not places). Run predict.py with explain=false."
        )
    return model.backbone.get_submodule(info[-1]["module"])


def _vit_reshape(model: DetectorModule, wrapper: _AILogit):
    """ViT blocks output tokens (N, prefix + h * w, D): drop the class and register tokens and lay the patch
    tokens on their (h, w) grid, for any input size (non-square included)."""
    prefix = getattr(model.backbone, "num_prefix_tokens", None)
    if prefix is None:
        return None
    patch = model.backbone.patch_embed.patch_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 4:  # already a (N, h, w, D) grid
            return tokens.permute(0, 3, 1, 2)
        h, w = (wrapper.input_hw[0] // patch[0], wrapper.input_hw[1] // patch[1])
        return tokens[:, prefix:, :].reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)

    return reshape


class GradCamExplainer:
    def __init__(self, model: DetectorModule):
        from pytorch_grad_cam import GradCAM

        wrapper = _AILogit(model)
        self.cam = GradCAM(
            model=wrapper, target_layers=[_target_layer(model)], reshape_transform=_vit_reshape(model, wrapper)
        )

    def overlay(self, image: torch.Tensor, out_path: Path) -> None:
        """Save the model's view of `image` (uint8 CHW, after the eval transform) with the AI heat map on it."""
        self.overlay_image(image).save(out_path)

    def overlay_image(self, image: torch.Tensor) -> Image.Image:
        """The model's view of `image` (uint8 CHW, after the eval transform) with the AI heat map on it."""
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        rgb = image.float().div(255)
        # A gradient path from the input: with a frozen backbone (a linear probe) no weight asks for one, and
        # Grad-CAM needs the gradient at the target layer's activations.
        heat = self.cam(input_tensor=rgb.unsqueeze(0).requires_grad_(True), targets=[ClassifierOutputTarget(0)])[0]
        picture = rgb.permute(1, 2, 0).numpy().astype(np.float32)
        return Image.fromarray(show_cam_on_image(picture, heat, use_rgb=True))
