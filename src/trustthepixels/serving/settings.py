"""`serve.py`'s settings, declared once as a structured config (each field's default and what it does): types checked as
the config composes, the fields' rules before the server starts; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings

POSITIVE = "a number above 0"
COUNT = "a whole number, 1 or more"


@dataclass
class ServeSettings(DetectorCommandSettings):
    """serve.py's settings, each with its default and what it does."""

    ckpt_path: Optional[str] = setting("<run dir>/checkpoints/<best>.ckpt, or null with backend=onnx", None)
    # torch: the checkpoint (Grad-CAM available); onnx: the model from export.py, in onnxruntime (same scores).
    backend: str = setting("torch (a checkpoint) or onnx (an exported model)", "torch", choices=("torch", "onnx"))
    onnx_path: Optional[str] = setting("FILE.onnx (from python export.py ckpt_path=...)", None)
    # 127.0.0.1: this machine only. 0.0.0.0 to accept connections from others (put a reverse proxy in front).
    host: str = setting("an address to listen on, e.g. 127.0.0.1 or 0.0.0.0", "127.0.0.1")
    port: int = setting("a TCP port from 0 to 65535", 8000, low=0, high=65535)
    # CPU threads for the model (torch or onnxruntime); null: their defaults (all cores).
    threads: Optional[int] = setting("a number of CPU threads, 1 or more, or null", None, low=1)
    # Per file; a request holds at most max_files files and max_request_mb in all (counted while it streams).
    max_upload_mb: float = setting(POSITIVE, 20.0, above=0)
    max_files: int = setting(COUNT, 32, low=1)
    max_request_mb: float = setting(POSITIVE, 64.0, above=0)
    # Images with more pixels are refused before decoding. At most decode_workers files are decoded at once, and
    # at most decode_megapixels of pixels across all requests: peak decoding memory about decode_megapixels x 10
    # bytes (48 MP: about 480 MB).
    max_megapixels: float = setting(POSITIVE, 24.0, above=0)
    decode_workers: int = setting(COUNT, 2, low=1)
    decode_megapixels: float = setting(POSITIVE, 48.0, above=0)
    # Open connections at most (lowered to half the file limit, ulimit -n); past it the oldest idle one is closed.
    max_connections: int = setting(COUNT, 1000, low=1)
    # A request's headers must arrive within header_timeout_s of the connection (or of the previous answer), its
    # body within body_timeout_s of its headers; slower clients are disconnected.
    header_timeout_s: float = setting("seconds, above 0", 10.0, above=0)
    body_timeout_s: float = setting("seconds, above 0", 60.0, above=0)
    # A bearer token the API asks for (Authorization: Bearer <key>), for a deployment without a proxy in front;
    # null: $TTP_API_KEY if set, else none. /v1/health and the page itself stay open.
    api_key: Optional[str] = setting("a bearer token, or null", None)
    # Micro-batching: images arriving within max_wait_ms share one forward pass of up to batch_size images.
    batch_size: int = setting(COUNT, 32, low=1)
    max_wait_ms: float = setting("milliseconds, 0 or more", 5.0, low=0)
    # Images waiting at most; beyond it requests get 503 with Retry-After: 1.
    max_queue: int = setting(COUNT, 256, low=1)
    # On SIGTERM/SIGINT: seconds in-flight requests get to finish.
    graceful_shutdown_s: float = setting("seconds, 0 or more", 10.0, low=0)
    # Behind a reverse proxy under a sub-path (e.g. /detector), and which proxies' X-Forwarded-* to trust.
    root_path: str = setting('a URL path prefix such as /detector, or ""', "")
    forwarded_allow_ips: str = setting(
        "the proxies whose X-Forwarded-* headers to trust, comma-separated, or *", "127.0.0.1"
    )


register_schema(None, ServeSettings, name="serve_schema")
