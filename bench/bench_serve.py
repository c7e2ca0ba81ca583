"""Benchmark: serve.py under concurrent clients, with and without micro-batching, against predict.py's batches.

    python bench/bench_serve.py [--ckpt PATH] [--clients 16] [--requests 192] [--threads 2]

The server is `python serve.py` in its own process (as a user runs it); the clients are one asyncio process
posting one real image per request (../shared/data/real-vs-ai). Reported per setting: images/s and the p50 / p95
latency a client sees. Settings: batching on (batch_size=32, max_wait_ms=5) and off (batch_size=1), both with
--clients concurrent clients, and one client sending one request at a time. The reference is predict.py's own
path (InferenceDataset + predict_logits, batches of 32) on the same images in this process: no HTTP at all.
Without --ckpt a real EfficientNet-Lite0 checkpoint is made first (shared ImageNet weights, 2 training batches).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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
    def __init__(self, ckpt: Path, threads: int, batch_size: int, max_wait_ms: float):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "serve.py"), f"ckpt_path={ckpt}", f"port={self.port}", "device=cpu",
             f"threads={threads}",
             f"batch_size={batch_size}", f"max_wait_ms={max_wait_ms}", "max_queue=4096",
             f"hydra.run.dir={tempfile.mkdtemp()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve.py did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


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
        before = (await http.get(f"{url}/v1/health")).json()
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
        after = (await http.get(f"{url}/v1/health")).json()
    batches = after["batches"] - before["batches"]
    return requests / elapsed, latencies, (after["images"] - before["images"]) / max(batches, 1)


async def client_warmup(http: httpx.AsyncClient, url: str, body: bytes) -> None:
    for _ in range(3):
        (await http.post(f"{url}/v1/predict", files=[("file", ("warm.jpg", body))])).raise_for_status()


def reference(ckpt: Path, paths: list[Path], threads: int) -> float:
    """predict.py's path on the same images: decode + preprocess + batched forward, no HTTP."""
    from trustthepixels.evaluation.inference import InferenceDataset, predict_logits
    from trustthepixels.model.checkpoint import load_detector

    torch.set_num_threads(threads)
    detector = load_detector(ckpt)
    dataset = InferenceDataset(paths, detector.data_config, detector.min_image_side)
    predict_logits(detector.model, dataset, 32, 0)  # warm-up
    start = time.perf_counter()
    predict_logits(detector.model, dataset, 32, 0)
    return len(paths) / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (and the reference)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    ckpt = args.ckpt or make_checkpoint(tmp)
    paths = sorted((SHARED / "data" / "real-vs-ai" / "Real").iterdir())[: args.images // 2]
    paths += sorted((SHARED / "data" / "real-vs-ai" / "AI").iterdir())[: args.images - len(paths)]
    images = [p.read_bytes() for p in paths]

    rows = []
    for name, batch_size, wait, clients in (
        (f"batching, {args.clients} clients", 32, 5, args.clients),
        (f"no batching, {args.clients} clients", 1, 0, args.clients),
        ("one request at a time", 32, 5, 1),
    ):
        server = Server(ckpt, args.threads, batch_size, wait)
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
