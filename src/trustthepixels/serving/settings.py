"""`serve.py`'s settings as a structured config (configs/serve.yaml says what each does): types checked as the
config composes, the rules below before the server starts; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

from trustthepixels.config import refusal, register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings, check_detector_command

POSITIVE = "a number above 0"
COUNT = "a whole number, 1 or more"


@dataclass
class ServeSettings(DetectorCommandSettings):
    ckpt_path: Optional[str] = setting("<run dir>/checkpoints/<best>.ckpt, or null with backend=onnx")  # noqa: UP045
    backend: str = setting("torch (a checkpoint) or onnx (an exported model)")
    onnx_path: Optional[str] = setting("FILE.onnx (from python export.py ckpt_path=...)")  # noqa: UP045
    host: str = setting("an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    port: int = setting("a TCP port from 0 to 65535")
    threads: Optional[int] = setting("a number of CPU threads, 1 or more, or null")  # noqa: UP045
    max_upload_mb: float = setting(POSITIVE)
    max_files: int = setting(COUNT)
    max_request_mb: float = setting(POSITIVE)
    max_megapixels: float = setting(POSITIVE)
    decode_workers: int = setting(COUNT)
    api_key: Optional[str] = setting("a bearer token, or null")  # noqa: UP045
    batch_size: int = setting(COUNT)
    max_wait_ms: float = setting("milliseconds, 0 or more")
    max_queue: int = setting(COUNT)
    graceful_shutdown_s: float = setting("seconds, 0 or more")
    root_path: str = setting('a URL path prefix such as /detector, or ""')
    forwarded_allow_ips: str = setting("the proxies whose X-Forwarded-* headers to trust, comma-separated, or *")


refuse = partial(refusal, ServeSettings)  # refuse(name, value): one line, ending in what it takes


def check_serve_settings(s: ServeSettings) -> None:
    """The rules the types cannot say."""
    check_detector_command(s)
    if s.backend not in ("torch", "onnx"):
        raise refuse("backend", s.backend)
    if not 0 <= s.port <= 65535:
        raise refuse("port", s.port)
    for name in ("max_upload_mb", "max_request_mb", "max_megapixels"):
        if not getattr(s, name) > 0:
            raise refuse(name, getattr(s, name))
    for name in ("max_files", "decode_workers", "batch_size", "max_queue", "threads"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise refuse(name, getattr(s, name))
    for name in ("max_wait_ms", "graceful_shutdown_s"):
        if getattr(s, name) < 0:
            raise refuse(name, getattr(s, name))


register_schema(None, ServeSettings, check_serve_settings, name="serve_schema")
