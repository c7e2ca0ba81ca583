"""Run the app under uvicorn until SIGINT/SIGTERM: `serve.py`'s one function."""

from __future__ import annotations

import contextlib
import logging
import os

from trustthepixels.config import to_plain
from trustthepixels.serving.app import create_app
from trustthepixels.serving.refusal import BACKLOG, connection_bound, guarded_protocol, quiet_logs
from trustthepixels.serving.settings import ServeSettings

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
    app = create_app(backend, **to_plain(cfg) | {"api_key": cfg.api_key or os.environ.get(API_KEY_ENV) or None})
    settings = app.state.settings  # validated once, by create_app
    needs_key = "; the API needs its key (Authorization: Bearer ...)" if settings.api_key else ""
    log.info("Open http://%s:%d/ (schema at /openapi.json)%s", settings.host, settings.port, needs_key)
    config = uvicorn_config(
        app,
        settings,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        log_level="info",
    )
    GracefulServer(config).run()


def uvicorn_config(app, settings: ServeSettings, **options):
    """uvicorn's settings for the app, on asyncio's loop (whose read size can be set) with the guarded HTTP
    protocol (`refusal.guarded_protocol`): connections bounded below the file limit, idle ones shed first, slow
    headers and bodies cut off, a body's reading stopped past `max_request_mb`; refusals logged once a second."""
    import uvicorn

    s = settings
    bound = connection_bound(s.max_connections)
    if bound < s.max_connections:
        log.info("serve.max_connections=%d lowered to %d by the file limit (ulimit -n)", s.max_connections, bound)
    quiet_logs()
    protocol = guarded_protocol(int(s.max_request_mb * 1024 * 1024), bound, s.header_timeout_s, s.body_timeout_s)
    return uvicorn.Config(app, host=s.host, port=s.port, http=protocol, loop="asyncio", backlog=BACKLOG, **options)


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
    """Make glibc hand a large freed buffer back to the system at once: with its default (a threshold that rises to
    32 MB after the first large free, and an arena per thread) decoded images stay in the decoding threads' arenas
    (docs/serving.md, measured with bench/bench_serve.py --hostile)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    M_MMAP_THRESHOLD = -3
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
