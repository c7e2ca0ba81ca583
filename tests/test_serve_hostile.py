"""serve.py under hostile input, against a real uvicorn on a loopback port: oversized and chunked bodies, names
that must never reach the filesystem, images with too many pixels, overload, a failing model, keys and paths."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from trustthepixels.serving.app import create_app
from trustthepixels.serving.backends import TorchBackend
from trustthepixels.serving.batching import PixelBudget

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


def test_a_failing_model_answers_500_marks_health_and_recovers(trained_checkpoint, photo, caplog):
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
        for text, kind in (("CUDA out of memory", "RuntimeError"), ("returned 0 scores for 1 images", "ValueError")):
            failed = httpx.post(f"{url}/v1/predict", files=upload(photo), timeout=60)
            assert failed.status_code == 500 and "server's log" in failed.json()["detail"]
            health = httpx.get(f"{url}/v1/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            # The kind of error for the client, its text (which may hold paths) only in the server's log.
            assert health.json()["failure"] == kind and text not in health.text + failed.text
            assert text in caplog.text
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


# ------------------------------------------------------------------------------------ round 2 (issue 27)


def crafted_dds(path: Path) -> Path:
    """A 16x16 DDS whose header claims pixel format flags 0x400000: Pillow's DDS parser raises
    NotImplementedError on it, which no decoder's caller expected."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    data[80:84] = struct.pack("<I", 0x400000)
    path.write_bytes(bytes(data))
    return path


def test_a_crafted_file_is_one_refusal_beside_a_scored_image(backend, photo, tmp_path):
    dds = crafted_dds(tmp_path / "crafted.dds")
    with running(create_app(backend)) as url:
        response = httpx.post(f"{url}/v1/predict", files=upload(photo, dds), timeout=60)
    assert response.status_code == 200
    scored, refused = response.json()["results"]
    assert 0 <= scored["p_ai"] <= 1
    assert refused["reason"] == "unsupported_format" and "DDS" in refused["error"]


def test_idle_and_slow_clients_are_shed_and_health_still_answers(backend, caplog):
    with running(create_app(backend), max_connections=40, header_timeout_s=1.5) as url:
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(100)]  # more than the bound
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        try:
            health = httpx.get(f"{url}/v1/health", timeout=3)  # sheds the oldest idle connection to get in
            assert health.status_code == 200
            closed = sum(_closed(s) for s in idle)
            assert closed >= 100 - 40 + 1  # every connection past the bound closed an older idle one
            time.sleep(2)
            assert _closed(slow)  # no complete headers within 1.5 s
        finally:
            for s in [*idle, slow]:
                s.close()
    refusals = [r for r in caplog.records if r.name == "trustthepixels.serving.refusal"]
    assert 1 <= len(refusals) <= 4  # one line a second for each kind, not one per socket
    assert any("more like it" in r.getMessage() for r in refusals) or len(refusals) <= 2


def _closed_now(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the server has closed by now (each read without waiting)."""
    time.sleep(0.5)  # a closed connection's end reaches this side
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(1)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_keyless_upload_is_refused_from_its_headers(backend):
    counting, connections = CountingApp(create_app(backend, api_key="s3cret")), []
    with running(counting, protocol_log=connections) as url:
        head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # fmt: skip
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"\0" * 64 * 1024)
        status, sent = raw_request(url, head, iter([chunk] * 16 * 60))  # 60 MB offered
        assert status == 401 and sent < 60 * MIB
        wait_for(lambda: connections)
        assert counting.received == 0 and connections[0].body_read < MIB


def test_uploads_are_decoded_from_anonymous_files_only(backend, photo, tmp_path, monkeypatch):
    """Nothing an upload writes has a name in the temporary folder, so nothing is left when the server is killed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    big = tmp_path / "big.png"  # over Starlette's 1 MB in memory: spooled to a file
    Image.effect_noise((1024, 1024), 64).convert("RGB").save(big)
    seen = []
    preprocess = backend.preprocess
    monkeypatch.setattr(backend, "preprocess", lambda f: (seen.append(sorted(os.listdir(folder))), preprocess(f))[1])
    with running(create_app(backend)) as url:
        response = httpx.post(f"{url}/v1/predict", files=upload(big, photo), timeout=60)
    assert response.status_code == 200 and len(seen) == 2
    assert seen == [[], []]


def test_decoding_is_admitted_by_pixels_across_requests():
    async def scenario():
        budget, peak, inside = PixelBudget(100), [0], [0]

        async def decode(pixels):
            async with budget.hold(pixels):
                inside[0] += pixels
                peak[0] = max(peak[0], inside[0])
                await asyncio.sleep(0.01)
                inside[0] -= pixels

        await asyncio.gather(*(decode(p) for p in [60, 30, 30, 90, 10, 250, 40, 40, 40]))
        return peak[0], budget.used

    peak, left = asyncio.run(scenario())
    assert peak <= 250 and left == 0  # the 250-pixel image decodes alone; no mix passes the budget otherwise
    assert peak == 250


def test_the_uvicorn_internals_the_guard_uses_are_there():
    """guarded_protocol subclasses uvicorn's HTTP protocol: an upgrade that renames what it uses fails here,
    not silently in production (pyproject.toml bounds the versions this was checked with)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.flow_control import FlowControl

    from trustthepixels.serving.refusal import UVICORN_INTERNALS

    config = uvicorn.Config(lambda *a: None)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = AutoHTTPProtocol(config=config, server_state=uvicorn.server.ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    for name in UVICORN_INTERNALS["protocol"]:
        assert hasattr(protocol, name), name
    cycle = inspect.getsource(inspect.getmodule(AutoHTTPProtocol).RequestResponseCycle)  # the request cycle
    for name in UVICORN_INTERNALS["cycle"]:
        assert f"self.{name} =" in cycle, name
    for name in UVICORN_INTERNALS["flow_control"]:
        assert callable(getattr(FlowControl, name)), name


@pytest.mark.slow
def test_under_a_1024_file_limit_1500_idle_connections_leave_health_answering(trained_checkpoint, tmp_path):
    """serve.py as a user runs it under `ulimit -n 1024`: 1,500 connections that send nothing. The bound sits below
    the file limit and sheds the oldest idle connection for each new one, so accept() never fails (it flooded the
    log with 'Too many open files' before) and a health check always gets in."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this process may open at most {hard} files; the test holds 1,500 sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"

    def file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "serve.py"), f"ckpt_path={trained_checkpoint}", f"port={port}", "threads=1",
             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=file_limit,
        )  # fmt: skip
    idle = []
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/v1/health") or server.poll() is not None, seconds=120)
        assert server.poll() is None, log.read_text()[-3000:]
        before = log.stat().st_size
        for _ in range(1500):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert _closed_now(idle) >= 1500 - 1024  # shed, oldest first, to stay below the limit
        grown = log.stat().st_size - before
        assert grown < 64 * 1024, log.read_text()[-3000:]  # a few lines, not one per socket
        assert "Too many open files" not in log.read_text() and "Traceback" not in log.read_text()
    finally:
        for s in idle:
            s.close()
        server.kill()
        server.wait(timeout=30)
