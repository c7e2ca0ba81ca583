"""The same detector behind LitServe, for `bench/bench_serve.py --litserve`: what the maintained serving library
gives with the least code of ours (one image per request, LitServe's dynamic batching, its payload limit).

    python bench/litserve_detector.py CHECKPOINT PORT THREADS

Decoding is the project's own (`TorchBackend.preprocess`: the training run's preprocessing and usable-image rule),
so the two servers differ only in the serving around the model.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import litserve as ls
import torch
from fastapi import HTTPException


class DetectorAPI(ls.LitAPI):
    def __init__(self, checkpoint: str, **kwargs):
        super().__init__(**kwargs)
        self.checkpoint = checkpoint

    def setup(self, device: str) -> None:
        from trustthepixels.serving.backends import TorchBackend

        self.backend = TorchBackend(self.checkpoint, device="cpu")

    def decode_request(self, request) -> torch.Tensor:
        with tempfile.NamedTemporaryFile(prefix="upload-") as spooled:
            spooled.write(request["file"].file.read())
            spooled.flush()
            tensor, error = self.backend.preprocess(Path(spooled.name))
        if tensor is None:
            raise HTTPException(422, error)
        return tensor

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, images: torch.Tensor):
        return self.backend.score(images)[0]

    def unbatch(self, output) -> list[float]:
        return [float(p) for p in output]

    def encode_response(self, p_ai: float) -> dict[str, float]:
        return {"p_ai": p_ai}


if __name__ == "__main__":
    checkpoint, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    api = DetectorAPI(checkpoint, max_batch_size=32, batch_timeout=0.005, api_path="/v1/predict")
    server = ls.LitServer(api, accelerator="cpu", max_payload_size=64 * 2**20, timeout=120)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
