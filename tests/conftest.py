"""Fixtures: the shared real data beside the checkout, small generated image folders, composed configs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` (or $TTP_SHARED_DIR). In CI its absence is a failure, elsewhere a skip."""
    path = Path(os.environ.get("TTP_SHARED_DIR", REPO.parent / "shared")).resolve()
    if not (path / "data" / "real-vs-ai").is_dir():
        message = f"shared data not found at {path} (set TTP_SHARED_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_image(label: int, index: int, size: int = 48) -> Image.Image:
    """Class-dependent synthetic content: smooth gradients for AI (1), pixel noise for Real (0)."""
    rng = np.random.default_rng(1000 * label + index)
    if label == 1:
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(100, 255, 3)
        pixels = base + rng.normal(0, 3, base.shape)
    else:
        pixels = rng.uniform(0, 255, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_image_folder(root: Path, per_class: int = 12, size: int = 48) -> Path:
    for label, name in ((1, "AI"), (0, "Real")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "png" if i % 3 == 0 else "jpg"  # a mix of formats, as real folders have
            make_image(label, i, size).save(folder / f"{name.lower()}_{i:04d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "dataset")


@pytest.fixture
def bad_image_folder(tmp_path: Path, shared_dir: Path) -> Path:
    """Good generated images plus every real problem file of ../shared/data/bad-inputs, in both classes."""
    root = write_image_folder(tmp_path / "with-bad-inputs")
    for i, path in enumerate(sorted((shared_dir / "data" / "bad-inputs").iterdir())):
        shutil.copy(path, root / ("AI" if i % 2 else "Real") / path.name)
    return root


# Overrides that make any run tiny: a small model from scratch, small images, no worker processes.
TINY = ["model=resnet18", "model.pretrained=false", "data.image_size=32", "data.batch_size=4", "data.num_workers=0"]


def compose_cfg(overrides: list[str], tmp: Path, config_name: str = "train") -> DictConfig:
    """Compose a config with overrides, writing into `tmp` instead of Hydra's run directory."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
        cfg.paths.log_dir = str(tmp / "outputs")
        cfg.paths.data_dir = str(tmp / "data")
        del cfg.hydra
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_cfg(list(overrides), tmp_path, config_name)

    return _make


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A small detector trained for real (2 short epochs) on a generated folder: for eval, predict and export."""
    from trustthepixels.training import train

    tmp = tmp_path_factory.mktemp("trained")
    folder = write_image_folder(tmp / "dataset", per_class=30, size=48)
    train(compose_cfg(["debug=limit", f"data.root={folder}", *TINY, "trainer.max_epochs=2"], tmp))
    (best,) = (tmp / "run" / "checkpoints").glob("epoch*.ckpt")
    return best
