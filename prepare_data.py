"""Build a dataset folder: `python prepare_data.py [source=release|hf|aligned]` (configs/prepare_data.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.data.prepare import prepare


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    run(prepare, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "prepare_data")
    main()
