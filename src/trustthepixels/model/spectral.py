"""`model=spectral`: logistic regression on the azimuthally averaged power spectrum (Durall et al., CVPR 2020),
the classic baseline no deep model needs, as a backbone like any other: trained, evaluated, exported and
benchmarked by the same code as the CNNs. The spectrum is the audit's (`data/audit/spectrum.py`); a BatchNorm
without affine parameters standardises each frequency bin (StandardScaler's job) and a linear layer decides.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from trustthepixels.data.audit.spectrum import BINS, LUMA, radial_power_profile


class SpectrumLogistic(nn.Module):
    def __init__(self, num_classes: int = 1, in_chans: int = 3, bins: int = BINS):
        super().__init__()
        self.num_classes, self.bins = num_classes, bins
        self.num_features = self.head_hidden_size = bins
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.standardise = nn.BatchNorm1d(bins, affine=False)
        self.fc = nn.Linear(bins, num_classes)
        self.feature_info: list[dict[str, Any]] = []

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.bins, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (the config's mean 0 and std 1) -> standardised spectrum, in float32 whatever the dtype."""
        grey = (x.float() * self.luma).sum(dim=1) * 255.0
        return self.standardise(radial_power_profile(grey, self.bins))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "spectrum_logistic.untrained": {
            "num_classes": 1,
            "input_size": (3, 224, 224),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "classifier": "fc",
        }
    }
)


@register_model
def spectrum_logistic(pretrained: bool = False, **kwargs: Any) -> SpectrumLogistic:
    return build_model_with_cfg(SpectrumLogistic, "spectrum_logistic", pretrained, feature_cfg=None, **kwargs)
