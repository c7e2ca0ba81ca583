"""Calibrate a detector on your own images: `python calibrate.py ckpt_path=... data.root=FOLDER`
(configs/calibrate.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.evaluation.calibrate import calibrate


@hydra.main(version_base="1.3", config_path="configs", config_name="calibrate")
def main(cfg: DictConfig) -> None:
    run(calibrate, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "calibrate")
    main()
