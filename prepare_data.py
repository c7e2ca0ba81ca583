"""Build the reduced dataset folder: `python prepare_data.py [source=release|hf]` (configs/prepare_data.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.data.prepare import prepare


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
