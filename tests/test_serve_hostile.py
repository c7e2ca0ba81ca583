"""serve.py under hostile input, against a real uvicorn on a loopback port: oversized and chunked bodies, names
that must never reach the filesystem, images with too many pixels, overload, a failing model, keys and paths."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from trustthepixels.serving.app import create_app
from trustthepixels.serving.backends import TorchBackend

from .conftest import REPO
from .test_serve import running, upload, wait_for

MIB = 1 << 20


class CountingApp:
    """The ASGI app, counting the request body bytes it was handed (what the server read on its behalf)."""

    def __init__(self, app):
        self.app, self.received = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted if scope["type"] == "http" else receive, send)


@pytest.fixture(scope="module")
def backend(trained_checkpoint) -> TorchBackend:
    return TorchBackend(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def photo(shared_dir) -> Path:
    return sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[0]


def raw_request(url: str, head: bytes, body_chunks: Iterator[bytes]) -> tuple[int, int]:
    """Send a request over a plain socket, body chunk by chunk until the server answers or hangs up; returns the
    status code and the bytes sent (as a hostile client would: nothing waits for politeness)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        for chunk in body_chunks:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the answer has come
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sock.setblocking(True)
                sock.settimeout(5)
                sock.sendall(chunk)
                sock.setblocking(False)
                sent += len(chunk)
            except OSError:  # the server closed the connection
                break
        sock.setblocking(True)
        sock.settimeout(30)
        answer = sock.makefile("rb")
        status_line = answer.readline()
        try:  # the rest of the answer, then the server ends the connection (a reset: it left the body unread)
            while answer.readline():
                pass
        except ConnectionResetError:
            pass
    return int(status_line.split()[1]), sent


def test_an_oversized_body_is_refused_while_it_streams(backend):
    counting, connections = CountingApp(create_app(backend, max_request_mb=1)), []
    with running(counting, max_request_mb=1, protocol_log=connections) as url:
        # Chunked, 900 MB offered: refused having read at most the limit plus one socket read (64 KiB).
        head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # fmt: skip
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"\0" * 64 * 1024)
        status, sent = raw_request(url, head, iter([b"%x\r\n%s\r\n" % (len(part), part)] + [chunk] * (900 * 16)))
        assert status == 413 and sent < 900 * MIB
        wait_for(lambda: connections)
        assert MIB < connections[0].body_read <= MIB + 64 * 1024
        assert counting.received <= connections[0].body_read
        # Declared too large: refused before a byte of it is read.
        before = counting.received
        head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 943718400\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # fmt: skip
        status, _ = raw_request(url, head, iter([b"\0" * 64 * 1024] * 16))
        assert status == 413 and counting.received == before


def test_file_names_never_reach_the_filesystem(backend, photo):
    with running(create_app(backend)) as url:
        for name in ("photo.jp\x00g", "a." + "x" * 251, "../../etc/passwd", "con:"):
            boundary = "hostile"
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
            body = head.encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            response = httpx.post(f"{url}/v1/predict", content=body, timeout=60,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
            assert response.status_code == 200, (name, response.text[:300])
            assert 0 <= response.json()["results"][0]["p_ai"] <= 1


def test_images_with_too_many_pixels_are_refused_before_decoding(backend, photo, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 9_000)).save(huge)  # 90 megapixels in a few kilobytes
    decoded = []
    preprocess = backend.preprocess
    backend.preprocess = lambda path: (decoded.append(path), preprocess(path))[1]
    try:
        with running(create_app(backend, max_megapixels=24)) as url:
            response = httpx.post(f"{url}/v1/predict", files=upload(huge, photo), timeout=60)
    finally:
        backend.preprocess = preprocess
    huge_result, photo_result = response.json()["results"]
    assert huge_result["reason"] == "too_many_pixels" and "10000x9000" in huge_result["error"]
    assert "p_ai" in photo_result and len(decoded) == 1  # the photo alone reached the decoder


def test_a_request_is_admitted_whole_or_refused_whole_before_any_decoding(trained_checkpoint, shared_dir):
    gate = threading.Event()
    gated = TorchBackend(trained_checkpoint, device="cpu")
    forward, preprocess = gated.score, gated.preprocess
    gated.score = lambda images: (gate.wait(60), forward(images))[1]
    decoded = []
    gated.preprocess = lambda path: (decoded.append(path), preprocess(path))[1]
    photos = sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[:4]
    app = create_app(gated, batch_size=1, max_wait_ms=0, max_queue=3)
    with running(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/v1/predict", files=upload(photos[0]), timeout=60)
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["batches_running"] == 1)
        three = pool.submit(httpx.post, f"{url}/v1/predict", files=upload(*photos[1:4]), timeout=60)
        wait_for(lambda: httpx.get(f"{url}/v1/health").json()["queued_images"] == 3)
        refused = httpx.post(f"{url}/v1/predict", files=upload(photos[0], photos[1]), timeout=60)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert len(decoded) == 4  # the refused request's two images were never decoded
        assert httpx.get(f"{url}/v1/health").json()["status"] == "busy"  # not "ok" while it turns requests away
        gate.set()
        assert first.result().status_code == 200 and three.result().status_code == 200
        assert len(three.result().json()["results"]) == 3


def test_a_failing_model_answers_500_marks_health_and_recovers(trained_checkpoint, photo):
    flaky = TorchBackend(trained_checkpoint, device="cpu")
    forward = flaky.score
    failures = iter([RuntimeError("CUDA out of memory"), "short"])

    def score(images):
        failure = next(failures, None)
        if isinstance(failure, Exception):
            raise failure
        p_ai, familiarity = forward(images)
        return (p_ai[:0], familiarity[:0]) if failure == "short" else (p_ai, familiarity)

    flaky.score = score
    with running(create_app(flaky)) as url:
        for expected in ("CUDA out of memory", "returned 0 scores for 1 images"):
            failed = httpx.post(f"{url}/v1/predict", files=upload(photo), timeout=60)
            assert failed.status_code == 500 and expected in failed.json()["detail"]
            health = httpx.get(f"{url}/v1/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            assert expected in health.json()["failure"]
        assert httpx.post(f"{url}/v1/predict", files=upload(photo), timeout=60).status_code == 200  # recovered
        assert httpx.get(f"{url}/v1/health").json()["status"] == "ok"


def test_no_server_path_in_any_answer_docs_offline_and_an_optional_key(backend, trained_checkpoint, photo):
    with running(create_app(backend, api_key="s3cret")) as url:
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.post(f"{url}/v1/predict", files=upload(photo)).status_code == 401
        assert httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200
        key = {"Authorization": "Bearer s3cret"}
        model = httpx.get(f"{url}/v1/model", headers=key).text
        answer = httpx.post(f"{url}/v1/predict", files=upload(photo), headers=key, timeout=60).text
        assert httpx.get(f"{url}/docs").status_code == 404 and httpx.get(f"{url}/openapi.json").status_code == 200
    for text in (model, answer):
        assert str(trained_checkpoint.parent.parent.parent) not in text
        assert not any(isinstance(v, str) and v.startswith("/") for v in _values(json.loads(text)))
    assert json.loads(model)["model_file"] == trained_checkpoint.name


def _values(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)
    else:
        yield node


def test_serve_py_stops_gracefully_with_status_0(trained_checkpoint, tmp_path):
    """`python serve.py ckpt_path=...` as the README runs it; SIGTERM lets it finish and exit 0 (was 143)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(REPO / "serve.py"), f"ckpt_path={trained_checkpoint}", f"port={port}", "threads=1",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/v1/health") or server.poll() is not None, seconds=120)
        assert server.poll() is None, server.stdout.read().decode()[-3000:]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, server.stdout.read().decode()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
