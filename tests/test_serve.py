"""serve.py: the API against a real server on a loopback port, batching, the ONNX backend, and the page in a
real browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn

from trustthepixels.config import validated
from trustthepixels.detector.scoring import InferenceDataset
from trustthepixels.export.exporter import export_onnx
from trustthepixels.serving.app import create_app
from trustthepixels.serving.backends import OnnxBackend, TorchBackend
from trustthepixels.serving.batching import MicroBatcher, Overloaded
from trustthepixels.serving.server import uvicorn_config
from trustthepixels.serving.settings import ServeSettings

from .conftest import REPO, compose_cfg

ARTIFACTS = REPO / "outputs" / "test-artifacts"


@contextmanager
def running(app, max_request_mb: float = 64.0, protocol_log: list | None = None, **guard) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread, as serve.py runs it; yields its base URL.
    `protocol_log` collects each connection's protocol when it ends (what it read); `guard` is the connection
    settings (max_connections, header_timeout_s, body_timeout_s)."""
    settings = validated(ServeSettings, {"port": 0, "max_request_mb": max_request_mb, **guard}, "")
    config = uvicorn_config(app, settings, log_level="warning", lifespan="on")
    if protocol_log is not None:

        class Recorded(config.http):
            def connection_lost(self, exc):
                protocol_log.append(self)
                super().connection_lost(exc)

        config.http = Recorded
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def backend(trained_checkpoint) -> TorchBackend:
    return TorchBackend(trained_checkpoint, device="cpu")


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (p.name, p.read_bytes())) for p in paths]


def test_api_scores_as_predict_does_and_names_every_bad_file(backend, shared_dir, tmp_path):
    real = sorted((shared_dir / "data" / "real-vs-ai" / "AI").iterdir())[:2]
    bad = shared_dir / "data" / "bad-inputs"
    app = create_app(backend, max_upload_mb=2)
    named = re.findall(r"(/v1/\w+|/openapi\.json)", (REPO / "configs" / "hydra" / "help" / "serve.yaml").read_text())
    assert len(named) >= 3 and set(named) <= {route.path for route in app.routes}  # --help names real endpoints
    with running(app) as url:
        assert httpx.get(f"{url}/v1/health").json()["status"] == "ok"
        info = httpx.get(f"{url}/v1/model").json()
        assert info["backbone"] == "resnet18" and info["input_size"] == 32
        assert info["threshold_source"].startswith("balanced accuracy on calibration part of")
        assert info["warning"].startswith("This detector is weak: its validation AUROC")
        assert "nan" not in info["warning"]  # 1 + 1 validation images: too few for an interval, and it says so
        assert "val/auroc" in info["val_metrics"]

        files = [*real, *(bad / n for n in ("text_file_named_as.jpg", "decompression_bomb_20000x20000.png",
                 "truncated_half.jpg", "one_pixel_1x1.jpg", "empty_zero_bytes.jpg", "cmyk_mode.jpg"))]  # fmt: skip
        response = httpx.post(f"{url}/v1/predict", files=upload(*files), timeout=60)
        assert response.status_code == 200
        results = {r["filename"]: r for r in response.json()["results"]}
        assert [r["filename"] for r in response.json()["results"]] == [p.name for p in files]
        # The same number predict.py computes for the same file: one preprocessing, one model.
        dataset = InferenceDataset(real, backend.info.data_config, backend.info.min_image_side)
        expected, familiarity = backend.score(torch.stack([dataset[i][0] for i in range(2)]))
        for path, p, f in zip(real, expected, familiarity, strict=True):
            assert results[path.name]["p_ai"] == pytest.approx(p, abs=1e-6)
            # The checkpoint's record decides, with abstention by default (as predict.py does).
            assert results[path.name]["label"] == backend.info.rule.verdict(p, f)
            assert set(results[path.name]["timing_ms"]) == {"decode", "queue", "model", "total"}
        assert results["cmyk_mode.jpg"]["verdict"] in ("AI", "Real", "uncertain", "unfamiliar")  # odd but scored
        reasons = {name: r.get("reason") for name, r in results.items()}
        assert reasons["text_file_named_as.jpg"] == "not_an_image"
        assert reasons["decompression_bomb_20000x20000.png"] == "decompression_bomb"  # Pillow refuses its header
        assert reasons["truncated_half.jpg"] == "truncated"
        assert reasons["one_pixel_1x1.jpg"] == "too_small"
        assert reasons["empty_zero_bytes.jpg"] == "empty"

        nothing = httpx.post(f"{url}/v1/predict", files=upload(bad / "text_file_named_as.jpg"))
        assert nothing.status_code == 422 and "not an image" in nothing.json()["results"][0]["error"]
        big = tmp_path / "big.jpg"
        big.write_bytes(real[0].read_bytes() + b"\0" * (3 * 2**20))
        too_large = httpx.post(f"{url}/v1/predict", files=upload(big))
        assert too_large.status_code == 413 and too_large.json()["results"][0]["reason"] == "too_large"
        assert httpx.post(f"{url}/v1/predict").status_code == 422  # no file field at all


def test_concurrent_requests_share_forward_passes(trained_checkpoint, shared_dir):
    gate = threading.Event()
    gated = TorchBackend(trained_checkpoint, device="cpu")
    forward = gated.score
    gated.score = lambda images: (gate.wait(60), forward(images))[1]
    images = sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[:9]
    with running(create_app(gated, batch_size=16, max_wait_ms=0)) as url, ThreadPoolExecutor(9) as pool:

        def one(path: Path) -> dict:
            return httpx.post(f"{url}/v1/predict", files=upload(path), timeout=60).json()["results"][0]

        # While the model is busy with the first image, eight requests arrive: they share the next forward pass.
        first = pool.submit(one, images[0])
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["batches_running"] == 1)
        rest = [pool.submit(one, path) for path in images[1:]]
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["queued_images"] == 8)
        gate.set()
        results = [first.result(), *(f.result() for f in rest)]
        health = httpx.get(f"{url}/v1/health").json()
    assert [r["batch_size"] for r in results] == [1] + [8] * 8
    assert health["images"] == 9 and health["batches"] == 2
    # Batched or not, each image gets its own score: the batch of eight equals eight forward passes of one.
    dataset = InferenceDataset(images[1:], gated.info.data_config, gated.info.min_image_side)
    alone = [forward(dataset[i][0][None])[0][0] for i in range(8)]
    assert np.allclose([r["p_ai"] for r in results[1:]], alone, atol=1e-5)


def test_full_queue_answers_503_with_retry_after(trained_checkpoint, shared_dir):
    gate = threading.Event()
    gated = TorchBackend(trained_checkpoint, device="cpu")
    forward = gated.score
    gated.score = lambda images: (gate.wait(60), forward(images))[1]  # the real model, held at the door
    image = sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[0]
    with running(create_app(gated, batch_size=1, max_wait_ms=0, max_queue=1)) as url, ThreadPoolExecutor(2) as pool:
        post = partial(httpx.post, f"{url}/v1/predict", files=upload(image), timeout=60)
        # One image in the model (held), one in the queue: the queue is full...
        first = pool.submit(post)
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["batches_running"] == 1)
        second = pool.submit(post)
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["queued_images"] == 1)
        # ...so the next request is turned away at once, with a hint when to come back.
        busy = post()
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_closing_scores_what_is_queued_and_refuses_new_images():
    async def scenario():
        batcher = MicroBatcher(
            lambda x: (x.float().mean(dim=(1, 2, 3)).numpy(), np.full(len(x), np.nan)),
            max_batch=2,
            max_wait_ms=1,
            max_queue=256,
        )
        batcher.start()
        images = [torch.full((3, 4, 4), v, dtype=torch.uint8) for v in range(5)]
        pending = [asyncio.ensure_future(batcher.submit(i, batcher.admit(1))) for i in images]
        await asyncio.sleep(0)
        await batcher.close()
        scores = [(await p).p_ai for p in pending]
        with pytest.raises(Overloaded):
            batcher.admit(1)
        return scores

    assert asyncio.run(scenario()) == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.slow
def test_onnx_backend_gives_the_torch_scores_and_verdicts(trained_checkpoint, shared_dir, tmp_path, caplog):
    onnx_path = tmp_path / "detector.onnx"
    export_onnx(
        compose_cfg(
            [
                f"ckpt_path={trained_checkpoint}",
                f"check_images={shared_dir / 'data' / 'real-vs-ai'}",
                "check_limit=8",
                f"output={onnx_path}",
            ],
            tmp_path,
            config_name="export",
        )
    )
    from omegaconf import OmegaConf

    from trustthepixels.detector.checkpoint import load_detector

    abstain = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "abstain" / "default.yaml"))
    onnx = OnnxBackend(onnx_path, abstain=abstain)
    backend = TorchBackend(trained_checkpoint, device="cpu", abstain=abstain)
    assert onnx.info.rule.value == pytest.approx(backend.info.rule.value)
    assert onnx.info.rule.familiar_min == backend.info.rule.familiar_min is not None
    assert onnx.info.data_config["input_size"] == list(backend.info.data_config["input_size"])
    images = sorted((shared_dir / "data" / "real-vs-ai" / "AI").iterdir())[:6]
    with running(create_app(onnx)) as onnx_url, running(create_app(backend)) as torch_url:
        got = httpx.post(f"{onnx_url}/v1/predict", files=upload(*images), timeout=60).json()["results"]
        want = httpx.post(f"{torch_url}/v1/predict", files=upload(*images), timeout=60).json()["results"]
    assert np.allclose([r["p_ai"] for r in got], [r["p_ai"] for r in want], atol=1e-4)
    n_reference = len(load_detector(trained_checkpoint).calibration.reference)
    # A rank among the calibration images: rounding may move an image past one of them (export.py's own check).
    assert np.allclose([r["familiarity"] for r in got], [r["familiarity"] for r in want], atol=1.5 / n_reference)
    assert [r["verdict"] for r in got] == [r["verdict"] for r in want]  # one rule, whichever backend
    # The ONNX file decides by the record it was exported with: another alpha is said to need calibrate.py.
    with caplog.at_level(logging.WARNING):
        assert OnnxBackend(onnx_path, abstain=abstain | {"alpha": 0.2}).info.rule.sets.alpha == 0.05
    assert "abstain.alpha=0.2 is not used: the calibration record was fitted at alpha 0.05" in caplog.text


BAR_COLOURS = {"ai": "rgb(179, 38, 30)", "real": "rgb(27, 110, 58)", "none": "rgb(138, 138, 160)"}
VERDICT_TEXT = re.compile("Likely AI-generated|Likely real|Can't tell|Unlike the images this detector learned from")


def chromium_path() -> str:
    path = os.environ.get("TTP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium executable (apt-get install -y chromium, or set TTP_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.slow
def test_page_in_a_real_browser(backend, trained_checkpoint, shared_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    image = sorted((shared_dir / "data" / "real-vs-ai" / "AI").iterdir())[0]
    fake = tmp_path / "notes.jpg"
    fake.write_text("This is a text file with a .jpg name.\n")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(create_app(backend)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 900})
        asked = []
        page.on("request", lambda request: asked.append(request.url) if "v1/predict" in request.url else None)

        def check_on_page(server: str):
            """Open the page, wait for the model, pick the image: its result card."""
            page.goto(f"{server}/")
            expect(page.locator("#model-line")).to_contain_text("resnet18")
            page.set_input_files("#picker", str(image))
            return page.locator(".card").first

        card = check_on_page(url)
        # A verdict, whichever the record gives this photo (2 + 2 calibration images: often unfamiliar).
        expect(card.locator(".verdict")).to_have_text(VERDICT_TEXT)
        # 3 + 3 validation images: the AUROC interval reaches far below 0.6, and the page says so.
        expect(page.locator("#model-warning")).to_contain_text("This detector is weak")
        expect(card.locator(".detail")).to_contain_text("P(AI) =")
        assert asked[-1].endswith("explain=false")  # Grad-CAM only when asked for, image by image
        # Plain AI/Real verdicts: the bar in the verdict's colour, and Grad-CAM beside an image already checked.
        plain = TorchBackend(trained_checkpoint, device="cpu", abstain={"enabled": False})
        with running(create_app(plain)) as judging:
            card = check_on_page(judging)
            expect(card.locator(".verdict")).to_have_text(re.compile("Likely AI-generated|Likely real"))
            colour = BAR_COLOURS["ai" if "AI" in card.locator(".verdict").inner_text() else "real"]
            assert card.locator(".fill").evaluate("e => getComputedStyle(e).backgroundColor") == colour
            expect(card.locator(".threshold-label")).to_contain_text("threshold 0.")
            card.locator("button.explain").click()
            expect(card.locator(".heatmap-figure img")).to_have_attribute("src", re.compile(r"^data:image/png"))
            expect(card.locator(".heatmap-figure .scale-words")).to_contain_text("where the model saw signs of AI")
            expect(card.locator("img.preview")).to_have_attribute("src", re.compile(r"^blob:"))  # still the photo
            assert asked[-1].endswith("explain=true")
            page.set_input_files("#picker", str(fake))
            bad = page.locator(".card").first
            expect(bad.locator(".verdict")).to_have_text("Cannot check this file")
            expect(bad.locator(".detail")).to_have_text("This file is not an image.")  # plain words, not Pillow's
            shot = page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
            (REPO / "docs" / "serve-page.png").write_bytes(shot)  # the picture docs/ shows: never stale
            # The detector's card and the API reference, as pages that need no network; the page's icon.
            page.goto(f"{judging}/static/card.html")
            expect(page.locator("#card-body")).to_contain_text("AI when P(AI) >")
            page.goto(f"{judging}/static/api.html")
            expect(page.locator("#api-body")).to_contain_text("POST /v1/predict")
            assert httpx.get(f"{judging}/static/favicon.svg").headers["content-type"].startswith("image/svg")
        small = browser.new_page(viewport={"width": 390, "height": 800})  # a phone
        small.goto(f"{url}/")
        assert small.evaluate("document.documentElement.scrollWidth") <= 390
        # A photo is unlike the generated patterns this detector learnt from: the page says so first, and why.
        abstaining = TorchBackend(trained_checkpoint, device="cpu", abstain={"enabled": True, "alpha": 0.05})
        with running(create_app(abstaining)) as unsure:
            card = check_on_page(unsure)
            expect(card.locator(".verdict")).to_have_text("Unlike the images this detector learned from")
            expect(card.locator(".detail")).to_contain_text("further from everything the detector was trained on")
            assert card.locator(".fill").evaluate("e => getComputedStyle(e).backgroundColor") == BAR_COLOURS["none"]
            expect(card.locator("button.explain")).to_be_hidden()  # no map for a score that means little
        # Without the familiarity cutoff, a detector that cannot tell (3 validation images per class: no basis at
        # alpha 0.05) says that, and why.
        sets_only = {"enabled": True, "alpha": 0.05, "familiar_quantile": None}
        with running(create_app(TorchBackend(trained_checkpoint, device="cpu", abstain=sets_only))) as unsure:
            card = check_on_page(unsure)
            expect(card.locator(".verdict")).to_have_text("Can't tell")
            expect(card.locator(".detail")).to_contain_text("no basis for a verdict")
        with running(create_app(backend, api_key="s3cret")) as keyed:  # a server that needs its API key
            page.goto(f"{keyed}/")
            expect(page.locator("#status")).to_have_text("This server needs its API key.")
            page.fill("#api-key", "s3cret")
            page.press("#api-key", "Enter")
            expect(page.locator("#model-line")).to_contain_text("resnet18")
            page.set_input_files("#picker", str(image))
            expect(page.locator(".card").first.locator(".verdict")).to_have_text(VERDICT_TEXT)
        browser.close()
    assert (ARTIFACTS / "serve-page.png").read_bytes().startswith(b"\x89PNG")
