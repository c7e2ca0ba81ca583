"""Every config composes; every model config builds; local weights load; bad names fail early."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from trustthepixels.config import auto_precision, run_dir_of, run_id
from trustthepixels.model.backbone import UnknownModelError, create_backbone
from trustthepixels.model.schedule import warmup_cosine

from .conftest import CONFIGS

MODEL_CONFIGS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml") if not p.stem.startswith("_"))
LOCAL_WEIGHTS = {
    "tf_efficientnet_lite0": ("tf_efficientnet_lite0.in1k.safetensors", "conv_stem.weight"),
    "mobilenetv2_100": ("mobilenetv2_100.tv_in1k.safetensors", "conv_stem.weight"),
    "vit_small_patch14_dinov2": ("vit_small_patch14_dinov2.lvd142m_fp16.safetensors", "blocks.0.attn.qkv.weight"),
}


def test_the_issue_asks_for_these_models():
    assert {
        "resnet50",
        "resnet18",
        "efficientnet_b0",
        "convnext_tiny",
        "vit_small_patch16_224",
        "tf_efficientnet_lite0",
        "mobilenetv2_100",
        "vit_small_patch14_dinov2",
    } <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_builds_and_starts_at_half(make_cfg, name):
    cfg = make_cfg(f"model={name}", "model.pretrained=false")
    model = instantiate(cfg.model).eval()
    size = model.data_config["input_size"][-1]
    with torch.no_grad():
        logits = model(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    assert logits.shape == (2,)
    assert torch.all(logits == 0), "a fresh head must give P(AI) = 0.5"


@pytest.mark.parametrize("name", sorted(LOCAL_WEIGHTS))
def test_local_weights_load_through_timm(make_cfg, shared_dir, name):
    file, key = LOCAL_WEIGHTS[name]
    cfg = make_cfg(f"model={name}", f"model.weights={shared_dir / 'weights' / file}")
    model = instantiate(cfg.model)
    expected = load_file(shared_dir / "weights" / file)[key].float()
    assert torch.equal(model.backbone.state_dict()[key], expected)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="resnet50"):
        create_backbone("resnet5O", pretrained=False)


def test_offline_hub_download_error_says_what_to_do():
    """The real download path, with huggingface_hub told it is offline (as it is on a machine with no network)."""
    code = "from trustthepixels.model.backbone import create_backbone; create_backbone('resnet18', pretrained=True)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "model.weights=PATH" in result.stderr and "model.pretrained=false" in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=cpu"],
        ["trainer=gpu"],
        ["trainer=ddp"],
        ["debug=fdr"],
        ["debug=limit"],
        ["debug=overfit"],
        ["experiment=real_vs_ai_lite0"],
        ["logger=none"],
    ],
)
def test_configs_compose(make_cfg, overrides):
    cfg = make_cfg(*overrides)
    assert cfg.model.backbone and cfg.trainer._target_


def test_precision_follows_the_hardware(make_cfg):
    assert auto_precision() == ("32-true" if not torch.cuda.is_available() else auto_precision())
    assert make_cfg().trainer.precision == auto_precision()


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_run_directories_are_unique_and_resume_reuses_its_own(tmp_path):
    assert len({run_id() for _ in range(10)}) == 10  # same second, still 10 directories
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    assert run_dir_of(str(checkpoint), "new") == str(tmp_path / "run")
    assert run_dir_of(None, "new") == "new"
    assert run_dir_of(str(tmp_path / "elsewhere.ckpt"), "new") == "new"


def test_flips_happen_on_the_device_in_the_training_step(make_cfg):
    model = instantiate(make_cfg("model=resnet18", "model.pretrained=false").model)
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5).repeat(32, 1, 1, 1)
    flipped = model.random_flip(images)
    same = [torch.equal(a, b) for a, b in zip(flipped, images, strict=True)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 10 < sum(mirrored) < 54
    model.hparams.flip = False
    assert torch.equal(model.random_flip(images), images)
