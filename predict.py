"""Score new images: `python predict.py ckpt_path=... input=PATH` (configs/predict.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.prediction.predict import predict


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    if run(predict, cfg) == 0:
        sys.exit(1)  # nothing could be read: an error; some unreadable files among good ones are not


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "predict")
    main()
