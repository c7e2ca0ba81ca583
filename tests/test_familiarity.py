"""The familiarity score and the `unfamiliar` verdict: its promise on exchangeable images, its power on shifted
ones, one computation in numpy and torch, and its place in the verdict rule and the risk-coverage curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from trustthepixels.data.loading.transforms import Preprocessing
from trustthepixels.detector.predictions import Threshold
from trustthepixels.metrics.calibration import fit_calibration
from trustthepixels.metrics.conformal import ConformalSets
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.selective import abstention_metrics, risk_coverage
from trustthepixels.model.familiarity import Familiarity, _block_stats, _squared_distance, fit_familiarity


def _blocks(rng: np.random.Generator, n: int, shift: float = 0.0, dims=(8, 32)) -> tuple[list[np.ndarray], np.ndarray]:
    """Two feature blocks of n images, two classes apart in the last block; `shift` moves every image's early
    block (a change of source the classifier's features need not see)."""
    labels = rng.integers(0, 2, n)
    early = rng.normal(size=(n, dims[0])) + shift
    late = rng.normal(size=(n, dims[1])) + 2.0 * labels[:, None]
    return [early.astype(np.float32), late.astype(np.float32)], labels


def _distances(state, blocks) -> np.ndarray:
    with torch.no_grad():
        return Familiarity(state).distance([torch.from_numpy(b) for b in blocks]).numpy()


def _familiarity(state, reference, blocks) -> np.ndarray:
    """The torch scorer's familiarity of `blocks` against the calibration images' distances `reference`."""
    with torch.no_grad():
        return Familiarity(state, reference)([torch.from_numpy(b) for b in blocks]).numpy()


def test_exchangeable_images_are_flagged_at_most_as_often_as_promised():
    """Statistics fitted on training features, the cutoff on calibration images: on images like the calibration
    images, the share called unfamiliar is at most 1 - familiar_quantile (up to sampling noise); each calibration
    image's familiarity is exactly its rank; the record's numpy familiarity is the torch scorer's."""
    rng = np.random.default_rng(0)
    flagged = []
    for _ in range(40):
        train, labels = _blocks(rng, 300)
        state = fit_familiarity(train, labels)
        calibration, cal_labels = _blocks(rng, 200)
        reference = _distances(state, calibration)
        own = _familiarity(state, reference, calibration)
        assert np.allclose(own, (reference[None, :] >= reference[:, None]).mean(1))
        assert (own < 0.05).mean() <= 0.05
        new = _blocks(rng, 400)[0]
        record = fit_calibration(cal_labels, rng.normal(size=200) + cal_labels, reference, 0.1, 0.95, ["s"], "part")
        assert np.allclose(record.familiarity(_distances(state, new)), _familiarity(state, reference, new), atol=1e-6)
        flagged.append((_familiarity(state, reference, new) < 0.05).mean())
    mean, se = np.mean(flagged), np.std(flagged) / np.sqrt(len(flagged))
    assert mean <= 0.05 + 1 / 201 + 3 * se, mean


def test_a_shift_in_an_early_block_is_seen_with_all_blocks_not_with_the_last_alone():
    rng = np.random.default_rng(1)
    train, labels = _blocks(rng, 400)
    calibration, _ = _blocks(rng, 200)
    test, _ = _blocks(rng, 300)
    shifted, _ = _blocks(rng, 300, shift=2.0)
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    auroc = {}
    for layers in ("all", "classifier"):
        state = fit_familiarity(train, labels, layers=layers)
        reference = _distances(state, calibration)
        scores = np.r_[_familiarity(state, reference, test), _familiarity(state, reference, shifted)]
        auroc[layers] = core_metrics(y, -scores)["auroc"]
    assert auroc["all"] > 0.9 and 0.4 < auroc["classifier"] < 0.6, auroc


def test_torch_scorer_computes_the_numpy_distance():
    rng = np.random.default_rng(2)
    train, labels = _blocks(rng, 200)
    val, _ = _blocks(rng, 50)
    state = fit_familiarity(train, labels, layers="classifier")
    means, whiten = _block_stats(train[1], labels)
    stats = state["stats"][0]
    expected = (np.log(_squared_distance(val[1], means, whiten) + 1e-12) - stats["loc"]) / stats["scale"]
    assert np.allclose(_distances(state, val), expected, atol=1e-4)
    # Standardised on the training features themselves: their median distance is 0.
    assert abs(np.median(_distances(state, train))) < 1e-3
    # The features' true shared covariance is the identity: so is the estimated precision, W W^T.
    assert np.allclose(whiten @ whiten.T, np.eye(32), atol=0.25)


def test_bad_settings_are_named():
    rng = np.random.default_rng(3)
    train, labels = _blocks(rng, 40)
    with pytest.raises(ValueError, match=r"familiar_quantile=1\.5"):
        fit_calibration(labels, rng.normal(size=40), np.zeros(40), 0.1, 1.5, ["s"], "part")
    with pytest.raises(ValueError, match="familiarity_layers='first'"):
        fit_familiarity(train, labels, layers="first")
    with pytest.raises(ValueError, match="both classes"):
        fit_familiarity(train, np.zeros(40, int))


def test_unfamiliar_comes_before_every_other_verdict_and_counts_as_unanswered():
    sets = ConformalSets(0.05, ai_min_p=0.6, real_max_p=0.4, n_ai=100, n_real=100)
    rule = Threshold(0.5, "test", sets, familiar_min=0.01)
    p_ai = np.array([0.9, 0.1, 0.5, 0.9, 0.1])
    familiarity = np.array([0.5, 0.5, 0.5, 0.0, np.nan])  # NaN: no familiarity score, no flag
    verdicts = rule.verdicts(p_ai, familiarity)
    assert verdicts.tolist() == ["AI", "Real", "uncertain", "unfamiliar", "Real"]
    assert rule.verdict(0.9, 0.005) == "unfamiliar" and rule.verdict(0.9) == "AI"
    shares = abstention_metrics(np.array([1, 0, 1, 1, 1]), verdicts)
    assert shares["coverage"] == 3 / 5 and shares["accuracy_answered"] == 2 / 3 and shares["confident_errors"] == 1 / 5


def test_risk_coverage_orders_by_confidence_and_puts_unfamiliar_images_last():
    labels = np.array([1, 1, 0, 0])
    logits = np.array([3.0, -0.5, -2.0, 1.0])  # at threshold 0.5: right, wrong, right, wrong
    curve = risk_coverage(labels, logits, 0.5)
    # Most confident first: 3.0 (right), -2.0 (right), 1.0 (wrong), -0.5 (wrong).
    assert curve.risk.tolist() == [0, 0, 1 / 3, 2 / 4] and curve.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    flagged = risk_coverage(labels, logits, 0.5, np.array([0.5, 0.5, 0.0, 0.5]), familiar_min=0.01)
    # The unfamiliar image (-2.0, right) goes last whatever its confidence.
    assert flagged.risk.tolist() == [0, 0.5, 2 / 3, 2 / 4]
    assert risk_coverage(labels, logits, 0.5).coverage.tolist() == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.slow
def test_hf_export_loads_in_timm_and_its_onnx_returns_the_familiarity(trained_checkpoint, tmp_path):
    """`python export.py ckpt_path=... format=hf`: timm loads the folder (same logits), the ONNX model in it returns
    P(AI) and familiarity as PyTorch computes them, and the card says what the detector is and must not be used for."""
    import onnxruntime
    import timm

    from trustthepixels.detector.checkpoint import load_detector

    from .test_combinations import command, ok

    ok(command("export.py", f"ckpt_path={trained_checkpoint}", "format=hf", f"output={tmp_path / 'hf'}", cwd=tmp_path))
    folder = tmp_path / "hf"
    assert {"config.json", "model.safetensors", "detector.onnx", "README.md"} <= {p.name for p in folder.iterdir()}
    detector = load_detector(trained_checkpoint)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == tuple(detector.data_config["input_size"])
    images = torch.randint(0, 256, (3, *config["input_size"]), dtype=torch.uint8)
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.allclose(model((images / 255 - mean) / std).squeeze(-1), detector.model(images), atol=1e-5)
        logits, features = detector.model.forward_with_features(images)
        familiarity = detector.familiarity(features)
    session = onnxruntime.InferenceSession(str(folder / "detector.onnx"), providers=["CPUExecutionProvider"])
    p_ai, familiar = session.run(["p_ai", "familiarity"], {"images": images.numpy()})
    assert np.allclose(p_ai, torch.sigmoid(logits).numpy(), atol=1e-5)
    assert np.abs(familiar - familiarity.numpy()).max() <= 1.5 / len(detector.calibration.reference)
    card = (folder / "README.md").read_text()
    for heading in ("## Intended use", "## Training data", "## Training procedure", "## Preprocessing",
                    "## Evaluation: metrics (95% intervals)", "## Verdict rule", "## Limitations"):  # fmt: skip
        assert heading in card
    # The hub reads the front matter: licence, task, the sources, and the test metrics as model-index results.
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "mit" and header["pipeline_tag"] == "image-classification" and header["datasets"]
    (result,) = header["model-index"][0]["results"]
    report = json.loads((trained_checkpoint.parent.parent / "metrics.json").read_text())
    auroc = next(m for m in result["metrics"] if m["type"] == "roc_auc")
    assert auroc["value"] == pytest.approx(report["test"]["test/auroc"], abs=1e-4)
    # One output: the hub's label list names it, the two labels are spelled out beside it; one self-contained ONNX.
    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == 1 and config["label_names"] == ["AI"]
    assert config["trustthepixels"]["labels"] == {"0": "Real", "1": "AI"}
    assert not list(folder.glob("*.onnx.data"))
    assert "| auroc |" in card and "`unfamiliar`" in card and "On its test split" in card
    assert Preprocessing.from_data_config(detector.data_config).describe() in card
    assert "`python train.py` (TrustThePixels)" in card  # a run without overrides (it printed a trailing space)


def test_every_checkpoint_train_leaves_decides_at_once_and_an_uncalibrated_one_is_refused(trained_checkpoint, tmp_path):
    """last.ckpt carries a calibration record and familiarity statistics, as the best one does: loading it fits
    nothing. A checkpoint without a record (a run stopped before its end) is refused in one line naming calibrate.py;
    calibrate.py fits its missing familiarity statistics from the run's own training split."""
    from trustthepixels.detector.checkpoint import UncalibratedError, load_detector
    from trustthepixels.evaluation.calibrate import calibrate

    from .conftest import compose_cfg, write_image_folder

    last = trained_checkpoint.parent / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert {"calibration", "familiarity"} <= set(saved) and not {"val_threshold", "conformal"} & set(saved)
    detector = load_detector(last)
    assert detector.familiarity is not None and len(detector.familiarity.reference) > 0
    assert detector.decision(None, {"enabled": True}).familiar_min == pytest.approx(0.01)

    stopped = trained_checkpoint.parent / "stopped.ckpt"
    torch.save({k: v for k, v in saved.items() if k not in ("calibration", "familiarity")}, stopped)
    try:
        with pytest.raises(UncalibratedError, match=r"no calibration record .*python calibrate\.py ckpt_path="):
            load_detector(stopped)
        folder = write_image_folder(tmp_path / "mine", per_class=40, size=48)
        cfg = compose_cfg([f"ckpt_path={stopped}", f"data.root={folder}", "data.num_workers=0"], tmp_path, "calibrate")
        result = calibrate(cfg)
    finally:
        stopped.unlink()
    calibrated = torch.load(result["calibrated_checkpoint"], map_location="cpu", weights_only=True)
    assert {"calibration", "familiarity"} <= set(calibrated)
    assert calibrated["familiarity"]["n_train"] == saved["familiarity"]["n_train"]  # fitted on the run's split


@pytest.mark.parametrize("threshold, verdict", [(0.0, 1), (1.0, 0), (0.3, None)])
def test_risk_coverage_ends_at_the_threshold_verdicts_error_rate_at_any_threshold(threshold, verdict):
    """At full coverage the curve's risk is the error rate of the threshold's own verdicts: at 0 every image is AI,
    at 1 every image Real (the curve cut at logit 0 there: error 0.75, the curve said 0.25)."""
    labels = np.array([0, 0, 0, 1])
    logits = np.array([-2.0, -1.0, 0.5, 1.0])
    p_ai = 1 / (1 + np.exp(-logits))
    verdicts = (p_ai > threshold).astype(int) if verdict is None else np.full(4, verdict)
    curve = risk_coverage(labels, logits, threshold)
    assert curve.risk[-1] == pytest.approx(np.mean(verdicts != labels))


def test_the_familiarity_fit_keeps_only_the_block_it_reads_on_the_trainers_device(image_folder, tmp_path, monkeypatch):
    """resnet18's fit read 1 of its 5 pooled blocks but kept all of them for every training image; and it ran on
    device=auto (a GPU when there is one) whatever trainer.accelerator said."""
    from trustthepixels.detector import checkpoint
    from trustthepixels.training import train

    from .conftest import TINY, compose_cfg

    kept, devices = [], []
    fit, score = checkpoint.Detector.fit_familiarity, checkpoint.Detector.score_files

    def recording_score(self, *args, **kwargs):
        scores = score(self, *args, **kwargs)
        if scores.features is not None:
            kept.append([b for b, block in enumerate(scores.features) if block is not None])
        return scores

    def recording_fit(self, train, layers="last_stage", batch_size=64, num_workers=0, device="cpu"):
        devices.append(device)
        return fit(self, train, layers, batch_size, num_workers, device)

    monkeypatch.setattr(checkpoint.Detector, "score_files", recording_score)
    monkeypatch.setattr(checkpoint.Detector, "fit_familiarity", recording_fit)
    cfg = compose_cfg(["debug=limit", f"data.root={image_folder}", *TINY, "trainer=cpu", "trainer.max_epochs=1"],
                      tmp_path)  # fmt: skip
    # As on a GPU machine told to train on the CPU: device=auto would be the GPU.
    monkeypatch.setattr("trustthepixels.training.resolve_device", lambda name: "cuda", raising=False)
    train(cfg)
    assert devices == ["cpu"]
    assert len(kept) == 1 and len(kept[0]) == 1  # the training images' features, last_stage alone


@pytest.mark.slow
@pytest.mark.parametrize("resize", ["shorter", "none"])
def test_the_cards_python_scores_images_as_the_detector_does(trained_checkpoint, tmp_path, resize):
    """The card's snippet runs the detector's own evaluation steps (uint8 tensors, antialiased resize, not timm's PIL
    transform; data.resize=none: a crop, never a resize): the same model input, to the pixel, and the same P(AI), for
    an image larger and one smaller than the input. (The draft decoding of large JPEGs is the one step it leaves out,
    and the card says so.)"""
    from PIL import Image

    from trustthepixels.detector.checkpoint import DATAMODULE_KEY, load_detector, read_checkpoint, save_checkpoint

    from .test_combinations import command, ok

    checkpoint = read_checkpoint(trained_checkpoint)
    checkpoint[DATAMODULE_KEY]["data_config"]["resize"] = resize
    detector_file = tmp_path / "run" / "checkpoints" / f"{resize}.ckpt"
    save_checkpoint(checkpoint, detector_file)
    dataset = trained_checkpoint.parents[2] / "dataset"
    hf = tmp_path / "hf"
    ok(
        command(
            "export.py", f"ckpt_path={detector_file}", "format=hf", f"output={hf}", f"check_images={dataset}",
            cwd=tmp_path,
        )
    )  # fmt: skip
    card = (hf / "README.md").read_text()
    assert ("slightly" in card) == (resize == "shorter")  # jpeg_draft, on by default, applies to resizing only
    snippet = card.split("```python\n")[1].split("```")[0].replace("FOLDER", str(hf))
    assert ("never resize" in snippet) == (resize == "none")
    detector = load_detector(detector_file)
    mean, std = (torch.tensor(detector.data_config[k]).view(3, 1, 1) for k in ("mean", "std"))
    source = Image.open(sorted((dataset / "AI").iterdir())[0]).convert("RGB")
    for size in [(70, 53), (20, 27)]:  # the input is 32 px: one resized down, one up (or padded)
        path = tmp_path / f"image_{size[0]}.png"
        source.resize(size, Image.Resampling.BICUBIC).save(path)
        scope = {"image": Image.open(path).convert("RGB")}
        exec(snippet, scope)
        pixels, _ = detector.preprocess(path)
        expected = (pixels.float() / 255 - mean) / std
        assert torch.allclose(scope["transform"](scope["image"]), expected, atol=1e-6), size
        logit = detector.score_files([path]).logits[0]
        assert scope["p_ai"] == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-5), size


def test_the_card_names_the_weights_training_started_from():
    """base_model in the card's front matter: timm's hub id of the local weights file or of the hub default."""
    from trustthepixels.export.model_card import base_model

    local = {"config": {"weights": "../shared/weights/tf_efficientnet_lite0.in1k.safetensors"}}
    assert base_model(local, "tf_efficientnet_lite0") == "timm/tf_efficientnet_lite0.in1k"
    assert base_model({"config": {"weights": "hub"}}, "resnet50").startswith("timm/resnet50.")
    assert base_model({"config": {"weights": "none"}}, "resnet18") is None
    assert base_model({}, "resnet18") is None  # no run folder beside the checkpoint
