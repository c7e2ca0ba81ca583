"""Compare detectors on the same images: `python compare.py inputs=[A,B]` (configs/compare.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.evaluation.compare import compare


@hydra.main(version_base="1.3", config_path="configs", config_name="compare")
def main(cfg: DictConfig) -> None:
    run(compare, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "compare")
    main()
