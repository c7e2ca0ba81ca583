"""Evaluate a checkpoint: `python eval.py ckpt_path=...` (configs/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.evaluation.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
