"""Describe a dataset: `python audit_data.py data.root=PATH` (configs/audit_data.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.data.audit import audit_dataset


@hydra.main(version_base="1.3", config_path="configs", config_name="audit_data")
def main(cfg: DictConfig) -> None:
    near = cfg.data.near_duplicates or {"phash": 0, "dhash": 0}
    audit_dataset(
        cfg.data.root,
        cfg.paths.output_dir,
        cfg.data.cache_dir,
        near["phash"],
        near["dhash"],
        cfg.cheat_threshold,
        cfg.folds,
        cfg.seed,
    )


if __name__ == "__main__":
    main()
