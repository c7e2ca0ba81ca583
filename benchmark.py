"""The generalization matrix: `python benchmark.py benchmark=shared [model=... any training override]`
(configs/benchmark.yaml): one training per source (and per left-out source), each scored on every source."""

import hydra
from omegaconf import DictConfig

from trustthepixels.cli import check_command_line, entry_point_config_dir, run
from trustthepixels.generalization.rows import benchmark_row, benchmark_sources


@hydra.main(version_base="1.3", config_path="configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run(benchmark_row, cfg)


if __name__ == "__main__":
    check_command_line(entry_point_config_dir(__file__), "benchmark", check=benchmark_sources)
    main()
