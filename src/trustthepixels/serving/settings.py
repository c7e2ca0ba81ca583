"""`serve.py`'s settings as a structured config (configs/serve.yaml says what each does): types checked as the
config composes, the fields' rules before the server starts; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings

POSITIVE = "a number above 0"
COUNT = "a whole number, 1 or more"


@dataclass
class ServeSettings(DetectorCommandSettings):
    ckpt_path: Optional[str] = setting("<run dir>/checkpoints/<best>.ckpt, or null with backend=onnx")
    backend: str = setting("torch (a checkpoint) or onnx (an exported model)", choices=("torch", "onnx"))
    onnx_path: Optional[str] = setting("FILE.onnx (from python export.py ckpt_path=...)")
    host: str = setting("an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    port: int = setting("a TCP port from 0 to 65535", low=0, high=65535)
    threads: Optional[int] = setting("a number of CPU threads, 1 or more, or null", low=1)
    max_upload_mb: float = setting(POSITIVE, above=0)
    max_files: int = setting(COUNT, low=1)
    max_request_mb: float = setting(POSITIVE, above=0)
    max_megapixels: float = setting(POSITIVE, above=0)
    decode_workers: int = setting(COUNT, low=1)
    decode_megapixels: float = setting(POSITIVE, above=0)
    max_connections: int = setting(COUNT, low=1)
    header_timeout_s: float = setting("seconds, above 0", above=0)
    body_timeout_s: float = setting("seconds, above 0", above=0)
    api_key: Optional[str] = setting("a bearer token, or null")
    batch_size: int = setting(COUNT, low=1)
    max_wait_ms: float = setting("milliseconds, 0 or more", low=0)
    max_queue: int = setting(COUNT, low=1)
    graceful_shutdown_s: float = setting("seconds, 0 or more", low=0)
    root_path: str = setting('a URL path prefix such as /detector, or ""')
    forwarded_allow_ips: str = setting("the proxies whose X-Forwarded-* headers to trust, comma-separated, or *")


register_schema(None, ServeSettings, name="serve_schema")
