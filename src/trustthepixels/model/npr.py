"""NPR (Tan et al., CVPR 2024, "Rethinking the up-sampling operations in CNN-based generative network for
generalizable deepfake detection"): the neighbouring-pixel residual x - up(down(x)) (nearest, factor 2) fed to
ResNet-50's first two stages, trained from scratch (~1.4M parameters).

Generators up-sample; up-sampling correlates neighbouring pixels in a way cameras do not. Within each 2x2
block the residual keeps only how the pixels differ from the block's top-left one, which is what up-sampling
fixes, whatever the generator. Registered with timm (`npr_resnet`), so `model=npr` goes wherever a timm
backbone goes: training, evaluation, Grad-CAM (its last stage) and ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, downsample_conv
from torch import nn


def neighbouring_pixel_residual(x: torch.Tensor) -> torch.Tensor:
    """x - up(down(x)) with nearest-neighbour resampling by 2: every pixel minus its 2x2 block's top-left one."""
    down = x[..., ::2, ::2]
    return x - F.interpolate(down, size=x.shape[-2:], mode="nearest")


class NPRNet(nn.Module):
    """NPR -> 3x3 stem (stride 2) + max pool -> ResNet-50 layer1 (3 bottlenecks) and layer2 (4) -> pool -> fc."""

    def __init__(self, num_classes: int = 1, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, blocks=3, stride=1)
        self.layer2 = self._stage(256, 128, blocks=4, stride=2)
        self.num_features = self.head_hidden_size = 512
        self.feature_info = [
            {"num_chs": 64, "reduction": 2, "module": "act1"},
            {"num_chs": 256, "reduction": 4, "module": "layer1"},
            {"num_chs": 512, "reduction": 8, "module": "layer2"},
        ]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # each residual branch starts as the identity (timm's zero_init_last)
            if isinstance(module, Bottleneck):
                module.zero_init_last()

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = downsample_conv(inplanes, out, kernel_size=1, stride=stride)
        layers = [Bottleneck(inplanes, planes, stride=stride, downsample=downsample)]
        layers += [Bottleneck(out, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^conv1|bn1", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # The paper scales the residual by 2/3 (its official code), keeping it near the input's range.
        x = self.act1(self.bn1(self.conv1(neighbouring_pixel_residual(x) * (2.0 / 3.0))))
        return self.layer2(self.layer1(self.maxpool(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "npr_resnet.untrained": {
            "num_classes": 1,
            "input_size": (3, 224, 224),
            "pool_size": (28, 28),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD,
            "first_conv": "conv1",
            "classifier": "fc",
        }
    }
)


@register_model
def npr_resnet(pretrained: bool = False, **kwargs: Any) -> NPRNet:
    """NPR detector (trained from scratch in the paper; a local weight file loads with model.weights=PATH)."""
    return build_model_with_cfg(NPRNet, "npr_resnet", pretrained, **kwargs)
