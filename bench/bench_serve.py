"""Benchmark: serve.py under concurrent clients, with and without micro-batching, against predict.py's batches;
and with --hostile, serve.py under hostile load.

    python bench/bench_serve.py [--ckpt PATH] [--clients 16] [--requests 192] [--threads 2]
    python bench/bench_serve.py --hostile [--ckpt PATH] [--clients 16] [--requests 96]

The server is `python serve.py` in its own process (as a user runs it); the clients are one asyncio process
posting one real image per request (../shared/data/real-vs-ai). Reported per setting: images/s and the p50 / p95
latency a client sees. Settings: batching on (batch_size=32, max_wait_ms=5) and off (batch_size=1), both with
--clients concurrent clients, and one client sending one request at a time. The reference is predict.py's own
path (InferenceDataset + predict_logits, batches of 32) on the same images in this process: no HTTP at all.
Without --ckpt a real EfficientNet-Lite0 checkpoint is made first (shared ImageNet weights, 2 training batches).

--hostile runs one server (serve.py's defaults, an API key, and a file limit of 1,024 descriptors as `ulimit -n
1024` sets) through: a chunked 900 MB upload; 81-megapixel PNGs and 20-megapixel photos posted in parallel; file
names with a NUL, a 251-character extension and a path; 1,500 idle connections; 300 clients sending their headers
a byte a second; a keyless chunked 60 MB upload; 4 clients posting 32 images each of 23.9 megapixels (TIFF and PNG,
below the pixel limit); overload (`--clients` clients posting `--requests` requests of 32 images each). It prints
the server's peak resident memory (VmHWM), how much of an upload the client got to send and the server read (its
log) before refusal, /v1/health's slowest answer and the server log's growth during each attack, the share of the
images the model scored that reached a client, the count of 5xx answers other than 503, and the exit status after
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TTP_SHARED_DIR", REPO.parent / "shared"))


def make_checkpoint(tmp: Path) -> Path:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from trustthepixels.training import train

    overrides = [
        "experiment=real_vs_ai_lite0", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1", "logger=none",
        f"paths.output_dir={tmp / 'run'}", f"paths.data_dir={REPO / 'data'}",
    ]  # fmt: skip
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.shared_dir = str(SHARED)
    train(cfg)
    return next((tmp / "run" / "checkpoints").glob("epoch*.ckpt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """serve.py in its own process, as a user runs it; with `litserve`, the same model behind LitServe
    (bench/litserve_detector.py: batches of up to 32 within 5 ms, a 64 MB payload limit)."""

    def __init__(
        self,
        ckpt: Path,
        threads: int,
        batch_size: int,
        max_wait_ms: float,
        *overrides: str,
        litserve: bool = False,
        file_limit: int | None = None,
        api_key: str | None = None,
    ):
        self.port = free_port()
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if litserve:
            command = [sys.executable, str(REPO / "bench" / "litserve_detector.py"), str(ckpt), str(self.port),
                       str(threads)]  # fmt: skip
        else:
            command = [sys.executable, str(REPO / "serve.py"), f"ckpt_path={ckpt}", f"port={self.port}", "device=cpu",
                       f"threads={threads}", f"batch_size={batch_size}", f"max_wait_ms={max_wait_ms}",
                       *(overrides or ["max_queue=4096"]), f"hydra.run.dir={tempfile.mkdtemp()}"]  # fmt: skip
        self.log = Path(tempfile.mkdtemp()) / "server.log"  # what the server read of a refused body
        env = {**os.environ, "TTP_API_KEY": api_key} if api_key else None

        def limit_files() -> None:  # in the child: as `ulimit -n` would
            if file_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        with self.log.open("w") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit_files
            )
        self.url = f"http://127.0.0.1:{self.port}"
        health = "/health" if litserve else "/v1/health"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}{health}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[1]} did not start")
            time.sleep(0.2)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)

    def body_bytes_read(self) -> int | None:
        """What serve.py logged it read of the last body it stopped reading past the limit (None: no such line)."""
        found = re.findall(r"stopped reading it after (\d+) bytes", self.log.read_text())
        return int(found[-1]) if found else None

    def proc(self, name: str, key: str) -> int:
        """A number from /proc/<server>/<name> (status: kB, io: bytes)."""
        for line in Path(f"/proc/{self.process.pid}/{name}").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise KeyError(key)

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the server and every process it started (LitServe scores in a worker process),
        summed: an upper bound on what the machine needed at once."""
        total = 0
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        return total / 1024

    def tree(self) -> list[int]:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        found, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            children = [pid for pid, parent in parents.items() if parent in frontier]
            found += children
            frontier = children
        return found


async def load(url: str, images: list[bytes], requests: int, clients: int) -> tuple[float, list[float], float]:
    """`clients` concurrent clients share `requests` posts; returns images/s, latencies (ms), mean batch size."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            body = images[i % len(images)]
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/predict", files=[("file", (f"{i}.jpg", body))])
            response.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await client_warmup(http, url, images[0])
        before = await health(http, url)
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
        after = await health(http, url)
    if before is None:  # LitServe reports no batch sizes
        return requests / elapsed, latencies, float("nan")
    batches = after["batches"] - before["batches"]
    return requests / elapsed, latencies, (after["images"] - before["images"]) / max(batches, 1)


async def health(http: httpx.AsyncClient, url: str) -> dict | None:
    response = await http.get(f"{url}/v1/health")
    return response.json() if response.status_code == 200 else None


async def client_warmup(http: httpx.AsyncClient, url: str, body: bytes) -> None:
    for _ in range(3):
        (await http.post(f"{url}/v1/predict", files=[("file", ("warm.jpg", body))])).raise_for_status()


def reference(ckpt: Path, paths: list[Path], threads: int) -> float:
    """predict.py's path on the same images: decode + preprocess + batched forward, no HTTP."""
    from trustthepixels.detector.checkpoint import load_detector
    from trustthepixels.detector.scoring import InferenceDataset, predict_logits

    torch.set_num_threads(threads)
    detector = load_detector(ckpt)
    dataset = InferenceDataset(paths, detector.data_config, detector.min_image_side)
    predict_logits(detector.model, dataset, 32, 0)  # warm-up
    start = time.perf_counter()
    predict_logits(detector.model, dataset, 32, 0)
    return len(paths) / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# ---------------------------------------------------------------------------------------------- hostile load


def png_bytes(width: int, height: int, noise: bool = False) -> bytes:
    from PIL import Image

    image = Image.effect_noise((width, height), 64).convert("RGB") if noise else Image.new("RGB", (width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if not noise else "JPEG", quality=90)
    return buffer.getvalue()


def chunked_upload(server: Server, megabytes: int) -> tuple[int, int]:
    """A chunked multipart upload of `megabytes`, sent as fast as the server takes it, until it answers or ends the
    connection: (status, bytes the client got to send). What the server read is at most that, less what the two
    sockets' kernel buffers held (a few MB on loopback); tests/test_serve_hostile.py pins what the app was handed."""
    auth = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items()).encode()
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + auth +
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # fmt: skip
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"\0" * (1 << 16))
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        sock.settimeout(2)
        try:
            for _ in range(megabytes * 16):
                sock.sendall(chunk)
                sent += 1 << 16
        except OSError:  # refused: the server answered and ended the connection
            pass
        sock.settimeout(30)
        try:
            status = int(sock.makefile("rb").readline().split()[1])
        except (OSError, IndexError):
            status = 0  # the connection was reset before the answer could be read
    return status, sent


async def post_many(
    url: str, bodies: list[list[tuple[str, bytes]]], clients: int, headers: dict | None = None
) -> list[httpx.Response]:
    queue = iter(bodies)
    answers: list[httpx.Response] = []

    async def client(http: httpx.AsyncClient) -> None:
        for files in queue:
            answers.append(await http.post(f"{url}/v1/predict", files=[("file", f) for f in files]))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=headers or {}) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return answers


class HealthWatch:
    """/v1/health polled every 0.25 s from a thread while an attack runs: its slowest answer (a timeout: 10 s), and
    the server log's growth over the same time."""

    def __init__(self, server: Server, path: str):
        self.server, self.path, self.slowest, self.failed = server, path, 0.0, 0
        self.stopped = threading.Event()
        self.log_before = server.log.stat().st_size

    def __enter__(self) -> HealthWatch:
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stopped.is_set():
            start = time.perf_counter()
            try:
                ok = httpx.get(f"{self.server.url}{self.path}", timeout=10).status_code == 200
            except httpx.TransportError:
                ok = False
            self.slowest = max(self.slowest, time.perf_counter() - start)
            self.failed += not ok
            self.stopped.wait(0.25)

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()
        self.log_growth = self.server.log.stat().st_size - self.log_before

    def row(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"health slowest {self.slowest:.2f} s{failed}; log +{self.log_growth / 1024:.0f} KB"


def idle_connections(server: Server, count: int, seconds: float) -> int:
    """`count` connections that send nothing, held `seconds`: how many the server closed meanwhile."""
    sockets = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
    time.sleep(seconds)
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return closed


def slow_headers(server: Server, count: int, seconds: float) -> int:
    """`count` clients sending a request's headers a byte a second for `seconds`: how many the server cut off."""
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 64
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(count)]
    cut = set()
    for second in range(int(seconds)):
        for i, sock in enumerate(sockets):
            if i in cut:
                continue
            try:
                sock.send(head[second : second + 1])
            except OSError:
                cut.add(i)
        time.sleep(1)
    for i, sock in enumerate(sockets):
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                cut.add(i)
        except BlockingIOError:
            pass
        except OSError:
            cut.add(i)
        sock.close()
    return len(cut)


def large_images() -> list[tuple[str, bytes]]:
    """A 23.9-megapixel TIFF (deflate) and PNG, below serve.max_megapixels=24, a few MB each."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:4000, 0:5976]
    pixels = np.stack([(x * 7 + y) % 256, (x + y * 3) % 256, (x ^ y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    out = []
    for name, options in (("large.tif", {"format": "TIFF", "compression": "tiff_deflate"}), ("large.png", {})):
        buffer = io.BytesIO()
        image.save(buffer, **({"format": "PNG"} | options))
        out.append((name, buffer.getvalue()))
    return out


def hostile(ckpt: Path, threads: int, clients: int, requests: int, paths: list[Path], litserve: bool) -> dict:
    """Each scenario's figure for one server (serve.py's defaults with an API key under a 1,024-descriptor file
    limit, or the LitServe counterpart)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds thousands of sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    key = None if litserve else "bench-key"
    server = Server(ckpt, threads, 32, 5, "max_queue=256", litserve=litserve, file_limit=1024, api_key=key)
    health = "/health" if litserve else "/v1/health"
    rows: dict[str, str] = {}
    errors = 0

    def server_errors(answers: list[httpx.Response]) -> int:
        return sum(a.status_code >= 500 and a.status_code != 503 for a in answers)

    try:
        photo = paths[0].read_bytes()
        asyncio.run(post_many(server.url, [[("warm.jpg", photo)]] * 4, 1, server.headers))
        rows["peak RSS after start and warm-up"] = f"{server.peak_rss_mb():.0f} MB"

        status, sent = chunked_upload(server, 900)
        rows["chunked 900 MB upload (limit 64 MB)"] = f"HTTP {status}; client got {sent / 2**20:.1f} MB sent"
        if not litserve:
            read = server.body_bytes_read()
            over = "not logged" if read is None else f"limit + {(read - 64 * 2**20) / 1024:.1f} KiB"
            rows["  body the server read (target at most limit + 64 KiB)"] = over
        rows["  peak RSS after it"] = f"{server.peak_rss_mb():.0f} MB"

        huge = png_bytes(9000, 9000)  # 81 megapixels
        answers = asyncio.run(post_many(server.url, [[(f"huge{i}.png", huge)] for i in range(8)], 4, server.headers))
        errors += server_errors(answers)
        codes = sorted({a.status_code for a in answers})
        rows[f"8 x 81-MP PNGs ({len(huge) / 1024:.0f} KB each), 4 at once"] = f"HTTP {codes}"
        rows["  peak RSS after them"] = f"{server.peak_rss_mb():.0f} MB"
        large = png_bytes(5000, 4000, noise=True)  # 20 megapixels: decoded, within the limit
        answers = asyncio.run(post_many(server.url, [[(f"large{i}.jpg", large)] for i in range(16)], 8, server.headers))
        errors += server_errors(answers)
        rows[f"16 x 20-MP photos ({len(large) / 2**20:.1f} MB each), 8 at once"] = (
            f"{sum(a.status_code == 200 for a in answers)} of 16 scored"
        )
        rows["  peak RSS after them"] = f"{server.peak_rss_mb():.0f} MB"

        names = ["photo.jp\x00g", "a." + "x" * 251, "../../etc/passwd", "\u202egpj.exe"]
        answers = asyncio.run(post_many(server.url, [[(n, photo)] for n in names], 2, server.headers))
        errors += sum(a.status_code >= 500 for a in answers)
        rows["bad file names"] = ", ".join(str(a.status_code) for a in answers)

        with HealthWatch(server, health) as watch:
            closed = idle_connections(server, 1500, 5)
        rows["1,500 idle connections for 5 s (file limit 1,024)"] = f"{closed} closed by the server"
        rows["  while they were open"] = watch.row()
        with HealthWatch(server, health) as watch:
            cut = slow_headers(server, 300, 15)
        rows["300 clients sending headers a byte a second, 15 s"] = f"{cut} cut off"
        rows["  while they were sending"] = watch.row()
        if not litserve:
            bearer = server.headers
            server.headers = {}  # the next upload comes without the key
            status, sent = chunked_upload(server, 60)
            server.headers = bearer
            rows["keyless chunked 60 MB upload"] = f"HTTP {status}; client got {sent / 2**20:.1f} MB sent"

        mix = large_images()
        sizes = ", ".join(f"{len(b) / 2**20:.1f} MB" for _, b in mix)
        bodies = [[mix[i % 2]] for i in range(4 * 32)]
        with HealthWatch(server, health) as watch:
            start = time.perf_counter()
            answers = asyncio.run(post_many(server.url, bodies, 4, server.headers))
            elapsed = time.perf_counter() - start
        errors += server_errors(answers)
        rows[f"4 clients x 32 images of 23.9 MP, TIFF and PNG ({sizes})"] = (
            f"{sum(a.status_code == 200 for a in answers)} of {len(bodies)} scored, {elapsed:.0f} s"
        )
        rows["  while they were decoded"] = watch.row()
        rows["  peak RSS after them (target at most 2048 MB)"] = f"{server.peak_rss_mb():.0f} MB"

        key = f"overload: {clients} clients x {requests} requests of 32 images"
        if litserve:
            rows[key] = "n/a: one image per request"
            rows["  model work delivered to clients"] = "n/a"
        else:
            before = httpx.get(f"{server.url}/v1/health").json()["images"]
            batch = [(f"{i}.jpg", paths[i % len(paths)].read_bytes()) for i in range(32)]
            start = time.perf_counter()
            answers = asyncio.run(post_many(server.url, [batch] * requests, clients, server.headers))
            elapsed = time.perf_counter() - start
            model_images = httpx.get(f"{server.url}/v1/health").json()["images"] - before
            delivered = sum(len(a.json()["results"]) for a in answers if a.status_code == 200)
            busy = sum(a.status_code == 503 for a in answers)
            errors += server_errors(answers)
            rows[key] = f"{requests - busy} served, {busy} answered 503, {elapsed:.0f} s"
            rows["  model work delivered to clients"] = (
                f"{delivered} of {model_images} images ({delivered / max(model_images, 1):.0%})"
            )
        rows["peak RSS, whole run (target at most 2048 MB)"] = f"{server.peak_rss_mb():.0f} MB"
    finally:
        exit_status = server.stop()
    rows["5xx other than 503"] = str(errors)
    rows["exit status after SIGTERM"] = str(exit_status)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (and the reference)")
    parser.add_argument("--hostile", action="store_true", help="hostile load instead of throughput")
    parser.add_argument("--litserve", action="store_true", help="the same model behind LitServe, side by side")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    ckpt = args.ckpt or make_checkpoint(tmp)
    paths = sorted((SHARED / "data" / "real-vs-ai" / "Real").iterdir())[: args.images // 2]
    paths += sorted((SHARED / "data" / "real-vs-ai" / "AI").iterdir())[: args.images - len(paths)]
    if args.hostile:
        requests = args.requests if args.requests != 192 else 96
        ours = hostile(ckpt, args.threads, args.clients, requests, paths, litserve=False)
        theirs = hostile(ckpt, args.threads, args.clients, requests, paths, litserve=True) if args.litserve else {}
        print(f"\nHostile load: torch threads {args.threads}, {os.cpu_count()} cores, {ckpt.name}")
        print(f"{'':52s} {'serve.py':42s} {'LitServe' if theirs else ''}")
        for name, value in ours.items():
            print(f"{name:52s} {value:42s} {theirs.get(name, '')}")
        return
    images = [p.read_bytes() for p in paths]

    rows = []
    settings = [
        (f"batching, {args.clients} clients", 32, 5, args.clients, False),
        (f"no batching, {args.clients} clients", 1, 0, args.clients, False),
        ("one request at a time", 32, 5, 1, False),
    ]
    if args.litserve:
        settings.insert(1, (f"LitServe batching, {args.clients} clients", 32, 5, args.clients, True))
    for name, batch_size, wait, clients, litserve in settings:
        server = Server(ckpt, args.threads, batch_size, wait, litserve=litserve)
        try:
            requests = args.requests if clients > 1 else max(32, args.requests // 4)
            rate, latencies, mean_batch = asyncio.run(load(server.url, images, requests, clients))
        finally:
            server.stop()
        rows.append((name, rate, percentile(latencies, 50), percentile(latencies, 95), mean_batch))
    ref = reference(ckpt, paths, args.threads)

    print(
        f"\nserve.py, {len(paths)} real-vs-ai images (up to 512 px), "
        f"torch threads {args.threads}, {os.cpu_count()} cores"
    )
    print(f"{'setting':32s} {'images/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch':>6s} {'vs one-at-a-time':>17s}")
    single = rows[-1][1]
    for name, rate, p50, p95, batch in rows:
        print(f"{name:32s} {rate:9.1f} {p50:8.1f} {p95:8.1f} {batch:6.1f} {rate / single:16.2f}x")
    print(f"{'predict.py batches of 32 (ref.)':32s} {ref:9.1f} {'':8s} {'':8s} {32:6d} {ref / single:16.2f}x")


if __name__ == "__main__":
    main()
