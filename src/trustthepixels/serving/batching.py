"""Micro-batching: images from concurrent requests that arrive within a few milliseconds share one forward pass.

One worker task takes the first waiting image, gathers whatever else arrives within `max_wait_ms` (up to
`max_batch`), and runs the batch in a single dedicated thread, so the event loop keeps accepting uploads and the
model is never called from two threads at once. The queue is bounded, and a request is admitted whole or refused
whole before any of its images is decoded (`admit`): when its images do not all fit, `Overloaded` is raised at
once (the app answers 503 with Retry-After), so no decoding or model work is spent on a request that then fails.
A batch that fails (in the model, or in stacking its images) fails its waiting requests with `ModelFailure` and
marks the batcher unhealthy until a batch succeeds again; the worker itself never dies. `close` stops admitting
and finishes what is already admitted (a graceful shutdown loses nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full: the client should retry later."""


class ModelFailure(RuntimeError):
    """The batch an image was in could not be scored."""


class Admission:
    """Queue places held for one request's images, from before they are decoded until each is queued (or its
    decoding fails): what makes a request all-or-nothing."""

    def __init__(self, batcher: MicroBatcher, places: int):
        self.batcher, self.places = batcher, places

    def take(self) -> None:
        if self.places <= 0:
            raise RuntimeError("more images than this request was admitted with")
        self.places -= 1
        self.batcher.reserved -= 1

    def release(self) -> None:
        self.batcher.reserved -= self.places
        self.places = 0

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class PixelBudget:
    """Decoding admitted by pixels, across every request: a decode waits until its image's pixels fit in what
    the decodes under way leave of `pixels`. An image larger than the whole budget waits until nothing else is
    decoding, so it still decodes, alone. Peak decoding memory is then about `pixels` x 10 bytes, whatever the
    mix of image sizes (a 24-megapixel TIFF or PNG peaks at about 230 MB in `load_pixels`)."""

    def __init__(self, pixels: int):
        self.pixels = max(1, int(pixels))
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        need = min(max(0, int(pixels)), self.pixels)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + need <= self.pixels)
            self.used += need
        try:
            yield
        finally:
            async with self._changed:
                self.used -= need
                self._changed.notify_all()


@dataclass
class ScoredImage:
    p_ai: float
    familiarity: float  # NaN: the model has no familiarity score
    batch_size: int  # how many images shared the forward pass
    queue_ms: float  # waiting for the batch to form and the previous one to finish
    model_ms: float  # the forward pass of the whole batch


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]],  # images -> (P(AI), familiarity)
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
    ):
        self.run_batch = run_batch
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, int(max_queue)))
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.closing = False
        self.batches = 0
        self.images = 0
        self.running = 0  # batches in the model thread right now
        self.reserved = 0  # queue places admitted requests hold for images still being decoded
        self.refused = 0  # requests refused because the queue was full
        self.last_refusal = -1e9  # time.monotonic() of the latest refusal
        self.failed_batches = 0
        self.failure: str | None = None  # the kind of error the latest batch failed with; None once one succeeds
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    def admit(self, places: int) -> Admission:
        """Hold `places` queue places for one request, or refuse it whole (before any decoding)."""
        if self.closing:
            raise Overloaded("shutting down")
        waiting = self.queue.qsize() + self.reserved
        if waiting + places > self.queue.maxsize:
            self.refused += 1
            self.last_refusal = time.monotonic()
            raise Overloaded(f"{waiting} of {self.queue.maxsize} queue places taken, {places} needed")
        self.reserved += places
        return Admission(self, places)

    async def submit(self, image: torch.Tensor, admission: Admission) -> ScoredImage:
        """Score one image of an admitted request (its place is already held, so the queue has room)."""
        admission.take()
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, future, time.perf_counter()))
        return await future

    async def run_in_model_thread(self, fn: Callable, *args):
        """Anything else that uses the model (Grad-CAM), in the model's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), remaining)
                    except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
                        break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._score(batch)
            if stop:
                return

    async def _score(self, batch: list) -> None:
        started = time.perf_counter()
        self.running += 1
        try:
            images = torch.stack([image for image, _, _ in batch])
            scores = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, images)
            probabilities, familiarity = scores
            if len(probabilities) != len(batch) or len(familiarity) != len(batch):
                raise ValueError(f"the model returned {len(probabilities)} scores for {len(batch)} images")
        except Exception as error:  # every waiting request learns what happened; the worker goes on
            self.failed_batches += 1
            # The error's text stays in the log: it can hold paths and internals no client should read.
            log.exception("A batch of %d images failed", len(batch))
            self.failure = type(error).__name__
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(ModelFailure(self.failure))
            return
        finally:
            self.running -= 1
        model_ms = (time.perf_counter() - started) * 1000
        self.batches += 1
        self.images += len(batch)
        self.failure = None
        for (_, future, queued), p, f in zip(batch, probabilities, familiarity, strict=True):
            if not future.done():  # the client may have gone
                future.set_result(ScoredImage(float(p), float(f), len(batch), (started - queued) * 1000, model_ms))

    async def close(self) -> None:
        """Refuse new images, score the queued ones, stop the worker and its thread."""
        self.closing = True
        while self.reserved > 0:  # admitted requests still decoding: their images are queued next
            await asyncio.sleep(0.01)
        if self._worker is not None and not self._worker.done():
            await self.queue.put(None)
            await self._worker
        self.executor.shutdown(wait=True)
