"""Serve a detector: `python serve.py ckpt_path=...` (configs/serve.yaml): a web page at / and an HTTP API."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.serving.server import serve


@hydra.main(version_base="1.3", config_path="configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    run(serve, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "serve")
    main()
