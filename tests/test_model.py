"""Every config composes; every model config builds; local weights load; bad names fail early."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule
from PIL import Image
from safetensors.torch import load_file

from trustthepixels.config import auto_precision, run_dir_of, run_id
from trustthepixels.errors import ConfigError
from trustthepixels.model.backbone import UnknownModelError, create_backbone
from trustthepixels.model.module import DetectorModule
from trustthepixels.model.schedule import warmup_cosine
from trustthepixels.model.settings import flip_mode

from .conftest import CONFIGS, TINY

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


@pytest.mark.parametrize(
    ("memory_gib", "overrides", "precision", "batch"),
    [
        (141, ["trainer=gpu", "model=resnet50"], "bf16-mixed", 256),  # the H200 of the README's GPU table
        (141, ["model=tf_efficientnet_lite0"], "bf16-mixed", 256),  # trainer=default on a GPU: the same choice
        (24, ["model=tf_efficientnet_lite0"], "32-true", 128),  # Lite0 measured faster in float32 at 128
        (24, ["model=convnext_tiny"], "bf16-mixed", 128),
        (12, ["model=resnet50"], "bf16-mixed", 64),
        (141, ["model=resnet50", "trainer=cpu"], "32-true", 32),  # the CPU on a machine with a GPU
        (141, ["experiment=cifake_lite0", "trainer=gpu"], "32-true", 64),  # an experiment's own batch stays
    ],
)
def test_gpu_defaults_follow_the_measurements(make_cfg, monkeypatch, memory_gib, overrides, precision, batch):
    """On a GPU, trainer=gpu and trainer=default choose the precision and batch size of the GPU table (config.
    auto_precision, auto_batch_size), from the GPU's memory; on this CPU-only machine the GPU is simulated."""

    class Properties:
        total_memory = memory_gib * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: Properties())
    cfg = make_cfg(*overrides)
    assert (cfg.trainer.precision, cfg.data.batch_size) == (precision, batch)


@pytest.mark.parametrize(
    ("optimizer", "batch", "lr_batch", "expected"),
    [
        ("torch.optim.AdamW", 256, 32, 3e-4 * 8**0.5),  # adaptive: the square root of the ratio (timm's rule)
        ("torch.optim.SGD", 256, 32, 3e-4 * 8),  # SGD: the ratio
        ("torch.optim.AdamW", 32, 32, 3e-4),
        ("torch.optim.AdamW", 256, None, 3e-4),  # lr_batch=null: lr as given
    ],
)
def test_the_learning_rate_follows_the_batch_size(tmp_path, optimizer, batch, lr_batch, expected):
    """The optimizer Lightning gets has lr scaled from model.lr_batch to the images per step."""
    from lightning.pytorch import Trainer

    module = DetectorModule(
        "resnet18",
        {"_target_": optimizer, "_partial_": True, "lr": 3e-4},
        pretrained=False,
        lr_batch=lr_batch,
        scheduler=None,
    )

    class Data(LightningDataModule):
        settings = SimpleNamespace(batch_size=batch)  # what ImageFolderDataModule keeps of the data group

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    trainer.strategy.connect(module)
    trainer._data_connector.attach_datamodule(module, datamodule=Data())
    module.trainer = trainer
    assert module.configure_optimizers().param_groups[0]["lr"] == pytest.approx(expected)


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


def test_dihedral_flips_give_each_of_the_squares_eight_symmetries(make_cfg):
    model = instantiate(make_cfg("model=resnet18", "model.pretrained=false", "model.flip=dihedral").model)
    image = torch.arange(3 * 5 * 5, dtype=torch.uint8).reshape(3, 5, 5)
    symmetries = [torch.rot90(x, k, dims=(-2, -1)) for x in (image, image.flip(-1)) for k in range(4)]
    torch.manual_seed(0)
    out = model.random_flip(image.repeat(400, 1, 1, 1))
    seen = [next(i for i, s in enumerate(symmetries) if torch.equal(x, s)) for x in out]  # each one of the 8
    counts = torch.bincount(torch.tensor(seen), minlength=8)
    assert counts.min() > 25, counts  # about 50 each
    non_square = torch.zeros(4, 3, 4, 6, dtype=torch.uint8)
    assert model.random_flip(non_square).shape == non_square.shape  # flips only
    assert (flip_mode(True), flip_mode(False)) == ("horizontal", "none")  # the old booleans still work
    with pytest.raises(ConfigError, match=r"model\.flip='vertical'"):
        flip_mode("vertical")


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_true_half_precision_trains(make_cfg, image_folder, precision):
    """The input follows the weights' dtype (was: "Input type (FloatTensor) and weight type (BFloat16)")."""
    from trustthepixels.training import train

    metrics = train(make_cfg("debug=fdr", f"data.root={image_folder}", *TINY, f"trainer.precision={precision}"))
    assert 0.0 <= metrics["test/auroc"] <= 1.0


def test_local_dir_backbone_trains_and_its_checkpoint_needs_no_folder(make_cfg, image_folder, tmp_path):
    """`local-dir:` (and `hf-hub:`) names are timm's own; a checkpoint rebuilds the network without them."""
    import shutil

    import timm
    from timm.models import save_for_hf

    from trustthepixels.detector.checkpoint import load_detector
    from trustthepixels.training import train

    source = timm.create_model("resnet18", pretrained=False, num_classes=7)
    save_for_hf(source, tmp_path / "my-resnet")
    cfg = make_cfg(
        "debug=limit",
        f"data.root={image_folder}",
        *TINY,
        f"model.backbone=local-dir:{tmp_path / 'my-resnet'}",
        "model.pretrained=true",
        "trainer.max_epochs=1",
    )
    train(cfg)
    shutil.rmtree(tmp_path / "my-resnet")  # the checkpoint alone must be enough
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    detector = load_detector(best)
    assert detector.model.hparams.backbone.startswith("local-dir:")
    with torch.no_grad():
        assert detector.model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1,)


@pytest.fixture(scope="module")
def vit_probe_checkpoint(tmp_path_factory):
    """A frozen-backbone ViT with its linear head trained: the dinov2 probe recipe, small."""
    from .conftest import compose_cfg, write_image_folder

    tmp = tmp_path_factory.mktemp("vit")
    folder = write_image_folder(tmp / "data", per_class=12, size=48)
    from trustthepixels.training import train

    train(
        compose_cfg(
            [
                "debug=limit",
                f"data.root={folder}",
                "model=vit_small_patch16_224",
                "model.pretrained=false",
                "+model.model_kwargs.img_size=32",
                "data.image_size=32",
                "data.batch_size=4",
                "data.num_workers=0",
                "model.freeze_backbone=true",
                "trainer.max_epochs=1",
            ],
            tmp,
        )
    )
    (best,) = (tmp / "run" / "checkpoints").glob("epoch*.ckpt")
    return best, folder


def test_gradcam_on_frozen_and_vit_backbones(vit_probe_checkpoint, trained_checkpoint, tmp_path):
    from omegaconf import OmegaConf

    from trustthepixels.prediction.predict import predict

    from .conftest import compose_cfg

    ckpt, folder = vit_probe_checkpoint
    images = sorted((folder / "AI").iterdir())[:2]
    for name, checkpoint in (("vit", ckpt), ("cnn", trained_checkpoint)):
        cfg = compose_cfg(
            [f"ckpt_path={checkpoint}", "explain=true", "num_workers=0", f"input=[{images[0]},{images[1]}]"],
            tmp_path / name,
            config_name="predict",
        )
        assert predict(cfg) == 2, OmegaConf.to_yaml(cfg)
        overlays = sorted((tmp_path / name / "run" / "gradcam").iterdir())
        assert len(overlays) == 2 and all(o.read_bytes().startswith(b"\x89PNG") for o in overlays)


@pytest.mark.slow
def test_onnx_export_of_a_vit_checkpoint_and_unreadable_check_images(vit_probe_checkpoint, shared_dir, tmp_path):
    import shutil

    from trustthepixels.errors import UserError
    from trustthepixels.export.exporter import export_onnx

    from .conftest import compose_cfg

    ckpt, folder = vit_probe_checkpoint
    check = tmp_path / "check"
    shutil.copytree(folder, check)
    for name in ("truncated_half.jpg", "text_file_named_as.jpg"):
        shutil.copy(shared_dir / "data" / "bad-inputs" / name, check / "AI" / name)
    (check / "AI" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    cfg = compose_cfg(
        [f"ckpt_path={ckpt}", f"check_images={check}", f"output={tmp_path / 'vit.onnx'}"], tmp_path, "export"
    )
    report = export_onnx(cfg)
    assert report["max_abs_diff_p_ai"] < 1e-4 and report["checked_images"] == 24

    only_bad = tmp_path / "only-bad"
    (only_bad / "AI").mkdir(parents=True)
    (only_bad / "Real").mkdir()
    shutil.copy(shared_dir / "data" / "bad-inputs" / "truncated_half.jpg", only_bad / "AI" / "x.jpg")
    Image.new("RGB", (4, 4)).save(only_bad / "Real" / "tiny.png")
    with pytest.raises(UserError):
        export_onnx(compose_cfg([f"ckpt_path={ckpt}", f"check_images={only_bad}"], tmp_path / "bad", "export"))


def test_hub_and_local_dir_names_are_not_refused():
    from trustthepixels.model.backbone import check_model_name

    for name in ("hf-hub:timm/resnet18.a1_in1k", "local-dir:/models/my-vit", "resnet18.a1_in1k"):
        check_model_name(name)  # timm resolves these itself
    with pytest.raises(UnknownModelError):
        check_model_name("resnet18x")


def test_ddp_rank_command_patch_is_scoped_and_version_checked(monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.strategies.launchers import subprocess_script

    from trustthepixels import ddp

    class _SubprocessScriptLauncher:  # the name Lightning's own launcher has
        pass

    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=_SubprocessScriptLauncher()))
    monkeypatch.setattr(ddp.HydraConfig, "initialized", staticmethod(lambda: True))
    original = subprocess_script._hydra_subprocess_cmd
    with ddp.ddp_session(trainer):
        assert subprocess_script._hydra_subprocess_cmd is ddp.job_command
    assert subprocess_script._hydra_subprocess_cmd is original  # put back after the job

    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", lambda local_rank, extra: None)
    with pytest.raises(RuntimeError, match="torchrun"), ddp.ddp_session(trainer):
        pass
