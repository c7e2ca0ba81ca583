"""Export a checkpoint: `python export.py ckpt_path=... format=onnx` (configs/export.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.prediction.export import export_onnx


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    if cfg.format != "onnx":
        raise ValueError(f"format={cfg.format!r}: only onnx is supported")
    export_onnx(cfg)


if __name__ == "__main__":
    main()
