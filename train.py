"""Train a detector: `python train.py model=resnet50` (see configs/train.yaml and the README)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.training import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))  # what Optuna and other sweepers maximise


if __name__ == "__main__":
    main()
