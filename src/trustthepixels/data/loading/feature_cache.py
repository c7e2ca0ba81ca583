"""Backbone features computed once per (backbone weights, preprocessing, image) and reused.

With a frozen backbone only the head learns, so every epoch, run and sweep trial would push the same images
through the same network again. Here they go through once: a linear probe (the UnivFD recipe: frozen
features + a linear classifier) or a sweep over head hyperparameters then trains in seconds. Features use
the evaluation transform (no augmentation), the usual linear-probe protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.data.loading.dataset import ImageFileDataset

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def feature_key(model: torch.nn.Module, data_config: dict[str, Any]) -> str:
    """Identifies the features: every backbone weight except the classifier's, and the preprocessing."""
    digest = hashlib.sha256(json.dumps(data_config, sort_keys=True, default=str).encode())
    head = {id(p) for p in model.head.parameters()}
    for name, tensor in model.backbone.state_dict(keep_vars=True).items():
        if id(tensor) not in head:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def cached_features(
    model: torch.nn.Module,
    dataset: ImageFileDataset,
    sha256: Sequence[str],
    cache_dir: Path,
    key: str,
    batch_size: int = 64,
    num_workers: int = 0,
) -> torch.Tensor:
    """Features (N, D) of `dataset`'s images; only images missing from the cache go through the backbone."""
    index_path = Path(cache_dir) / f"features-{key}.json"
    with FileLock(index_path.with_suffix(".lock")):
        rows: dict[str, int] = {}
        stored = np.zeros((0, 0), dtype=np.float32)
        try:
            index = json.loads(index_path.read_text())
            if index["version"] == CACHE_VERSION:
                stored = np.load(index_path.parent / index["data"])
                rows = index["rows"] if len(stored) == len(index["rows"]) else {}
        except (OSError, ValueError, KeyError):
            pass
        missing = sorted({i for i, sha in enumerate(sha256) if sha not in rows}, key=lambda i: sha256[i])
        if missing:
            was_training = model.training
            model.eval()
            device = next(model.parameters()).device
            loader = DataLoader(
                torch.utils.data.Subset(dataset, missing), batch_size=batch_size, num_workers=num_workers
            )
            new = torch.cat([model.features(batch[0].to(device)).float().cpu() for batch in loader]).numpy()
            model.train(was_training)
            stored = new if not rows else np.concatenate([stored, new])
            for offset, i in enumerate(missing):
                rows.setdefault(sha256[i], len(stored) - len(new) + offset)
            data_name = f"features-{key}-{secrets.token_hex(4)}.npy"
            np.save(index_path.parent / data_name, stored)
            atomic_write_text(index_path, json.dumps({"version": CACHE_VERSION, "data": data_name, "rows": rows}))
            for stale in index_path.parent.glob(f"features-{key}-*.npy"):
                if stale.name != data_name:
                    os.unlink(stale)
            log.info("Feature cache %s: %d images computed, %d reused", key, len(missing), len(sha256) - len(missing))
        return torch.from_numpy(stored[[rows[sha] for sha in sha256]])
