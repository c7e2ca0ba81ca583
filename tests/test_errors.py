"""Errors a person can read, and inputs that must not break a scan: one short message naming the setting or
file and the fix, no traceback, no empty run folder; broken links, loops and unreadable files set aside."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from trustthepixels.cli import check_command_line, quote_non_ascii, run
from trustthepixels.data.audit.audit import audit_dataset
from trustthepixels.data.ingest.decode import ImageDecodeError, open_rgb
from trustthepixels.data.ingest.scan import scan_dataset
from trustthepixels.data.loading.datamodule import ImageFolderDataModule
from trustthepixels.errors import ConfigError
from trustthepixels.model.module import DetectorModule
from trustthepixels.training import train

from .conftest import REPO, TINY, write_image_folder


def cli(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_one_message(result: subprocess.CompletedProcess, *phrases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-3000:]


def error_line(capsys) -> str:
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    return message


def test_a_typo_in_a_setting_or_an_option_gets_a_suggestion(make_cfg, monkeypatch, capsys):
    """Before Hydra starts (train.py's `check_command_line`), or as `cli.run` checks the composed config."""
    for argument, phrase in (
        ("data.batchsize=8", "did you mean data.batch_size?"),
        ("model=resnet5", "did you mean model=resnet50?"),
    ):
        monkeypatch.setattr(sys, "argv", ["train.py", argument])
        with pytest.raises(SystemExit):
            check_command_line(REPO / "configs", "train")
        message = error_line(capsys)
        assert phrase in message and "_base" not in message and "base/" not in message
    assert "tf_efficientnet_lite0" in message  # the options it lists
    # Hydra's own hint for a new key, +data.batchsize, reaches the DataModule: the same suggestion, no TypeError.
    # A wrong optimizer setting: one line before weights load (was a traceback at the first training step).
    for override, phrase in (
        ("+data.batchsize=8", "data.batchsize is not a setting: did you mean data.batch_size?"),
        ("model.optimizer.lr=abc", "model.optimizer.lr='abc': use a number"),
    ):
        with pytest.raises(SystemExit):
            run(lambda cfg: pytest.fail("the task ran"), make_cfg(override, "model.pretrained=false"))
        assert phrase in error_line(capsys)


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        (["data.batch_size=0"], "data.batch_size=0: use a whole number"),
        (["data.split=[0.5,0.5,0.5]"], "data.split=[0.5, 0.5, 0.5]: use three non-negative fractions"),
        (["data.crop_scale=[0.9,0.1]"], "data.crop_scale"),
        (["data.augment=strong"], "data.augment='strong': use none or robust"),
        (["abstain.alpha=2"], "abstain.alpha=2.0: use a miss rate between 0 and 1"),  # was: a traceback after training
        (["abstain.familiar_quantile=5"], "abstain.familiar_quantile=5.0: use the share of validation images"),
        (["data.download=false", "data.root=MISSING"], "does not exist (and data.download=false)"),
        (["data.root=AI_ONLY"], "has AI/ but no Real/ or RealArt/ folder"),
        (["data.root=EMPTY"], "has no AI/ or Real/ folder"),
    ],
)
def test_user_mistakes_are_one_line_before_any_image_is_read(overrides, phrase, make_cfg, tmp_path, capsys):
    (tmp_path / "ai-only" / "AI").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "ai-only" / "AI" / "a.png")
    (tmp_path / "empty").mkdir()
    folder = write_image_folder(tmp_path / "data-ok", per_class=6)
    names = {"MISSING": tmp_path / "missing", "AI_ONLY": tmp_path / "ai-only", "EMPTY": tmp_path / "empty"}
    overrides = [o.split("=")[0] + "=" + str(names.get(o.split("=")[1], o.split("=")[1])) for o in overrides]
    cfg = make_cfg(*TINY, f"data.root={folder}", *overrides)
    with pytest.raises(SystemExit) as exit_info:
        run(train, cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if line.startswith("Error:")]
    assert phrase in message and "Traceback" not in err
    assert not (tmp_path / "data" / "cache").exists()  # refused before any image was read


@pytest.mark.parametrize(
    ("command", "override", "phrase"),
    [
        ("train", "data.batch_size=abc", "data.batch_size='abc': use a whole number of images per batch"),
        ("train", "data.crop_scale=[0.5,x]", "data.crop_scale[1]='x': use [low, high]"),
        ("train", "data.near_duplicates.phash=q", "data.near_duplicates.phash='q': use a Hamming distance"),
        ("train", "data.near_duplicates={phash: 4, zhash: 2}", "data.near_duplicates.zhash is not a setting"),
        ("train", "model.pretrained=maybe", "model.pretrained='maybe': use true"),
        ("train", "model.trainable_blocks=last", "model.trainable_blocks='last': use the number of last blocks"),
        ("train", "abstain.enabled=perhaps", "abstain.enabled='perhaps': use true"),
        ("serve", "port=http", "port='http': use a TCP port from 0 to 65535"),  # serve.yaml's own schema
        ("serve", "max_upload_mb=abc", "max_upload_mb='abc': use a number above 0"),  # was: a traceback
        ("eval", "calibration_bins=abc", "calibration_bins='abc': use a number of bins"),
        ("predict", "explain=maybe", "explain='maybe': use true"),
        ("compare", "bootstrap=abc", "bootstrap='abc': use a number of bootstrap resamples"),
        ("export", "opset=abc", "opset='abc': use an ONNX opset number"),
        ("audit_data", "cheat_threshold=abc", "cheat_threshold='abc': use a balanced accuracy"),
        ("prepare_data", "per_class=abc", "per_class='abc': use a number of images per class"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_as_the_config_composes(command, override, phrase, monkeypatch, capsys):
    """The data, model and abstain groups and serve.yaml are structured configs: OmegaConf refuses the type while
    composing, before Hydra runs the task, and the message ends with what the setting takes (the field's `use`)."""
    monkeypatch.setattr(sys, "argv", [f"{command}.py", override])
    with pytest.raises(SystemExit):
        check_command_line(REPO / "configs", command)
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert phrase in message


@pytest.mark.parametrize(
    ("command", "override", "phrase"),
    [
        ("serve", "batch_size=0", "batch_size=0: use a whole number, 1 or more"),  # was: a server that never answers
        ("serve", "port=70000", "port=70000: use a TCP port"),
        ("eval", "bootstrap=-5", "bootstrap=-5: use a number of bootstrap resamples"),  # was: a traceback
        ("eval", "perturbations.jpeg=[0]", "perturbations.jpeg=[0]: use JPEG qualities from 1 to 100"),
        ("predict", "input=x.jpg show=-1", "show=-1: use how many rows to print"),
        ("eval", "ckpt_path=???", "ckpt_path is required: set ckpt_path= to <run dir>/checkpoints/<best>.ckpt"),
        ("compare", "inputs=[a]", "inputs=['a']: use two or more prediction files"),
        ("compare", "inputs=[a,b] names=[x]", "names= has 1 entries for 2 inputs"),
        ("export", "format=tflite", "format='tflite': use onnx (one file) or hf"),
        ("export", "tolerance=0", "tolerance=0.0: use the largest difference in P(AI)"),
        ("export", "threshold=2", "threshold=2.0: use a P(AI) between 0 and 1"),  # a rule the base schema holds
        ("serve", "threads=0", "threads=0: use a number of CPU threads, 1 or more"),
        ("eval", "perturbations.downscale=[0.5,1.5]", "perturbations.downscale=[0.5, 1.5]: use scale factors"),
        ("audit_data", "folds=1", "folds=1: use a number of cross-validation folds, 2 or more"),  # was: 2, silently
        ("prepare_data", "source=zip", "source='zip': use release"),
        ("prepare_data", "workers=0", "workers=0: use a number of threads, 1 or more"),
        ("prepare_data", "sha256=abc", "sha256='abc': use the zip's SHA-256"),
    ],
)
def test_command_settings_that_cannot_work_are_one_line_before_the_model_loads(
    command, override, phrase, make_cfg, capsys
):
    checkpoint = ["ckpt_path=/no/such.ckpt"] if command in ("serve", "eval", "predict", "export") else []
    cfg = make_cfg(*checkpoint, *override.split(), config_name=command)
    with pytest.raises(SystemExit):
        run(lambda cfg: pytest.fail("the server started"), cfg)
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert phrase in message


def test_settings_are_checked_when_the_parts_are_built_from_python(tmp_path):
    """The same schema and rules when the DataModule or the module is built without Hydra."""
    backbone = {"input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 0.875}
    with pytest.raises(ConfigError, match=r"data\.batch_size='x': use a whole number"):
        ImageFolderDataModule(tmp_path, backbone, batch_size="x")
    with pytest.raises(ConfigError, match=r"data\.near_duplicates\.phash=65: use a Hamming distance from 0 to 64"):
        ImageFolderDataModule(tmp_path, backbone, near_duplicates={"phash": 65, "dhash": 6})
    with pytest.raises(ConfigError, match=r"^data\.batchsize is not a setting: did you mean data\.batch_size\?$"):
        ImageFolderDataModule(tmp_path, backbone, batchsize=8)  # **settings takes any key: the schema refuses it
    data = ImageFolderDataModule(tmp_path, backbone, batch_size="8", num_workers=0)
    assert data.settings.batch_size == 8  # converted, as Hydra's
    assert data.settings.near_duplicates.phash == 4 and data.settings.split == [0.8, 0.1, 0.1]  # the schema's
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": "abc"}
    with pytest.raises(ConfigError, match=r"model\.optimizer\.lr='abc': use a number"):
        DetectorModule("resnet18", optimizer, pretrained=False)
    with pytest.raises(ConfigError, match=r"model\.flip='vertical'"):
        DetectorModule("resnet18", {**optimizer, "lr": 1e-3}, pretrained=False, flip="vertical")
    with pytest.raises(
        ConfigError, match=r"^model\.trainable_block is not a setting: did you mean model\.trainable_blocks\?$"
    ):
        DetectorModule("resnet18", pretrained=False, trainable_block=2)
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    module = DetectorModule("resnet18", sgd, pretrained=False)
    assert module.hparams.optimizer == sgd  # a given optimizer replaces the default, no AdamW key mixed in
    assert module.hparams.lr_batch == 32 and module.hparams.flip == "horizontal"  # the schema's defaults


def test_full_error_shows_the_traceback(make_cfg, image_folder, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        run(train, make_cfg(*TINY, f"data.root={image_folder}", "data.batch_size=0"))


def test_non_ascii_paths_need_no_quoting(trained_checkpoint, tmp_path):
    assert quote_non_ascii("input=/photos/ünïcødé.jpg") == "input='/photos/ünïcødé.jpg'"
    assert quote_non_ascii("input=[/a/ü.jpg,/b.jpg]") == "input=['/a/ü.jpg',/b.jpg]"
    assert quote_non_ascii("input=/plain.jpg") == "input=/plain.jpg"
    image = tmp_path / "phötos" / "ünïcødé.jpg"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    output = tmp_path / "p.csv"
    result = cli("predict.py", f"ckpt_path={trained_checkpoint}", f"input={image}", f"output={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ünïcødé.jpg" in (tmp_path / "p.csv").read_text()


def test_decompression_bomb_rule_is_deterministic_across_threads(tmp_path, monkeypatch):
    """Pillow only warns between its limit and twice it; the rule is the limit, whatever other threads do."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    paths = []
    for i in range(40):
        size = (150, 100) if i % 2 else (90, 100)  # 15,000 px (over the limit, under twice it) or 9,000 px
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size, (i, i, i)).save(paths[-1])

    def verdict(path: Path) -> bool:
        try:
            open_rgb(path)
            return True
        except ImageDecodeError as err:
            assert "decompression bomb" in err.reason
            return False

    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(verdict, paths))
    assert verdicts == [i % 2 == 0 for i in range(40)]


def test_broken_links_loops_and_unreadable_files_are_set_aside(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", per_class=6)
    (root / "AI" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "Real" / "loop").symlink_to(root / "Real")  # a link back to its own parent
    (root / "AI" / "sub").mkdir()
    (root / "AI" / "sub" / "up").symlink_to(root / "AI")
    secret = root / "Real" / "secret.jpg"
    Image.new("RGB", (40, 40)).save(secret)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:  # root reads anything: simulate a file this user may not read
        if self.name == "secret.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    scan = scan_dataset(root)
    reasons = {relpath: reason for relpath, _, reason in scan.skipped}
    assert reasons == {
        "AI/dangling.jpg": "broken symbolic link",
        "Real/secret.jpg": "permission denied: cannot read the file",
    }
    assert scan.counts() == {"Real": 6, "AI": 6}  # each image once, though two links lead back to it


def test_the_audit_counts_the_images_training_uses(bad_image_folder, tmp_path):
    report = audit_dataset(bad_image_folder, tmp_path / "audit")
    scan = scan_dataset(bad_image_folder)  # training's default data.min_image_side
    assert sum(c["images"] for c in report["classes"].values()) == len(scan.samples)
    assert any("too small" in s["reason"] for s in report["skipped"])
    assert "balanced_accuracy" in report["metadata_baseline"]


def test_the_audit_warns_on_balanced_accuracy_not_plain_accuracy(tmp_path):
    """90% real, 10% AI, metadata useless: plain accuracy is 90% by always answering Real, balanced is ~50%."""
    rng = np.random.default_rng(0)
    for name, n in (("AI", 8), ("Real", 72)):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "d" / name / f"{i}.png")
    report = audit_dataset(tmp_path / "d", tmp_path / "audit", {"near_duplicates": None})
    assert report["metadata_baseline"]["balanced_accuracy"] < 0.6
    assert not any("metadata alone" in w for w in report["warnings"])


def test_every_command_scores_with_trainings_float32_matmul_precision():
    """train() sets `matmul_precision` ("high": TF32 on a GPU); eval.py, predict.py, serve.py... run through
    `cli.run`, which sets the same, so a GPU computes their logits as training's validation did."""
    import torch
    from omegaconf import OmegaConf

    torch.set_float32_matmul_precision("highest")
    try:
        seen = run(lambda cfg: torch.get_float32_matmul_precision(), OmegaConf.create({"task_name": "eval"}))
        assert seen == "high"
        seen = run(lambda cfg: torch.get_float32_matmul_precision(), OmegaConf.create({"matmul_precision": "medium"}))
        assert seen == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_a_per_source_metric_keeps_its_direction_and_names_its_checkpoint():
    from trustthepixels.metric_registry import metric_mode, metric_slug

    assert metric_mode("val/loss/cifake") == "min" and metric_mode("val/auroc/cifake") == "max"
    assert metric_mode("val/ece") == "min" and metric_mode("val/auroc") == "max"
    assert metric_slug("val/loss/cifake") == "loss_cifake" and metric_slug("val/auroc") == "auroc"


def test_the_benchmark_refuses_its_own_settings_in_one_line_before_any_row():
    """benchmark.yaml's own settings (sources, test_only, leave_one_out, folds, ...) are typed by BenchmarkSettings;
    the sweep's rows are computed from them, so a wrong value fails before the first row trains."""
    from trustthepixels.generalization.rows import benchmark_sources, rows_override

    with pytest.raises(ConfigError, match=r"^leave_one_out='maybe': use true"):  # was: true, silently
        rows_override({"a": "x", "b": "y"}, [], "maybe")
    with pytest.raises(ConfigError, match=r"^folds='five': use the number of cross-validation folds"):
        settings = {"sources": {"a": "x", "b": "y"}, "test_only": [], "leave_one_out": False, "folds": "five"}
        benchmark_sources(OmegaConf.create(settings | {"train_on": None, "device": "auto"}))


class _RunsCode:
    """What a hostile checkpoint pickles: unpickling it with the full unpickler runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_hostile_checkpoint_never_runs_code_in_any_command(tmp_path, image_folder):
    """Even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which turns weights_only off wherever it is not passed."""
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _RunsCode(marker), "epoch": 0}, evil)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    commands = [
        ("train.py", f"ckpt_path={evil}", f"data.root={image_folder}", *TINY),
        ("eval.py", f"ckpt_path={evil}", f"data.root={image_folder}"),
        ("predict.py", f"ckpt_path={evil}", f"input={image_folder}"),
        ("export.py", f"ckpt_path={evil}"),
        ("serve.py", f"ckpt_path={evil}", "port=0"),
        ("compare.py", f"inputs=[{evil},{evil}]", f"data.root={image_folder}"),
    ]
    for script, *args in commands:
        result = cli(script, *args, f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path, env=env)
        assert_one_message(result, "refused: it holds pickled objects other than tensors and plain data")
        assert not marker.exists(), script
    assert not list((tmp_path / "outputs").rglob("*.log"))  # no run folder left behind


@pytest.mark.slow
def test_resuming_from_what_is_not_a_checkpoint_is_one_line_and_leaves_no_folder(tmp_path, image_folder):
    import torch

    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {"w": torch.zeros(10_000)}, "hyper_parameters": {}}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "a-folder").mkdir()
    for given, phrase in [
        ("notes.txt", "not a PyTorch checkpoint"),
        ("truncated.ckpt", "truncated or damaged"),
        ("a-folder", "a folder, not a checkpoint file"),
    ]:
        result = cli("train.py", f"ckpt_path={tmp_path / given}", f"data.root={image_folder}", *TINY,
                     f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path)  # fmt: skip
        assert_one_message(result, phrase, "last.ckpt")
        assert len(result.stderr.strip().splitlines()) <= 6
        assert not (tmp_path / "outputs" / "train").exists(), given  # no run folder, nor its empty parents


@pytest.mark.slow
def test_wrong_trainer_and_optimizer_settings_are_one_line_before_anything_loads(tmp_path):
    for args, phrase in [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': use a whole number or null"),
        (["+trainer.max_epoch=3"], "trainer.max_epoch is not a setting: did you mean trainer.max_epochs?"),
        (["model.optimizer.lr=abc"], "model.optimizer.lr='abc': use a number"),
        (["+data.batchsize=8"], "data.batchsize is not a setting: did you mean data.batch_size?"),
        (["trainer=gpu"] if not _has_cuda() else ["trainer.precision=17"], "trainer."),
    ]:
        result = cli("train.py", *args, "model.pretrained=false", f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path)
        assert_one_message(result, phrase)
        assert "Backbone" not in result.stdout + result.stderr  # refused before the model was built
        assert not (tmp_path / "outputs" / "train").exists(), args


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_busy_port_is_one_line(tmp_path, trained_checkpoint):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve.py", f"ckpt_path={trained_checkpoint}", f"port={port}",
                     f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path)  # fmt: skip
    assert_one_message(result, f"port={port}", f"port={port + 1}")
    assert len(result.stderr.strip().splitlines()) <= 6


@pytest.mark.slow
def test_ctrl_c_is_a_short_stopped_line_and_no_partial_output(tmp_path, trained_checkpoint, shared_dir):
    """SIGINT while predict.py scores: one line, status 130, and no predictions file that looks complete."""
    import signal
    import time

    images = shared_dir / "data" / "cifake-8000"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={trained_checkpoint}", f"input={images}",
         "batch_size=1", "num_workers=0", f"paths.log_dir={tmp_path / 'outputs'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal delivers it: an ignored SIGINT is inherited (a background job, or the test process
        # after some earlier test), and the command would never see it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip

    def loaded() -> bool:  # the command is inside its run (the checkpoint is loaded): scanning or scoring follow
        return any("Loaded" in log.read_text() for log in (tmp_path / "outputs").rglob("predict.log"))

    deadline = time.monotonic() + 120
    while not loaded() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # Then scanning and scoring 8000 images one by one: seconds at least. A Ctrl-C there leaves nothing half-written.
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "Stopped (Ctrl-C)."
    assert not list((tmp_path / "outputs").rglob("predictions.csv"))
