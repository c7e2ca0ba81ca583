"""Run the app under uvicorn until SIGINT/SIGTERM: `serve.py`'s one function."""

from __future__ import annotations

import contextlib
import logging
import os

from trustthepixels.serving.app import create_app
from trustthepixels.serving.refusal import body_capped_protocol

log = logging.getLogger(__name__)
API_KEY_ENV = "TTP_API_KEY"  # the bearer token, when serve.api_key is not set


def serve(cfg) -> None:
    """Load the backend and run uvicorn until SIGINT/SIGTERM (in-flight requests finish, queued images too), then
    exit with status 0: a graceful stop is a success."""
    import uvicorn

    from trustthepixels.serving.backends import load_backend

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                # uvicorn re-raises the signal it stopped on once the server is down (exit status 128 + N); the
                # stop it asked for went well, so forget it.
                getattr(self, "_captured_signals", []).clear()

    backend = load_backend(cfg)
    api_key = cfg.get("api_key") or os.environ.get(API_KEY_ENV) or None
    app = create_app(
        backend,
        max_upload_mb=cfg.max_upload_mb,
        max_files=cfg.max_files,
        batch_size=cfg.batch_size,
        max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue,
        root_path=cfg.root_path or "",
        max_request_mb=cfg.max_request_mb,
        max_megapixels=cfg.max_megapixels,
        decode_workers=cfg.decode_workers,
        api_key=api_key,
    )
    log.info("Open http://%s:%d/ (schema at /openapi.json)%s", cfg.host, cfg.port,
             "; the API needs its key (Authorization: Bearer ...)" if api_key else "")  # fmt: skip
    config = uvicorn_config(
        app,
        cfg.host,
        cfg.port,
        max_request_mb=cfg.max_request_mb,
        proxy_headers=True,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
        timeout_graceful_shutdown=cfg.graceful_shutdown_s,
        log_level="info",
    )
    GracefulServer(config).run()


def uvicorn_config(app, host: str, port: int, max_request_mb: float, **options):
    """uvicorn's settings for the app: its HTTP protocol stops reading a body past `max_request_mb` (on asyncio's
    loop, whose read size can be set; see `refusal.body_capped_protocol`)."""
    import uvicorn

    protocol = body_capped_protocol(int(max_request_mb * 1024 * 1024))
    return uvicorn.Config(app, host=host, port=port, http=protocol, loop="asyncio", **options)
