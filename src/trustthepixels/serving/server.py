"""Run the app under uvicorn until SIGINT/SIGTERM: `serve.py`'s one function."""

from __future__ import annotations

import contextlib
import logging
import os

from trustthepixels.serving.app import create_app
from trustthepixels.serving.refusal import BACKLOG, connection_bound, guarded_protocol, quiet_logs

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

    check_port_free(cfg.host, cfg.port)  # before the model loads: a busy port is one line, not uvicorn's ten
    return_freed_memory()
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
        decode_megapixels=cfg.decode_megapixels,
        api_key=api_key,
    )
    log.info(
        "Open http://%s:%d/ (schema at /openapi.json)%s",
        cfg.host,
        cfg.port,
        "; the API needs its key (Authorization: Bearer ...)" if api_key else "",
    )
    config = uvicorn_config(
        app,
        cfg.host,
        cfg.port,
        max_request_mb=cfg.max_request_mb,
        max_connections=cfg.max_connections,
        header_timeout_s=cfg.header_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
        proxy_headers=True,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
        timeout_graceful_shutdown=cfg.graceful_shutdown_s,
        log_level="info",
    )
    GracefulServer(config).run()


def uvicorn_config(
    app,
    host: str,
    port: int,
    max_request_mb: float,
    max_connections: int = 1000,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 60.0,
    **options,
):
    """uvicorn's settings for the app, on asyncio's loop (whose read size can be set) with the guarded HTTP
    protocol (`refusal.guarded_protocol`): connections bounded below the file limit, idle ones shed first, slow
    headers and bodies cut off, a body's reading stopped past `max_request_mb`; refusals logged once a second."""
    import uvicorn

    bound = connection_bound(max_connections)
    if bound < max_connections:
        log.info("serve.max_connections=%d lowered to %d by the file limit (ulimit -n)", max_connections, bound)
    quiet_logs()
    protocol = guarded_protocol(int(max_request_mb * 1024 * 1024), bound, header_timeout_s, body_timeout_s)
    return uvicorn.Config(app, host=host, port=port, http=protocol, loop="asyncio", backlog=BACKLOG, **options)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, naming it and the fix."""
    import socket

    from trustthepixels.errors import ConfigError

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"host={host}: not an address this machine has ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as err:
            raise ConfigError(
                f"port={port}: {host}:{port} cannot be used ({err.strerror}): another server is probably on it; "
                f"choose another with port={port + 1}, or stop that server"
            ) from None


def return_freed_memory() -> None:
    """Make glibc hand a large freed buffer back to the system at once. Decoding a 24-megapixel image takes about
    230 MB in a thread; with glibc's default (a threshold that rises to 32 MB after the first large free, and an
    arena per thread) freed images stay in the threads' arenas: 2 decodes at a time of 24 MP TIFFs and PNGs from 16
    threads held 1.8 GB, against 0.46 GB with the threshold fixed at 1 MiB (bench/bench_serve.py --hostile)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    M_MMAP_THRESHOLD = -3
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
