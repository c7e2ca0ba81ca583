"""The generalisation recipes as models: NPR and the power-spectrum baseline go wherever a timm backbone goes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trustthepixels.data.audit.spectrum import azimuthal_spectrum, radial_power_profile
from trustthepixels.errors import UserError
from trustthepixels.evaluation.evaluate import evaluate
from trustthepixels.export.exporter import export_onnx
from trustthepixels.model.backbone import create_backbone
from trustthepixels.model.npr import neighbouring_pixel_residual
from trustthepixels.prediction.predict import predict
from trustthepixels.training import train

from .conftest import compose_cfg, write_image_folder

SMALL = ["data.image_size=32", "data.batch_size=8", "data.num_workers=0", "data.resize=none"]


def test_npr_is_the_papers_residual_and_size():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # Each pixel minus the top-left pixel of its 2x2 block (nearest down-sampling then up-sampling by 2).
    expected = x - x[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(neighbouring_pixel_residual(x), expected)
    model = create_backbone("npr_resnet", pretrained=False)
    assert 1.4e6 < sum(p.numel() for p in model.parameters()) < 1.5e6  # the paper's ~1.44M


def test_spectrum_model_sees_what_the_audit_sees(tmp_path):
    folder = write_image_folder(tmp_path / "d", per_class=1, size=40)
    path = next((folder / "AI").iterdir())
    grey = torch.from_numpy(np.asarray(azimuthal_spectrum(path)))
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float64))
    assert torch.allclose(radial_power_profile(pixels), grey)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["npr", "spectral"])
def test_recipe_model_trains_evaluates_predicts_and_exports(model, tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=20, size=48)
    run = tmp_path / "train"
    train(compose_cfg(["debug=limit", f"model={model}", f"data.root={folder}", *SMALL, "trainer.max_epochs=2"], run))
    (best,) = (run / "run" / "checkpoints").glob("epoch*.ckpt")
    report = json.loads((run / "run" / "metrics.json").read_text())

    result = evaluate(compose_cfg([f"ckpt_path={best}", "robustness=false"], tmp_path / "eval", config_name="eval"))
    assert result["sets"]["test"]["auroc"] == pytest.approx(report["test"]["test/auroc"], abs=1e-6)

    images = sorted((folder / "AI").iterdir())[:2]
    explain = compose_cfg(
        [f"ckpt_path={best}", "explain=true", "num_workers=0", f"input=[{images[0]},{images[1]}]"],
        tmp_path / "predict",
        config_name="predict",
    )
    if model == "npr":
        assert predict(explain) == 2
        overlays = sorted((tmp_path / "predict" / "run" / "gradcam").iterdir())
        assert len(overlays) == 2 and all(o.read_bytes().startswith(b"\x89PNG") for o in overlays)
    else:
        with pytest.raises(UserError, match="explain=false"):
            predict(explain)

    exported = export_onnx(
        compose_cfg(
            [f"ckpt_path={best}", f"check_images={folder}", "check_limit=8", f"output={tmp_path / 'm.onnx'}"],
            tmp_path / "export",
            config_name="export",
        )
    )
    assert exported["checked_images"] == 8 and exported["max_abs_diff_p_ai"] < 1e-4


def test_partial_fine_tuning_trains_the_last_blocks_only(make_cfg, image_folder):
    from hydra.utils import instantiate

    model = instantiate(make_cfg("model=resnet18", "model.pretrained=false", "model.trainable_blocks=1").model)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    model.train()
    assert not model.backbone.layer1[0].bn1.training and model.backbone.layer4[0].bn1.training
    metrics = train(
        make_cfg(
            "debug=limit",
            f"data.root={image_folder}",
            "model=resnet18",
            "model.pretrained=false",
            "model.trainable_blocks=1",
            "data.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.max_epochs=1",
        )
    )
    assert "test/auroc" in metrics


def test_a_linear_probe_is_one_setting(make_cfg):
    """model.trainable_blocks=0 and model.freeze_backbone=true are the same probe: the classifier alone learns."""
    from hydra.utils import instantiate

    probes = [
        instantiate(make_cfg("model=resnet18", "model.pretrained=false", setting).model)
        for setting in ("model.trainable_blocks=0", "model.freeze_backbone=true")
    ]
    for model in probes:
        learning = {name for name, p in model.backbone.named_parameters() if p.requires_grad}
        assert learning == {"fc.weight", "fc.bias"} and model.hparams.freeze_backbone
