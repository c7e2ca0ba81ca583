"""Nothing breaks in combination: documented commands run as a user types them, and what one writes is read by
the commands that consume it (never a file built by hand). One predictions format, one verdict rule, and a
user's mistake is one line before anything slow."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustthepixels.detector.predictions import COLUMNS, read_predictions

from .conftest import REPO, TINY, write_image_folder


def command(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python <script> args...` as a user runs it (no HYDRA_FULL_ERROR: errors as a user sees them)."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment |= {"TTP_SHARED_DIR": str(REPO.parent / "shared"), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The user's mistake as one `Error:` line (then the hint about tracebacks), at the end, and no traceback."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-2].startswith("Error: ") and "HYDRA_FULL_ERROR" in lines[-1], result.stderr
    assert sum(line.startswith("Error: ") for line in lines) == 1 and "Traceback" not in result.stdout + result.stderr
    return lines[-2]


def columns_of(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


@pytest.mark.slow
def test_cross_validation_sweep_eval_and_checkpoints_feed_compare(tmp_path):
    """The README's k-fold command writes summary.md and oof_predictions.csv (with each image's source); compare.py
    reads the sweep, eval.py's predictions and a checkpoint side by side, and a run's predictions too."""
    folder = write_image_folder(tmp_path / "faces", per_class=15, size=40)
    sweep = tmp_path / "cv"
    ok(command(
        "train.py", "-m", "data.folds=3", "data.fold=range(3)", f"data.root={folder}", *TINY, "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    ))  # fmt: skip
    summary = (sweep / "summary.md").read_text()
    assert "## Cross-validation" in summary and "3 of 3 folds completed" in summary
    assert "Pooled out-of-fold (30 images" in summary
    assert columns_of(sweep / "oof_predictions.csv") == ["fold", *COLUMNS]
    oof = read_predictions(sweep / "oof_predictions.csv")
    assert sorted(p.path for p in oof) == sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*.*"))
    assert {p.source for p in oof} == {"faces"} and {p.context["fold"] for p in oof} == {"0", "1", "2"}
    # Each fold decides at its own checkpoint's calibrated threshold, and says so in every row.
    for fold in range(3):
        (ckpt,) = (sweep / str(fold) / "checkpoints").glob("epoch*.ckpt")
        from trustthepixels.detector.checkpoint import load_detector

        rows = [p for p in oof if p.context["fold"] == str(fold)]
        assert {p.threshold for p in rows} == {load_detector(ckpt).calibration.threshold}

    (fold0,) = (sweep / "0" / "checkpoints").glob("epoch*.ckpt")
    evaluated = tmp_path / "eval"
    ok(command("eval.py", f"ckpt_path={fold0}", f"data.root={folder}", "robustness=false", "data.num_workers=0",
               f"hydra.run.dir={evaluated}", cwd=tmp_path))  # fmt: skip
    assert columns_of(evaluated / "predictions.csv") == ["set", *COLUMNS]

    # The whole folder: the sweep's out-of-fold scores, eval.py's, and the checkpoint scored by compare.py itself.
    compared = tmp_path / "compare-all"
    ok(command("compare.py", f"inputs=[{sweep},{evaluated / 'predictions.csv'},{fold0}]", f"data.root={folder}",
               "data.num_workers=0", "bootstrap=200", f"hydra.run.dir={compared}", cwd=tmp_path))  # fmt: skip
    result = json.loads((compared / "comparison.json").read_text())
    assert result["images"] == 30 and len(result["pairs"]) == 3
    # eval.py's file and the checkpoint are the same model on the same images: the same scores to the last digit.
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    same = pairs[("eval", "resnet18 (0)")]
    assert same["delong"]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert same["mcnemar"]["only_a_right"] == same["mcnemar"]["only_b_right"] == 0
    assert all("Holm" in p["sentence"] and p["delong"]["p_holm"] >= p["delong"]["p"] for p in result["pairs"])

    # A run's predictions (its test split) mixed with eval.py's and a checkpoint's: the images they share.
    compared = tmp_path / "compare-run"
    ok(command("compare.py", f"inputs=[{sweep / '0'},{evaluated / 'predictions.csv'},{fold0}]", "data.num_workers=0",
               "bootstrap=200", f"hydra.run.dir={compared}", cwd=tmp_path))  # fmt: skip
    result = json.loads((compared / "comparison.json").read_text())
    assert result["images"] == len(read_predictions(sweep / "0" / "predictions.csv")) == 10
    for pair in result["pairs"]:  # one model, three ways, the same scores
        assert pair["delong"]["difference"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_a_seed_sweep_summarises_each_configuration(tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=8, size=32)
    sweep = tmp_path / "seeds"
    ok(command("train.py", "-m", "seed=1,2", "debug=fdr", *TINY, f"data.root={folder}", f"hydra.sweep.dir={sweep}",
               cwd=tmp_path))  # fmt: skip
    summary = (sweep / "summary.md").read_text()
    assert "## Seeds" in summary and f"data.root={folder}` | 2 | " in summary and " ± " in summary
    with open(sweep / "summary.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["completed", "completed"]


@pytest.mark.slow
def test_shared_benchmark_with_an_added_source(tmp_path):
    """`benchmark=shared` plus a source of one's own (`+sources.NAME=PATH`, what the error for `sources=` says)."""
    extra = write_image_folder(tmp_path / "mine", per_class=12, size=40)
    args = ["benchmark=shared", "~sources.diffusiondb_coco", "test_only=[cifake,ml72,poidh,mine]", "debug=limit", *TINY,
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path / 'outputs'}", f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    hint = one_line_error(command("benchmark.py", *args, f"sources={{a: {extra}, b: {extra}}}", cwd=tmp_path))
    assert "+sources.NAME=VALUE" in hint
    ok(command("benchmark.py", *args, f"+sources.mine={extra}", cwd=tmp_path))
    (sweep,) = (tmp_path / "outputs" / "benchmark" / "multiruns").iterdir()
    with open(sweep / "matrix.csv", newline="") as f:
        cells = {(c["trained_on"], c["tested_on"]): c for c in csv.DictReader(f)}
    assert set(cells) == {("real_vs_ai", s) for s in ("real_vs_ai", "cifake", "ml72", "poidh", "mine")}
    assert cells[("real_vs_ai", "mine")]["images"] == "24" and cells[("real_vs_ai", "ml72")]["images"] == "100"
    # Abstention per cell (abstain.enabled by default), and the summary line.
    for cell in cells.values():
        assert 0 <= float(cell["coverage"]) <= 1 and 0 <= float(cell["confident_errors"]) <= float(cell["coverage"])
        assert float(cell["coverage_lo"]) <= float(cell["coverage"]) <= float(cell["coverage_hi"])
    assert "out-of-source confident-error rate" in (sweep / "matrix.md").read_text()
    (row,) = [d for d in sweep.iterdir() if (d / "benchmark_row.json").is_file()]
    predictions = read_predictions(row / "benchmark_predictions.csv")
    assert columns_of(row / "benchmark_predictions.csv") == ["tested_on", *COLUMNS]
    counts = {name: sum(p.context["tested_on"] == name for p in predictions) for name in ("mine", "ml72")}
    assert counts == {"mine": 24, "ml72": 100}
    threshold = json.loads((row / "benchmark_row.json").read_text())["threshold"]
    assert {p.threshold for p in predictions} == {threshold}
    # Familiarity per out-of-source cell, and a model card of the row's checkpoint that shows the row.
    assert all(0 <= float(cells[("real_vs_ai", s)]["familiarity_auroc"]) <= 1 for s in ("cifake", "ml72", "mine"))
    assert cells[("real_vs_ai", "real_vs_ai")]["familiarity_auroc"] == ""
    checkpoint = json.loads((row / "benchmark_row.json").read_text())["checkpoint"]
    ok(command("export.py", f"ckpt_path={checkpoint}", "format=hf", f"output={tmp_path / 'card'}", cwd=tmp_path))
    card = (tmp_path / "card" / "README.md").read_text()
    assert "## Across sources" in card and "| mine | 24 |" in card and "The whole matrix" in card
    # The abstention trade-off from the sweep's files alone: at the default quantile, the matrix's own figure.
    trade = ok(command("bench/bench_abstention.py", str(sweep), "--quantiles", "0.99", "0.8",
                       cwd=tmp_path)).stdout  # fmt: skip
    pooled = re.search(r"confident-error rate (\d\.\d{3}) \(pooled", (sweep / "matrix.md").read_text()).group(1)
    assert re.search(rf"^\| 0\.99 \| [^|]+ \| [^|]+ \| [^|]+ \| {pooled} \|", trade, flags=re.MULTILINE), trade


def test_an_offline_users_wrong_data_root_is_one_line_before_any_weights(tmp_path):
    result = command(
        "train.py", "data.root=/no/such/folder", "data.download=false", cwd=tmp_path,
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert "data.root=/no/such/folder does not exist" in one_line_error(result)
    assert "weights" not in result.stdout + result.stderr and "Retrying" not in result.stdout + result.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.log"))  # no folder left


@pytest.mark.slow
def test_an_unreachable_hub_switches_to_offline_mode_at_once(tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=4, size=32)
    result = command(
        "train.py", f"data.root={folder}", "model=resnet18", "model.pretrained=true", cwd=tmp_path,
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")},  # port 9: nothing listens
    )  # fmt: skip
    line = one_line_error(result)
    assert "pretrained weights for 'resnet18'" in line and "offline" in line and "model.weights=PATH" in line
    assert "experiment=real_vs_ai_lite0" in line  # the run that works offline
    assert "Retrying" not in result.stdout + result.stderr  # one failed request, no backoff
    assert "unreachable" in result.stdout + result.stderr and "offline mode" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_bad_ckpt_path_is_one_line_in_every_command(tmp_path):
    import torch

    from trustthepixels.detector.checkpoint import CheckpointError, read_checkpoint

    text, foreign, missing = tmp_path / "notes.ckpt", tmp_path / "foreign.ckpt", tmp_path / "missing.ckpt"
    text.write_text("this is not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, foreign)
    expected = {missing: "no such file", text: "not a PyTorch checkpoint", foreign: "not a detector checkpoint"}
    for path, words in expected.items():
        with pytest.raises(CheckpointError, match=words):
            read_checkpoint(path)
    image = write_image_folder(tmp_path / "images", per_class=1) / "AI" / "ai_0000.png"
    for script, path, extra in (
        ("eval.py", missing, []),
        ("predict.py", text, [f"input={image}"]),
        ("export.py", text, []),  # the file of the report: a traceback ending in KeyError
        ("serve.py", foreign, []),
    ):
        line = one_line_error(command(script, f"ckpt_path={path}", *extra, cwd=tmp_path))
        assert line.startswith(f"Error: ckpt_path={path}: ") and expected[path] in line, script
    assert expected[text] in one_line_error(command("compare.py", f"inputs=[{text},{text}]", cwd=tmp_path))
    leftovers = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()] if (tmp_path / "outputs").exists() else []
    assert leftovers == []  # a failed command leaves no run folder behind


@pytest.mark.slow  # subprocess runs end to end (the fast suite keeps under 5 minutes)
def test_a_failed_command_never_removes_a_folder_the_user_named_that_held_anything(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.log").write_text("my own notes\n")
    one_line_error(command("eval.py", f"ckpt_path={tmp_path / 'x.ckpt'}", f"hydra.run.dir={mine}", cwd=tmp_path))
    assert (mine / "notes.log").read_text() == "my own notes\n"
    fresh = tmp_path / "fresh"
    one_line_error(command("eval.py", f"ckpt_path={tmp_path / 'x.ckpt'}", f"hydra.run.dir={fresh}", cwd=tmp_path))
    assert not fresh.exists()  # made by the failed command, so removed with it


@pytest.mark.slow
def test_predict_and_serve_give_every_image_the_same_verdict(trained_checkpoint, shared_dir, tmp_path):
    """One verdict rule: by default both decide at the checkpoint's validation threshold."""
    import httpx

    from trustthepixels.serving.app import create_app
    from trustthepixels.serving.backends import load_backend

    from .conftest import compose_cfg
    from .test_serve import running, upload

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[:6]:
        shutil.copy(path, folder / path.name)
    ok(command("predict.py", f"ckpt_path={trained_checkpoint}", f"input={folder}", f"output={tmp_path / 'p.csv'}",
               "num_workers=0", cwd=tmp_path))  # fmt: skip
    predicted = {p.path: p for p in read_predictions(tmp_path / "p.csv")}
    backend = load_backend(compose_cfg([f"ckpt_path={trained_checkpoint}", "device=cpu"], tmp_path, "serve"))
    with running(create_app(backend)) as url:
        served = httpx.post(f"{url}/v1/predict", files=upload(*sorted(folder.iterdir())), timeout=60).json()
    assert served["threshold"] == next(iter(predicted.values())).threshold
    for result in served["results"]:
        mine = predicted[result["filename"]]
        assert result["p_ai"] == pytest.approx(mine.p_ai, abs=1e-6)
        assert result["verdict"] == mine.verdict
        assert result["familiarity"] == pytest.approx(mine.familiarity, abs=1e-6)
    # threshold= overrides the threshold, in predict.py as in serve.py; abstain.enabled=false gives plain verdicts
    ok(command("predict.py", f"ckpt_path={trained_checkpoint}", f"input={folder}", f"output={tmp_path / 'q.csv'}",
               "threshold=0.0", "abstain.enabled=false", "num_workers=0", cwd=tmp_path))  # fmt: skip
    assert {(p.threshold, p.verdict) for p in read_predictions(tmp_path / "q.csv")} == {(0.0, "AI")}
    # This checkpoint learnt from generated patterns: photos beyond all its validation images are unfamiliar before
    # any other rule; the others, with 3 validation images per class (no basis for sets at alpha 0.05), uncertain.
    for p in predicted.values():
        assert p.verdict == ("unfamiliar" if p.familiarity < 0.01 else "uncertain"), p
    assert any(p.verdict == "unfamiliar" for p in predicted.values())


def test_train_writes_the_verdicts_every_later_command_gives(trained_checkpoint):
    """train.py's predictions.csv is decided by the best checkpoint's own rule (`Detector.decision`, which predict,
    eval, serve and export use), so the model card's coverage read from that file is the served detector's."""
    from omegaconf import OmegaConf

    from trustthepixels.detector.checkpoint import load_detector

    abstain = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "abstain" / "default.yaml"))
    rule = load_detector(trained_checkpoint).decision(None, abstain)
    rows = read_predictions(trained_checkpoint.parent.parent / "predictions.csv")
    assert rows and rule.familiar_min is not None
    for p in rows:
        assert p.threshold == rule.value and p.verdict == rule.verdict(p.p_ai, p.familiarity), p


@pytest.mark.slow
def test_documented_commands_run_as_typed(trained_checkpoint, tmp_path):
    """The README's commands that other tests call as functions, run here as a user types them."""
    folder = write_image_folder(tmp_path / "photos", per_class=8, size=40)
    ok(command("audit_data.py", f"data.root={folder}", f"hydra.run.dir={tmp_path / 'audit'}", cwd=tmp_path))
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["classes"]["AI"]["images"] == 8
    exported = ok(command("export.py", f"ckpt_path={trained_checkpoint}", f"hydra.run.dir={tmp_path / 'export'}",
                          cwd=tmp_path))  # fmt: skip
    printed = exported.stdout + exported.stderr
    assert "onnx_ir" not in printed and "onnxscript" not in printed  # no line per folded constant or removed node
    assert (tmp_path / "export" / "detector.onnx").is_file()
    printed = ok(command("train.py", "--cfg", "job", cwd=tmp_path)).stdout
    assert "backbone: resnet50" in printed and "optimized_metric: val/auroc" in printed
    # tensorboard --logdir outputs: every run of the logs folder is listed.
    logs = trained_checkpoint.parent.parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tensorboard = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logs)]
    extra = ["--port", str(port), "--host", "127.0.0.1"]
    board = subprocess.Popen([*tensorboard, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                runs = httpx.get(f"http://127.0.0.1:{port}/data/runs", timeout=2).json()
                if runs:
                    break
            except httpx.HTTPError:
                pass
            assert board.poll() is None and time.monotonic() < deadline, "tensorboard did not list the run"
            time.sleep(0.5)
        assert runs == ["."]  # the run's own event files, at the top of the logs folder
    finally:
        board.terminate()
        board.wait(timeout=30)


COMMANDS = ["train.py", "eval.py", "calibrate.py", "compare.py", "predict.py", "serve.py", "export.py",
            "benchmark.py", "prepare_data.py", "audit_data.py"]  # fmt: skip


@pytest.mark.slow  # ten interpreters starting
@pytest.mark.parametrize("script", COMMANDS)
def test_help_says_what_the_command_does_its_main_settings_and_an_example(script, tmp_path):
    text = ok(command(script, "--help", cwd=tmp_path)).stdout
    assert text.startswith(f"{script}: ") and "Main settings" in text and f"python {script} " in text, text
    assert "== Config groups ==" not in text and "_schema" not in text  # not Hydra's stock page of internal groups
    assert not list(tmp_path.iterdir())  # it ran nothing
