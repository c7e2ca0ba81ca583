"""Serving a detector: backends (PyTorch, ONNX), micro-batching, and the FastAPI app with its web page."""
