"""Export a checkpoint: `python export.py ckpt_path=... format=onnx` (configs/export.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.export.exporter import export


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    run(export, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "export")
    main()
