"""Train a detector: `python train.py model=resnet50` (see configs/train.yaml and the README)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.data.ingest.roots import check_data_roots


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from trustthepixels.training import train

    metrics = run(train, cfg)
    return metrics.get(cfg.get("optimized_metric"))  # what Optuna and other sweepers optimise


if __name__ == "__main__":
    paths_exist = lambda cfg: check_data_roots(cfg.data.root, cfg.data.download)  # noqa: E731
    check_command_line(entry_point_config_dir(__file__), "train", paths_exist)  # a wrong path: one line, at once
    import trustthepixels.training  # noqa: F401 (Lightning loads before Hydra's logging: each line once)

    main()
