"""Perturbations for robustness tests: each is a pure function of the image and its own parameters.

Nothing here sees a label: real and AI images get exactly the same operation with the same parameters. They act
on the base image (see `data.transforms`), as robust training's degradations do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trustthepixels.data.loading.degrade import blur, downscale, jpeg


@dataclass(frozen=True)
class Perturbation:
    kind: str  # "jpeg" (quality), "blur" (Gaussian sigma in px) or "downscale" (factor)
    strength: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        operations = {"jpeg": jpeg, "blur": blur, "downscale": downscale}
        if self.kind not in operations:
            raise ValueError(f"Unknown perturbation {self.kind!r}: use {', '.join(operations)}")
        return operations[self.kind](image, self.strength)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.strength:g}"


def perturbations(spec: dict[str, list[float]]) -> list[Perturbation]:
    return [Perturbation(kind, float(s)) for kind, strengths in spec.items() for s in strengths]
