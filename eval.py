"""Evaluate a checkpoint: `python eval.py ckpt_path=...` (configs/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.evaluation.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(evaluate, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "eval")
    main()
