"""`serve.py`: a detector behind an HTTP API and a web page (FastAPI + uvicorn).

Why FastAPI: multipart parsing, validation and OpenAPI docs (`/docs`) come from well-kept libraries, and its
lifespan hooks give the batcher a clean start and a graceful stop; uvicorn drains in-flight requests on SIGTERM.

- `POST /v1/predict` (multipart field `file`, repeatable; `?explain=true` adds a Grad-CAM overlay): one entry per
  file, with `p_ai`, `label`, `threshold` and timings, or the reason the file cannot be used. 200 when at least
  one file was scored; 413 or 422 when none was; 503 with Retry-After when the queue is full.
- `GET /v1/health`, `GET /v1/model`; `GET /` the page (served from the package: it works offline).

Uploads are checked before decoding: the request's declared size, each file's size, then the project's one
"usable image" rule (Pillow's bomb limit, `data.min_image_side` of the training run) as `predict.py` applies it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from trustthepixels.predictions import Threshold
from trustthepixels.serving.backends import Backend
from trustthepixels.serving.batching import MicroBatcher, Overloaded

log = logging.getLogger(__name__)
STATIC = Path(str(resources.files("trustthepixels.serving") / "static"))
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the files


def failure_kind(reason: str) -> str:
    """A stable machine-readable name for the reasons `decode.py` gives in words."""
    text = reason.lower()
    for kind, words in (
        ("too_large", ("too large",)),
        ("decompression_bomb", ("decompression bomb",)),
        ("too_small", ("too small",)),
        ("empty", ("empty file",)),
        ("not_an_image", ("not an image",)),
        ("truncated", ("truncated", "cannot be decoded")),
    ):
        if any(word in text for word in words):
            return kind
    return "unreadable"


def create_app(
    backend: Backend,
    max_upload_mb: float = 20.0,
    max_files: int = 32,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_queue: int = 256,
    root_path: str = "",
) -> FastAPI:
    info = backend.info
    max_bytes = int(max_upload_mb * 1024 * 1024)
    batcher = MicroBatcher(backend.p_ai, max_batch, max_wait_ms, max_queue)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        log.info("Serving %s (%s) at threshold %.4f", info.backbone, info.backend, info.threshold)
        yield
        await batcher.close()  # after uvicorn has let in-flight requests finish: queued images are scored

    app = FastAPI(
        title="TrustThePixels detector",
        summary="P(AI-generated) for images",
        lifespan=lifespan,
        root_path=root_path,
    )
    app.state.batcher = batcher

    @app.middleware("http")
    async def refuse_oversized_requests(request: Request, call_next):
        declared = request.headers.get("content-length")
        limit = max_bytes * max_files + MULTIPART_OVERHEAD
        if request.method == "POST" and declared and declared.isdigit() and int(declared) > limit:
            return JSONResponse(
                {"detail": f"request of {int(declared) / 2**20:.1f} MB is over the limit of {limit / 2**20:.1f} MB "
                 f"({max_files} files of serve.max_upload_mb={max_upload_mb:g})"},
                status_code=413,
            )  # fmt: skip
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "shutting down" if batcher.closing else "ok",
            "uptime_s": round(time.time() - started, 1),
            "queued_images": batcher.queue.qsize(),
            "batches_running": batcher.running,
            "batches": batcher.batches,
            "images": batcher.images,
            "mean_batch_size": round(batcher.images / batcher.batches, 2) if batcher.batches else None,
        }

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return info.public() | {"max_upload_mb": max_upload_mb, "max_files": max_files}

    @app.post("/v1/predict")
    async def predict(
        file: Annotated[list[UploadFile], File(description="one or more images (repeat the field)")],
        explain: Annotated[bool, Query(description="add a Grad-CAM overlay (PNG, base64) per image")] = False,
    ) -> JSONResponse:
        if len(file) > max_files:
            return JSONResponse({"detail": f"{len(file)} files: at most {max_files} per request"}, status_code=413)
        try:
            results = await asyncio.gather(*(_one(upload, explain) for upload in file))
        except Overloaded as error:
            return JSONResponse(
                {"detail": f"busy ({error}): retry in a second"}, status_code=503, headers={"Retry-After": "1"}
            )
        scored = [r for r in results if "error" not in r]
        too_large = all(r.get("reason") == "too_large" for r in results)
        status = 200 if scored else (413 if too_large else 422)
        body = {
            "results": results,
            "model": info.backbone,
            "threshold": info.threshold,
            "threshold_source": info.threshold_source,
        }
        return JSONResponse(body, status)

    async def _one(upload: UploadFile, explain: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        name = upload.filename or "upload"
        size = upload.size if upload.size is not None else None
        if size is not None and size > max_bytes:
            return _failure(name, f"too large ({size / 2**20:.1f} MB; serve.max_upload_mb={max_upload_mb:g})")
        tensor, error = await run_in_threadpool(_decode, upload, max_bytes)
        if tensor is None:
            return _failure(name, error)
        decode_ms = (time.perf_counter() - t0) * 1000
        scored = await batcher.submit(tensor)
        verdict = Threshold(info.threshold, info.threshold_source).verdict(scored.p_ai)  # as predict.py decides
        result: dict[str, Any] = {
            "filename": name,
            "p_ai": scored.p_ai,
            "verdict": verdict,
            "label": verdict,
            "threshold": info.threshold,
            "timing_ms": {
                "decode": round(decode_ms, 2),
                "queue": round(scored.queue_ms, 2),
                "model": round(scored.model_ms, 2),
                "total": round((time.perf_counter() - t0) * 1000, 2),
            },
            "batch_size": scored.batch_size,
        }
        if explain:
            if info.explain:
                png = await batcher.run_in_model_thread(backend.heatmap_png, tensor)
                result["heatmap"] = "data:image/png;base64," + base64.b64encode(png).decode()
            else:
                result["heatmap"] = None
                result["heatmap_note"] = f"no Grad-CAM for the {info.backend} backend of {info.backbone}"
        return result

    def _decode(upload: UploadFile, limit: int):
        """Spool the upload to a file (never more than `limit` bytes) and decode it as predict.py does."""
        with tempfile.NamedTemporaryFile(suffix=Path(upload.filename or "").suffix) as spooled:
            upload.file.seek(0)
            written = 0
            while chunk := upload.file.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    return None, f"too large (over serve.max_upload_mb={max_upload_mb:g})"
                spooled.write(chunk)
            spooled.flush()
            return backend.preprocess(Path(spooled.name))

    return app


def _failure(name: str, reason: str) -> dict[str, Any]:
    return {"filename": name, "error": reason, "reason": failure_kind(reason)}


def serve(cfg) -> None:
    """Load the backend and run uvicorn until SIGINT/SIGTERM (in-flight requests finish, queued images too)."""
    import uvicorn

    from trustthepixels.serving.backends import load_backend

    backend = load_backend(cfg)
    app = create_app(
        backend,
        max_upload_mb=cfg.max_upload_mb,
        max_files=cfg.max_files,
        max_batch=cfg.batch_size,
        max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue,
        root_path=cfg.root_path or "",
    )
    log.info("Open http://%s:%d/ (API docs at /docs)", cfg.host, cfg.port)
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        proxy_headers=True,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
        timeout_graceful_shutdown=cfg.graceful_shutdown_s,
        log_level="info",
    )
