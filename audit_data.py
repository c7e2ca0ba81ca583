"""Describe a dataset: `python audit_data.py data.root=PATH` (configs/audit_data.yaml)."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.data.audit.audit import audit


@hydra.main(version_base="1.3", config_path="configs", config_name="audit_data")
def main(cfg: DictConfig) -> None:
    run(audit, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "audit_data")
    main()
