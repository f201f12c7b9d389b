"""Dynamic batching: images from concurrent requests share one forward pass.

Every image a request submits joins one asyncio queue. A batch runs as soon as it holds
``max_batch_size`` images or its oldest image has waited ``max_wait_ms``, on one inference
thread (off the event loop, so requests keep arriving while it computes). A request's images
may be split across batches; its answer is reassembled in its own order. The queue is bounded:
a request that would overfill it is refused at once (``QueueFull``, an HTTP 503) rather than
left to wait without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

Predict = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) uint8 or float -> (N, classes)


class QueueFull(Exception):
    """More images are waiting than the queue holds; retry after ``retry_after_s``."""

    def __init__(self, pending: int, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"{pending} images are waiting (limit {limit}); retry shortly")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BatchRecord:
    """What one forward pass did: for the metrics."""

    size: int
    inference_s: float
    queue_waits_s: tuple[float, ...]  # per image, from submission to the batch's start
    failed: bool = False  # the model raised: every image of the batch got its error


@dataclass
class _Item:
    image: torch.Tensor
    result: asyncio.Future[torch.Tensor]
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(
        self,
        predict: Predict,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[BatchRecord], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < max_batch_size or max_wait_ms < 0:
            raise ValueError(
                "need max_batch_size >= 1, max_queue >= max_batch_size and max_wait_ms >= 0 "
                f"(got {max_batch_size}, {max_queue}, {max_wait_ms})"
            )
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_depth = on_depth  # called with the number of pending images when it changes
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._pending = 0  # images submitted and not yet answered
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Answer everything already submitted, then stop."""
        while self._pending:
            await asyncio.sleep(self.max_wait_s or 0.001)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, images: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``images`` (N, C, H, W), in their order.

        Raises:
            QueueFull: accepting them would hold more than ``max_queue`` images.
        """
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        count = len(images)
        if self._pending + count > self.max_queue:
            raise QueueFull(self._pending, self.max_queue)
        self._set_pending(self._pending + count)
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        for item in items:
            self._queue.put_nowait(item)
        try:
            return torch.stack(await asyncio.gather(*(item.result for item in items)))
        finally:
            self._set_pending(self._pending - count)

    def _set_pending(self, value: int) -> None:
        self._pending = value
        if self.on_depth is not None:
            self.on_depth(value)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].enqueued + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():  # already waiting: joins even past the deadline
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            started = time.monotonic()
            waits = tuple(started - item.enqueued for item in batch)
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self.predict, torch.stack([item.image for item in batch])
                )
            except Exception as exc:  # every request of the batch gets the model's error
                for item in batch:
                    if not item.result.done():
                        item.result.set_exception(exc)
                if self.on_batch is not None:
                    self.on_batch(BatchRecord(len(batch), time.monotonic() - started, waits, True))
                continue
            inference_s = time.monotonic() - started
            for item, output in zip(batch, outputs, strict=True):
                if not item.result.done():  # a cancelled request (client gone) is skipped
                    item.result.set_result(output)
            if self.on_batch is not None:
                self.on_batch(BatchRecord(len(batch), inference_s, waits))
