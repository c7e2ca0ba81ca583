"""`serve.py`: a detector behind an HTTP API and a web page (FastAPI + uvicorn).

Why FastAPI: multipart parsing, the request body limit, validation and the OpenAPI schema come from well-kept
libraries, and its lifespan hooks give the batcher a clean start and a graceful stop; uvicorn drains in-flight
requests on SIGTERM. (LitServe, built on FastAPI, batches too, but its decoding runs in its own workers without
our usable-image rule and without a per-request admission; see the README.)

- `POST /v1/predict` (multipart field `file`, repeatable; `?explain=true` adds a Grad-CAM overlay): one entry per
  file, with `p_ai`, `verdict`, `threshold` and timings, or the reason the file cannot be used. 200 when at least
  one file was scored; 413 or 422 when none was; 503 with Retry-After when the queue cannot take the request.
- `GET /v1/health` (503 when the model is failing or the server stops), `GET /v1/model`; `GET /` the page
  (served from the package: it works offline; `/openapi.json` is the schema, the CDN-based `/docs` is off).

What a hostile client meets, in order, before anything is decoded (serving/refusal.py does the first four): a
bound on open connections, the oldest idle one shed first, so health checks always get in; a deadline for the
headers and one for the body; the bearer token (`api_key`), checked from the headers before a byte of the body
is read; the request body limit (`max_request_mb`), counted while the body streams, declared or chunked
(Starlette's `RequestBodyLimitMiddleware`), with the connection closed after the 413 and reading stopped one
64 KiB read past the limit; at most `max_files` files (checked by the multipart parser); each file's size
(`max_upload_mb`); admission of the whole request to the queue (`MicroBatcher.admit`), or 503.
Then each file's header is read through the decode gate (the accepted formats only), an image with more than
`max_megapixels` is refused, and decoding is admitted by pixels: at most `decode_megapixels` in decoding at once
across all requests (`PixelBudget`), about 10 bytes a pixel at the peak, so peak decoding memory has a stated
bound whatever the mix of images. The project's one "usable image" rule (Pillow's bomb limit, the training run's
`data.min_image_side`) applies as in `predict.py`. Uploads stay in memory or in anonymous files (Starlette's
spooled files), never under a name, so none outlives the process; file names are only echoed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from trustthepixels.config import validated
from trustthepixels.data.ingest.decode import ImageDecodeError, image_size
from trustthepixels.serving.backends import Backend
from trustthepixels.serving.batching import MicroBatcher, ModelFailure, Overloaded, PixelBudget
from trustthepixels.serving.refusal import CloseOnRefusal, RequireKey
from trustthepixels.serving.settings import ServeSettings

log = logging.getLogger(__name__)
STATIC = Path(str(resources.files("trustthepixels.serving") / "static"))
BUSY_FOR_S = 5.0  # /v1/health says "busy" this long after the queue refused a request


def create_app(backend: Backend, /, **settings: Any) -> FastAPI:
    """The app around `backend`; `settings` are serve.py's (`ServeSettings` declares each, its default and what it
    does; the ones left out take their defaults)."""
    s = validated(ServeSettings, settings, "")
    info = backend.info
    max_bytes = int(s.max_upload_mb * 1024 * 1024)
    max_pixels = int(s.max_megapixels * 1e6)
    batcher = MicroBatcher(backend.score, s.batch_size, s.max_wait_ms, s.max_queue)
    decoding = asyncio.Semaphore(s.decode_workers)
    budget = PixelBudget(int(s.decode_megapixels * 1e6))
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        log.info("Serving %s (%s) at threshold %.4f", info.backbone, info.backend, info.rule.value)
        yield
        await batcher.close()  # after uvicorn has let in-flight requests finish: queued images are scored

    app = FastAPI(
        title="TrustThePixels detector",
        summary="P(AI-generated) for images",
        lifespan=lifespan,
        root_path=s.root_path,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: off, so the server works offline
        redoc_url=None,
        form_limits={"max_files": s.max_files, "max_fields": 8},
    )
    # The body limit while it streams (Starlette's), then a refusal ends the connection; the key before either
    # (each added after the one it wraps: the last is outermost).
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=int(s.max_request_mb * 1024 * 1024))
    app.add_middleware(CloseOnRefusal)
    if s.api_key:
        app.add_middleware(RequireKey, api_key=s.api_key)
    app.state.batcher, app.state.settings = batcher, s

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        if batcher.closing:
            status = "shutting down"
        elif batcher.failure:
            status = "unhealthy"
        elif time.monotonic() - batcher.last_refusal < BUSY_FOR_S:
            status = "busy"
        else:
            status = "ok"
        body = {
            "status": status,
            "uptime_s": round(time.time() - started, 1),
            "queued_images": batcher.queue.qsize(),
            "admitted_images": batcher.reserved,
            "batches_running": batcher.running,
            "batches": batcher.batches,
            "images": batcher.images,
            "mean_batch_size": round(batcher.images / batcher.batches, 2) if batcher.batches else None,
            "refused_requests": batcher.refused,
            "failed_batches": batcher.failed_batches,
            "failure": batcher.failure,
        }
        return JSONResponse(body, status_code=503 if status in ("unhealthy", "shutting down") else 200)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        limits = ("max_upload_mb", "max_files", "max_request_mb", "max_megapixels")
        return info.public() | {name: getattr(s, name) for name in limits}

    @app.post("/v1/predict")
    async def predict(
        file: Annotated[list[UploadFile], File(description="one or more images (repeat the field)")],
        explain: Annotated[bool, Query(description="add a Grad-CAM overlay (PNG, base64) per image")] = False,
    ) -> JSONResponse:
        if len(file) > s.max_files:
            return JSONResponse({"detail": f"{len(file)} files: at most {s.max_files} per request"}, status_code=413)
        usable = [u for u in file if u.size is None or u.size <= max_bytes]
        places = len(usable) * (2 if explain and info.explain else 1)  # a Grad-CAM is a second pass of the model
        try:
            admission = batcher.admit(places) if usable else None
        except Overloaded as error:
            return JSONResponse(
                {"detail": f"busy ({error}): retry in a second"}, status_code=503, headers={"Retry-After": "1"}
            )
        try:
            if admission is None:
                results = [_too_large(u) for u in file]
            else:
                with admission:
                    results = await asyncio.gather(*(_one(u, explain, admission) for u in file))
        except ModelFailure:
            detail = "the model failed on this batch; the server's log has the details"
            return JSONResponse({"detail": detail}, status_code=500)
        scored = [r for r in results if "error" not in r]
        too_large = all(r.get("reason") == "too_large" for r in results)
        status = 200 if scored else (413 if too_large else 422)
        body = {
            "results": results,
            "model": info.backbone,
            "threshold": info.rule.value,
            "threshold_source": info.rule.origin,
        }
        return JSONResponse(body, status)

    def _too_large(upload: UploadFile) -> dict[str, Any]:
        size = f"{upload.size / 2**20:.1f} MB; " if upload.size is not None else ""
        reason = f"too large ({size}serve.max_upload_mb={s.max_upload_mb:g})"
        return _failure(upload.filename or "upload", reason, "too_large")

    async def _one(upload: UploadFile, explain: bool, admission) -> dict[str, Any]:
        t0 = time.perf_counter()
        name = upload.filename or "upload"
        if upload.size is not None and upload.size > max_bytes:
            return _too_large(upload)  # held no place in the queue
        tensor, error = await _decode(upload)
        if tensor is None:
            return _failure(name, error.reason, error.code)
        decode_ms = (time.perf_counter() - t0) * 1000
        scored = await batcher.submit(tensor, admission)
        verdict = info.rule.verdict(scored.p_ai, scored.familiarity)  # as predict.py decides
        result: dict[str, Any] = {
            "filename": name,
            "p_ai": scored.p_ai,
            "familiarity": None if math.isnan(scored.familiarity) else scored.familiarity,
            "verdict": verdict,
            "label": verdict,
            "threshold": info.rule.value,
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
                admission.take()  # the place this image's Grad-CAM was admitted with
                png = await batcher.run_in_model_thread(backend.heatmap_png, tensor)
                result["heatmap"] = "data:image/png;base64," + base64.b64encode(png).decode()
            else:
                result["heatmap"] = None
                result["heatmap_note"] = f"no Grad-CAM for the {info.backend} backend of {info.backbone}"
        return result

    async def _decode(upload: UploadFile) -> tuple[Any, ImageDecodeError | None]:
        """The upload's model input, decoded from the spooled upload itself (in memory, or an anonymous file):
        its header first, through the decode gate, to refuse too many pixels; then the decode, admitted by its
        pixels against the budget shared by every request, at most `decode_workers` at once."""
        try:
            width, height = await run_in_threadpool(image_size, upload.file)
        except ImageDecodeError as error:
            return None, error
        if width * height > max_pixels:
            reason = f"too many pixels ({width}x{height}; serve.max_megapixels={s.max_megapixels:g})"
            return None, ImageDecodeError("upload", reason, "too_many_pixels")
        async with decoding, budget.hold(width * height):
            return await run_in_threadpool(backend.preprocess, upload.file)

    return app


def _failure(name: str, reason: str, code: str) -> dict[str, Any]:
    """A file the server cannot score: the reason in words, and its code (`ImageDecodeError.code`, or too_large)."""
    return {"filename": name, "error": reason, "reason": code}
